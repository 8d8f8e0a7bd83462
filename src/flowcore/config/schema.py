"""The one config schema: every key flow gives meaning to, declared once.

Three tables: the top level of ``$FLOW_HOME/config.json`` (``GLOBAL``), one ``buildKits[]``
entry (``KIT_ENTRY``) and the project's ``[tool.flow]`` (``PROJECT``). Each :class:`Key` says its
type (a :class:`Kind`: the check and the phrase errors and the docs use), its default, its help
line, and who writes it. From these tables, and nowhere else, come:

* validation of both files (``global_config.validate_global``, ``project_config.validate_project``);
* the unknown-key warnings (``flowcore.config.unknown_keys``), from the key names;
* ``flow config set``: which keys it refuses (``managed_by``), offers (``settable_keys``) and how
  it reads a value (:func:`parse_for_set`);
* the reference section of docs/configuration.md (``flowcore.config.reference``).

A table of NamedTuples, not a schema library (pydantic, attrs, jsonschema): the core validates
a few flat keys on every start, before any kit loads, and a dependency would cost more import
time than this whole module while checking nothing more. (NamedTuple, not a frozen dataclass:
typed and immutable alike, and building the class costs ~0.1 ms instead of ~1 ms at start-up.) Kits declare their own
section's keys through ``flow_kit_info``'s ``config_schema`` (see docs/hooks.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from flowcore._base.errors import ConfigError, UsageError

#: The format version of config.json this flow writes and understands.
SCHEMA_VERSION = 1


class Kind(NamedTuple):
    """A type of value: ``expected`` is what a value must be, as errors and the docs say it;
    ``check`` tells whether a value is one (``None``: not checked when a file is read, because
    the one reader of the key checks it and names its own fix)."""

    expected: str
    check: Callable[[Any], bool] | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_locations(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


KINDS: dict[str, Kind] = {
    "integer": Kind("an integer", _is_int),
    "name": Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "kit": Kind("a string (a kit's distribution name)", lambda v: isinstance(v, str)),
    "kit or null": Kind("a string or null", lambda v: v is None or isinstance(v, str)),
    "kits": Kind("a list", lambda v: isinstance(v, list)),  # each entry: KIT_ENTRY
    "bool": Kind("true or false", lambda v: isinstance(v, bool)),
    "strings": Kind("a list of strings", _is_strings),
    "epoch ms": Kind("a number (milliseconds since the epoch)",
                     lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "version": Kind("a version string", None),
    "location": Kind("a URL or a path (a non-empty string)", lambda v: isinstance(v, str) and bool(v)),
    "location or null": Kind("a URL or a path (a non-empty string), or null",
                             lambda v: v is None or (isinstance(v, str) and bool(v))),
    "locations": Kind("a list of URLs or paths", _is_locations),
    "sections": Kind("an object of objects, one per short name", None),
    "patterns": Kind("a list of patterns", None),
    "git mode": Kind('true, false or "auto"', lambda v: isinstance(v, bool) or v == "auto"),
}

#: A key without a default: absent means unset.
NO_DEFAULT: Any = type("NoDefault", (), {"__repr__": lambda self: "NO_DEFAULT"})()


class Key(NamedTuple):
    """One key of a config table.

    ``name`` is as written in the file (dotted for a key inside an object: ``create.git``);
    ``kind`` a name in ``KINDS``; ``default`` what a read fills in when it is absent
    (config.json only; ``NO_DEFAULT``: nothing); ``managed_by`` the command that writes it
    (``flow config set`` refuses the key and names the command); ``by_flow`` true when flow
    records it itself (not offered to ``flow config set``); ``env`` the environment variable
    that overrides it; ``load_check`` false when a bad value is reported by the key's one reader
    (with its own fix) instead of stopping every command.
    """

    name: str
    kind: str
    help: str
    default: Any = NO_DEFAULT
    managed_by: str = ""
    by_flow: bool = False
    env: str = ""
    load_check: bool = True


GLOBAL: tuple[Key, ...] = (
    Key("schemaVersion", "integer", "format version (1). A newer version than flow understands "
        "is an error asking you to upgrade flowcore.", SCHEMA_VERSION, by_flow=True),
    Key("activeBuildKit", "kit or null", "the kit used outside projects.",
        None, managed_by="flow buildkit switch"),
    Key("buildKits", "kits", "the kits installed, and those declared by a kit-bound plugin "
        "before the kit arrived: one object each (`buildKits[]` entries, below).", [],
        managed_by="flow buildkit add/delete"),
    Key("plugins", "strings", "general plugins, loaded with every kit and outside any kit.", [],
        managed_by="flow plugin add/delete"),
    Key("lastUpdateDate", "epoch ms", "when flow last checked for a newer flowcore (ms since the "
        "epoch).", 0, by_flow=True),
    Key("latestVersion", "version", "the newest flowcore version that check found.",
        by_flow=True),
    Key("indexUrl", "location or null", "the package index kits and plugins are downloaded "
        "from; replaces PyPI (see [package source](#package-source-where-kits-and-plugins-come-"
        "from)); absent = the installer's default.", env="FLOW_INDEX_URL"),
    Key("extraIndexUrls", "locations", "more indexes, searched as well.",
        env="FLOW_EXTRA_INDEX_URL"),
    Key("findLinks", "locations", "directories of wheels, or HTML pages of links.",
        env="FLOW_FIND_LINKS"),
    Key("kitConfig", "sections", "each kit's own settings, by its short name "
        "(`kitConfig.python.build-tool`); a project's `[tool.flow.<short name>]` wins over them. "
        "A kit declares its keys (`config_schema`, docs/hooks.md): any other is warned about."),
    Key("pluginConfig", "sections", "each plugin's own settings, by its short name."),
    Key("create.git", "git mode", 'whether `flow create` makes the new project a git repository; '
        'unset or "auto": when it is not inside one already and git is installed.',
        load_check=False),
)

KIT_ENTRY: tuple[Key, ...] = (
    Key("name", "name", "the kit's distribution name."),
    Key("installed", "bool", "false: declared by a kit-bound plugin before the kit arrived.",
        False),
    Key("plugins", "strings", "kit-bound plugins, loaded only with this kit.", []),
)

PROJECT: tuple[Key, ...] = (
    Key("buildkit", "kit", "the kit for this project."),
    Key("plugins", "strings", "project plugins, loaded in addition to the global general plugins "
        "([if trusted](#trust-what-flow-runs-from-a-project-a-template-or-a-plugin))."),
    Key("watch-ignore", "patterns", 'paths every kit\'s `--watch` ignores, beside .gitignore '
        '(`["*.log", "docs/"]`).', load_check=False),
    Key("index-url", "location", "as `indexUrl`, for this project (used only when trusted).",
        env="FLOW_INDEX_URL"),
    Key("extra-index-urls", "locations", "as `extraIndexUrls`, for this project.",
        env="FLOW_EXTRA_INDEX_URL"),
    Key("find-links", "locations", "as `findLinks`, for this project.", env="FLOW_FIND_LINKS"),
)

#: The top-level names of config.json flow knows (users and plugins may keep their own).
GLOBAL_KEYS = frozenset(k.name.split(".")[0] for k in GLOBAL)
#: The keys of a ``buildKits[]`` entry: all of them belong to flow.
KIT_ENTRY_KEYS = frozenset(k.name for k in KIT_ENTRY)
#: The plain keys of ``[tool.flow]`` (beside them: one table per kit or plugin, by short name).
PROJECT_KEYS = frozenset(k.name for k in PROJECT)
#: The package source keys: ``(config.json key, [tool.flow] key, environment variable, is a
#: list)`` per setting, paired by their environment variable (``flowcore.config.package_source``).
SOURCE_SETTINGS: tuple[tuple[str, str, str, bool], ...] = tuple(
    (g.name, p.name, g.env, g.kind == "locations")
    for g in GLOBAL if g.env for p in PROJECT if p.env == g.env
)
#: The ``[tool.flow]`` keys that choose where ``flow plugin add`` downloads from (used only in a
#: trusted project: flowcore.config.trust).
PROJECT_SOURCE_KEYS = tuple(s[1] for s in SOURCE_SETTINGS)


def defaults() -> dict[str, Any]:
    """config.json's top-level defaults (new lists on every call: callers mutate them)."""
    return {k.name: list(k.default) if isinstance(k.default, list) else k.default
            for k in GLOBAL if k.default is not NO_DEFAULT}


