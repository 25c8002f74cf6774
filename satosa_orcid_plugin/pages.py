"""HTML pages a person sees, rendered with Jinja2 (autoescaped, no external assets)."""
from __future__ import annotations

import threading
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

_env_cache: dict[str | None, Environment] = {}
# Compiling templates in several threads at once trips a CPython 3.11 bug ("SystemError: AST
# constructor recursion depth mismatch", python/cpython#106905); gunicorn threads would hit it
# on the first requests. Compile under a lock; rendering a compiled template needs none.
_compile_lock = threading.Lock()


def environment(override_dir: str | None = None) -> Environment:
    """Templates from the deployment's directory first (if given), then the package's."""
    env = _env_cache.get(override_dir)
    if env is None:  # (called under _compile_lock from template())
        loaders = [PackageLoader("satosa_orcid_plugin", "templates")]
        if override_dir:
            loaders.insert(0, FileSystemLoader(str(Path(override_dir))))
        env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(default=True))
        _env_cache[override_dir] = env
    return env


def template(name: str, override_dir: str | None = None):
    with _compile_lock:
        return environment(override_dir).get_template(name)


def render(name: str, override_dir: str | None = None, **context: object) -> str:
    return template(name, override_dir).render(**context)
