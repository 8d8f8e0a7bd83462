"""Where kits and plugins are downloaded from: the package source settings.

Three settings, each a URL (``http``, ``https``, ``file``) or an existing path:

| setting | config.json | ``[tool.flow]`` | environment |
| --- | --- | --- | --- |
| the index (replaces PyPI) | ``indexUrl`` | ``index-url`` | ``FLOW_INDEX_URL`` |
| more indexes | ``extraIndexUrls`` | ``extra-index-urls`` | ``FLOW_EXTRA_INDEX_URL`` |
| directories or pages of files | ``findLinks`` | ``find-links`` | ``FLOW_FIND_LINKS`` |

For each setting the first that is set wins: the environment variable, the project's
``[tool.flow]`` (in project scope), the global ``config.json``. Unset everywhere, the installer's
own default applies (PyPI, or your uv/pip configuration). Relative paths are taken from the
folder of the file that holds them (the project root, ``FLOW_HOME``) or, in an environment
variable, from the working directory. The lists in environment variables are separated by
whitespace, as pip's and uv's are.

``flow config`` shows the values with their origin; ``flow buildkit add``, ``flow plugin add``
and ``flow doctor --fix`` pass them to the installer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore._base.errors import ConfigError
from flowcore.config.schema import KINDS, SOURCE_SETTINGS

if TYPE_CHECKING:
    from flowcore.config.view import ConfigView

#: setting -> (config.json key, [tool.flow] key, environment variable, is a list), from the
#: schema (flowcore.config.schema), where the keys are declared.
SETTINGS: dict[str, tuple[str, str, str, bool]] = {s[0]: s for s in SOURCE_SETTINGS}
GLOBAL_KEYS = {v[0]: v[3] for v in SETTINGS.values()}
PROJECT_KEYS = {v[1]: v[3] for v in SETTINGS.values()}
DEFAULT_ORIGIN = "default"
INDEX_DEFAULT_ORIGIN = "default (PyPI, or your uv/pip configuration)"
_SCHEMES = ("http", "https", "file")


def shape_problem(value: Any, is_list: bool) -> str | None:
    """What is wrong with the *type* of a setting (the schema's kinds); None when it is fine."""
    kind = KINDS["locations" if is_list else "location or null"]
    return None if kind.check is None or kind.check(value) else kind.expected


def check_location(text: str, base: Path) -> str:
    """A URL as given, or a path made absolute against ``base``; ValueError says why not."""
    from urllib.parse import urlsplit

    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in _SCHEMES:
            raise ValueError(f"'{text}' is not an http, https or file URL")
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"'{text}' has no host")
        if any(c.isspace() for c in text):
            raise ValueError(f"'{text}' contains whitespace")
        return text
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise ValueError(f"'{text}' is neither a URL nor an existing path ({path} does not exist)")
    return str(path.absolute())


def redact(url: str) -> str:
    """``url`` with the password (a token) of its user info replaced by ``****``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    userinfo, host = netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    shown = f"{user}:****" if ":" in userinfo else "****"
    return f"{scheme}://{shown}@{host}{sep}{tail}"


@dataclass(slots=True)
class Setting:
    """One setting's effective value and where it came from (a file, a variable, the default);
    ``base``: where relative paths are taken from."""

    name: str
    value: Any
    origin: str
    base: Path | None = None
    fix: str = ""


@dataclass(slots=True)
class PackageSource:
    """The effective package source of one run."""

    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)


def _setting(config: ConfigView, name: str) -> Setting:
    json_key, toml_key, var, is_list = SETTINGS[name]
    raw = os.environ.get(var, "")
    if raw.strip():
        return Setting(name, raw.split() if is_list else raw.strip(), f"environment ({var})",
                       Path.cwd(), f"Fix or unset {var}")
    # A project's own package source only in a trusted project (flowcore.config.trust): an untrusted
    # repository must not choose what `flow plugin add NAME` installs.
    project = config.project if config.scope == "project" and config.trusted else None
    if project is not None and project.data.get(toml_key) is not None:
        return Setting(name, project.data[toml_key], str(project.file), project.root,
                       f"Fix '{toml_key}' in [tool.flow] of {project.file}")
    data = config.global_config.data
    if data.get(json_key) is not None and data.get(json_key) != []:
        return Setting(name, data[json_key], str(config.global_config.path),
                       config.global_config.path.parent,
                       f"Change it with: flow config set {json_key} VALUE")
    return Setting(name, [] if is_list else None, DEFAULT_ORIGIN if is_list else INDEX_DEFAULT_ORIGIN)


def describe(config: ConfigView) -> dict[str, dict[str, Any]]:
    """``{setting: {"value", "from"}}`` for ``flow config`` (passwords in URLs hidden)."""
    out: dict[str, dict[str, Any]] = {}
    for name in SETTINGS:
        s = _setting(config, name)
        value = [redact(v) for v in s.value] if isinstance(s.value, list) else (
            redact(s.value) if s.value else None)
        out[name] = {"value": value, "from": s.origin}
    return out


def resolve(config: ConfigView) -> PackageSource:
    """The checked package source of this run; ConfigError (one line) on a bad value."""
    values: dict[str, Any] = {}
    for name in SETTINGS:
        s = _setting(config, name)
        items = s.value if isinstance(s.value, list) else ([s.value] if s.value else [])
        checked = []
        for item in items:
            try:
                checked.append(check_location(item, s.base or Path.cwd()))
            except ValueError as exc:
                raise ConfigError(f"{name} (from {s.origin}): {exc}",
                                  s.fix or "Fix the setting") from None
        values[name] = checked
    return PackageSource(values["indexUrl"][0] if values["indexUrl"] else None,
                         values["extraIndexUrls"], values["findLinks"])


def normalise_for_set(key: str, value: Any) -> Any:
    """``flow config set`` of a package source key: checked, paths made absolute (from the
    working directory), a single text value of a list key made a list. Other keys pass."""
    if key not in GLOBAL_KEYS:
        return value
    is_list = GLOBAL_KEYS[key]
    if value is None or value == [] or value == "":
        return [] if is_list else None
    if is_list and isinstance(value, str):
        value = value.split()
    problem = shape_problem(value, is_list)
    if problem:
        raise ConfigError(f"'{key}' must be {problem}",
                          f"Example: flow config set {key} https://pypi.example.com/simple/")
    try:
        if is_list:
            return [check_location(v, Path.cwd()) for v in value]
        return check_location(value, Path.cwd())
    except ValueError as exc:
        raise ConfigError(f"cannot set '{key}': {exc}",
                          "Pass an http(s) or file URL, or an existing path") from None
