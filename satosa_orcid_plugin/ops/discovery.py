"""Find the plugin's configuration in a ``proxy_conf.yaml`` or a micro-service YAML.

Used by the CLI (``--config PATH``), the worker, ``check-config`` and the WSGI entry (the URL
prefixes of the plugin's endpoints); the proxy itself receives the ``config:`` block from
SATOSA directly. Files are read with SATOSA's own YAML loader (``satosa/yaml.py``), so
``!ENV`` and ``!ENVFILE`` mean what they mean to the proxy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import PluginConfig, parse_config
from ..errors import ConfigError

PLUGIN_MODULES = ("satosa_orcid_plugin.OrcidConnect", "satosa_orcid_plugin.microservice.OrcidConnect")


@dataclass(frozen=True)
class PluginEntry:
    name: str
    raw: dict[str, Any]
    source: str  # the file (and key path) it came from


ENV_TAGS = ("!ENV", "!ENVFILE")
#: keys of a proxy_conf.yaml whose string values name further YAML files (relative to the cwd)
FILE_KEYS = ("INTERNAL_ATTRIBUTES", "BACKEND_MODULES", "FRONTEND_MODULES", "MICRO_SERVICES")


def env_problems(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    r"""One line per ``!ENV``/``!ENVFILE`` of ``text`` that cannot be resolved, found without
    constructing anything (comments are not looked at, unlike a text search).

    >>> env_problems("a: !ENV SATOSA_ORCID_SURELY_UNSET\n# b: !ENV IN_A_COMMENT\n", {})
    ['!ENV SATOSA_ORCID_SURELY_UNSET: the environment variable SATOSA_ORCID_SURELY_UNSET is not set']
    """
    import yaml

    environ = os.environ if environ is None else environ
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []  # the loader itself names the syntax error
    out: list[str] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack.extend(v for pair in reversed(node.value) for v in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.ScalarNode) and node.tag in ENV_TAGS:
            name = str(node.value)
            if name not in environ:
                out.append(f"{node.tag} {name}: the environment variable {name} is not set")
            elif node.tag == "!ENVFILE" and not os.path.isfile(environ[name]):
                out.append(f"!ENVFILE {name}: the file {environ[name]} it names cannot be read")
    return out


def referenced_files(text: str) -> list[str]:
    """The YAML files a proxy_conf.yaml names under :data:`FILE_KEYS` (plain strings)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    out = []
    for key, value in root.value:
        if getattr(key, "value", None) not in FILE_KEYS:
            continue
        items = value.value if isinstance(value, yaml.SequenceNode) else [value]
        out += [str(i.value) for i in items if isinstance(i, yaml.ScalarNode) and i.tag == "tag:yaml.org,2002:str"]
    return out


def proxy_env_problems(path: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """:func:`env_problems` of a proxy_conf.yaml and every file it names, each line prefixed
    with the file (relative paths resolve from the working directory, as SATOSA does)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = [f"{path.name}: {p}" for p in env_problems(text, environ)]
    for ref in referenced_files(text):
        ref_path = Path(ref)
        try:
            ref_text = ref_path.read_text(encoding="utf-8")
        except OSError:
            continue  # SATOSA names a missing file itself
        out += [f"{ref}: {p}" for p in env_problems(ref_text, environ)]
    return out


def load_yaml(path: Path) -> Any:
    from satosa.yaml import YAMLError, load as satosa_yaml_load  # !ENV / !ENVFILE as SATOSA reads them

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from None
    unresolved = env_problems(text)
    if unresolved:
        raise ConfigError(str(path), "; ".join(unresolved))
    try:
        return satosa_yaml_load(text)
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(str(path), f"cannot be read as YAML: {first}") from None


def find_plugin_entries(path: str | os.PathLike[str]) -> list[PluginEntry]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such file")
    doc = load_yaml(path)
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "must be a YAML mapping")
    if "MICRO_SERVICES" in doc:
        entries = []
        for i, item in enumerate(doc.get("MICRO_SERVICES") or []):
            where = f"{path}: MICRO_SERVICES[{i}]"
            if isinstance(item, str):
                item_path = Path(item)
                if not item_path.is_absolute():
                    # SATOSA opens these relative to its working directory; try that, then the file's folder.
                    item_path = item_path if item_path.exists() else path.parent / item
                where = str(item_path)
                if not item_path.is_file():
                    raise ConfigError(f"{path}: MICRO_SERVICES[{i}]", f"file {item} not found")
                item = load_yaml(item_path)
            if isinstance(item, dict) and item.get("module") in PLUGIN_MODULES:
                entries.append(PluginEntry(str(item.get("name") or "orcid"), item.get("config") or {}, where))
        if not entries:
            for i, item in enumerate(doc.get("MICRO_SERVICES") or []):
                module = item.get("module") if isinstance(item, dict) else None
                if isinstance(item, str):
                    try:
                        loaded = load_yaml(Path(item) if Path(item).exists() else path.parent / item)
                    except ConfigError:
                        continue
                    module = loaded.get("module") if isinstance(loaded, dict) else None
                if isinstance(module, str) and "orcid" in module.lower() and "RequestHint" not in module:
                    raise ConfigError(f"{path}: MICRO_SERVICES[{i}].module",
                                      f"{module!r} is not the plugin's class (satosa_orcid_plugin.OrcidConnect)")
            raise ConfigError(f"{path}: MICRO_SERVICES", "has no satosa_orcid_plugin.OrcidConnect entry")
        return entries
    if doc.get("module") in PLUGIN_MODULES:
        return [PluginEntry(str(doc.get("name") or "orcid"), doc.get("config") or {}, str(path))]
    raise ConfigError(str(path), "is neither a proxy_conf.yaml with MICRO_SERVICES nor an OrcidConnect micro-service YAML")


def load_plugin_config(path: str | os.PathLike[str]) -> PluginConfig:
    entry = find_plugin_entries(path)[0]
    return parse_config(entry.raw)


def plugin_names(satosa_config: Mapping[str, Any]) -> list[str]:
    """Names of the OrcidConnect entries of a loaded SATOSA config (their URL prefixes)."""
    names = []
    for entry in satosa_config.get("MICRO_SERVICES") or []:
        if isinstance(entry, Mapping) and entry.get("module") in PLUGIN_MODULES:
            names.append(str(entry.get("name") or "orcid"))
    return names or ["orcid"]


__all__ = ["PLUGIN_MODULES", "PluginEntry", "env_problems", "proxy_env_problems", "referenced_files", "load_yaml", "find_plugin_entries", "load_plugin_config", "plugin_names"]