def problem(key: Key, value: Any) -> str | None:
    """What ``value`` must be instead, when it is not of ``key``'s kind; else ``None``."""
    kind = KINDS[key.kind]
    return None if kind.check is None or kind.check(value) else kind.expected


def settable_keys() -> list[str]:
    """The keys of config.json ``flow config set`` offers: neither managed nor flow's records."""
    return [k.name for k in GLOBAL
            if not k.managed_by and not k.by_flow and KINDS[k.kind].check is not None]


def written_by_flow() -> frozenset[str]:
    """Top-level keys flow writes itself: completion does not offer what the file holds below
    them."""
    return frozenset(k.name for k in GLOBAL if k.managed_by or k.by_flow)


def parse_for_set(key: str, text: str) -> Any:
    """``flow config set KEY TEXT``: the value to store. A key flow manages is refused, naming
    the command that changes it; TEXT is JSON when it parses, else text; a key the schema checks
    on load must then be of its kind, so the error names the command, not the file (the package
    source keys are checked further by ``package_source.normalise_for_set``: a URL or an
    existing path). A key read elsewhere (``create.git``) is checked by its reader, as on load."""
    top = key.split(".")[0]
    for k in GLOBAL:
        if k.managed_by and k.name == top:
            raise UsageError(f"'{top}' is managed by flow", f"Use '{k.managed_by}' instead")
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        value = text
    known = next((k for k in GLOBAL if k.name == key), None)
    if known is not None and known.load_check and not known.env:
        wrong = problem(known, value)
        if wrong:
            raise ConfigError(f"cannot set '{key}': {text!r} is not {wrong}", f"Set it to {wrong}")
    return value
