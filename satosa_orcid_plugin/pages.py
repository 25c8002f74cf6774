"""HTML pages a person sees, rendered with Jinja2 (autoescaped, no external assets)."""
from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

_env_cache: dict[str | None, Environment] = {}


def environment(override_dir: str | None = None) -> Environment:
    """Templates from the deployment's directory first (if given), then the package's."""
    env = _env_cache.get(override_dir)
    if env is None:
        loaders = [PackageLoader("satosa_orcid_plugin", "templates")]
        if override_dir:
            loaders.insert(0, FileSystemLoader(str(Path(override_dir))))
        env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(default=True))
        _env_cache[override_dir] = env
    return env


def render(name: str, override_dir: str | None = None, **context: object) -> str:
    return environment(override_dir).get_template(name).render(**context)
