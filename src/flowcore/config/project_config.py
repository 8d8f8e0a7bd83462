"""The project config: ``[tool.flow]`` in ``pyproject.toml``, else ``flow.toml``.

Found by walking up from the working directory (or given by ``--root``/``--config``), validated
against the schema (``flowcore.config.schema``), and edited only in place with tomlkit (comments
and formatting kept), atomically, under a lock in the project's ``.flow/``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowcore._base.errors import ConfigError
from flowcore._base.fileio import (
    FileTooLarge,
    NotARegularFile,
    atomic_write_bytes,
    file_lock,
    remove_stale_temp_files,
)
from flowcore.config.reading import read_config, shape_limit_problem, unreadable
from flowcore.config.schema import PROJECT, problem

PYPROJECT = "pyproject.toml"
FLOW_TOML = "flow.toml"


class ProjectConfig:
    """A project's flow settings and where they came from.

    ``data`` is the ``[tool.flow]`` table (from ``flow.toml`` it may also be written as a bare
    top-level table; both forms are accepted).
    """

    def __init__(self, root: str | os.PathLike[str], file: str | os.PathLike[str],
                 data: dict[str, Any]) -> None:
        self.root = Path(root)
        self.file = Path(file)
        self.data = data

    @property
    def buildkit(self) -> str | None:
        return self.data.get("buildkit")

    @property
    def plugins(self) -> list[str]:
        return list(self.data.get("plugins", []))

    def section(self, short_name: str) -> dict[str, Any]:
        """A kit's or plugin's own section, ``[tool.flow.<short_name>]``."""
        value = self.data.get(short_name, {})
        return value if isinstance(value, dict) else {}


_PROJECT_FIX = "move it out of the project's folders"


def _read_project_text(path: str | Path) -> str | None:
    raw = read_config(path, _PROJECT_FIX)
    try:
        return None if raw is None else raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", "Re-save it as UTF-8") from exc


def _parse_toml(path: str | Path, text: str) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "Fix the file's syntax") from exc
    except (RecursionError, ValueError) as exc:  # nesting past the parser's stack; a number
        raise ConfigError(f"{path} cannot be read: {unreadable(exc)}", "Fix the file") from None
    problem = shape_limit_problem(data)
    if problem:
        raise ConfigError(f"{path} cannot be used: {problem}", "Fix the file")
    return data


def _flow_table(path: str | Path) -> dict[str, Any] | None:
    """The flow table of ``path``, or ``None`` when the file declares none (or does not exist)."""
    if os.path.basename(path) == PYPROJECT:
        # Cheap pre-check: most pyproject.toml files up the tree have no flow table.
        try:
            raw = read_config(path, _PROJECT_FIX)
        except ConfigError as exc:
            if isinstance(exc.__cause__, (NotARegularFile, FileTooLarge)):
                raise
            return None  # unreadable: not this project's config
        if raw is None or b"flow" not in raw:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text", "Re-save it as UTF-8") from exc
        table = _parse_toml(path, text).get("tool", {}).get("flow")
        return table if isinstance(table, dict) else None
    project_text = _read_project_text(path)
    if project_text is None:
        return None
    doc = _parse_toml(path, project_text)
    table = doc.get("tool", {}).get("flow") if isinstance(doc.get("tool"), dict) else None
    return table if isinstance(table, dict) else doc


def validate_project(table: dict[str, Any], path: str | Path, *, locate: bool = True) -> dict[str, Any]:
    """Check ``[tool.flow]`` against the schema (``schema.PROJECT``); returns it unchanged.
    Tables of kits and plugins are theirs (``flowcore.config.unknown_keys`` warns about typos).

    The error names the file, the key's line in it (``locate``: the table was read from that
    file as it is now) and what the value must be."""
    for spec in PROJECT:
        if spec.name in table and spec.load_check:
            wrong = problem(spec, table[spec.name])
            if wrong:
                line = _line_of(path, spec.name) if locate else None
                where = f"{path}, line {line}" if line else f"{path}"
                raise ConfigError(f"{where}: [tool.flow] key '{spec.name}' must be {wrong}",
                                  "Fix the file")
    return table


def _line_of(path: str | Path, key: str) -> int | None:
    """The line assigning ``key`` in the flow table of ``path`` (``[tool.flow]``, or a flow.toml's
    top level), found in the text (tomllib keeps no positions); ``None`` when not found. Only
    on the way to an error."""
    import re

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    header = next((i for i, text in enumerate(lines) if re.match(r"\s*\[\s*tool\s*\.\s*flow\s*\]", text)), None)
    assign = re.compile(rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    for i in range((header + 1) if header is not None else 0, len(lines)):
        if lines[i].lstrip().startswith("["):
            return None  # the next table: the key is not a plain line of this one
        if assign.match(lines[i]):
            return i + 1
    return None


def _project_in(directory: str) -> ProjectConfig | None:
    for name in (PYPROJECT, FLOW_TOML):
        candidate = os.path.join(directory, name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):  # a FIFO or device is an error (_read_config), a folder is no config
            table = _flow_table(candidate)
            if table is not None:
                return ProjectConfig(directory, candidate, validate_project(table, candidate))
    return None


def find_project(
    cwd: str | Path | None = None, root: Path | None = None, config: Path | None = None
) -> ProjectConfig | None:
    """Find the project config, with FIS's semantics for the overrides.

    * neither given: walk up from ``cwd``; the first directory holding a flow config is the root.
    * ``root`` given: the config is looked for in ``root`` only (unless ``config`` is given).
    * ``config`` given: that file is the config; the root is its folder (unless ``root`` is given).
    """
    if config is not None:
        config = config.expanduser().absolute()
        if not config.exists():
            raise ConfigError(f"config file {config} does not exist", "Check the --config path")
        if config.is_dir():
            raise ConfigError(f"config file {config} is a directory", "Pass a file to --config")
        table = _flow_table(config)
        if table is None:
            raise ConfigError(
                f"{config} has no [tool.flow] table", "Add one, or pass another --config"
            )
        project_root = root.expanduser().absolute() if root else config.parent
        return ProjectConfig(project_root, config, validate_project(table, config))
    if root is not None:
        root = root.expanduser().absolute()
        if not root.is_dir():
            raise ConfigError(f"project root {root} is not a directory", "Check the --root path")
        found = _project_in(str(root))
        if found is None:
            raise ConfigError(
                f"{root} has no flow project config",
                "Add [tool.flow] to its pyproject.toml or create flow.toml there",
            )
        return found
    here = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    while True:
        found = _project_in(here)
        if found is not None:
            return found
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _project_lock_path(project: ProjectConfig) -> Path:
    from flowcore._base.fileio import make_state_dir

    state = make_state_dir(project.root / ".flow")
    if project.file.parent == project.root:
        return state / f"{project.file.name}.lock"
    import hashlib

    digest = hashlib.sha256(str(project.file).encode()).hexdigest()[:12]
    return state / f"{project.file.name}-{digest}.lock"


def add_project_key(table: Any, key: str, value: Any, after: tuple[str, ...] = ()) -> None:
    """Add ``key`` to a tomlkit table among its settings: right after the first key of ``after``
    that is there, else after the last plain key (at the top when there is none). Plain
    assignment would append it at the end of the table's text, below a comment that introduces
    the sub-table that follows (``# kit settings`` above ``[tool.flow.python]``)."""
    from tomlkit.container import Container
    from tomlkit.items import AoT, Table

    container = table if isinstance(table, Container) else getattr(table, "value", None)
    body = getattr(container, "body", None)
    if key not in table and isinstance(container, Container) and body:
        plain = [i for i, (k, v) in enumerate(body)
                 if k is not None and not isinstance(v, (Table, AoT))]
        anchors = [i for i, (k, _) in enumerate(body) if k is not None and k.key in after]
        at = (anchors[0] if anchors else (plain[-1] if plain else -1)) + 1
        if at < len(body):
            try:
                container._insert_at(at, key, value)
                return
            except (ValueError, KeyError):
                pass
    table[key] = value


def edit_project(project: ProjectConfig, mutate: Callable[[Any], Any]) -> None:
    """Change a project's flow table in place, keeping the file's comments and formatting.

    ``mutate`` receives the tomlkit table for ``[tool.flow]`` (created if missing). The write is
    atomic and locked like the global config; the lock file lives in the project's ``.flow/``
    (git-ignored), not next to the user's file.
    """
    import tomlkit

    with file_lock(project.file, _project_lock_path(project)):
        text = _read_project_text(project.file)
        if text is None:
            raise ConfigError(f"{project.file} no longer exists", "Run the command again")
        doc = tomlkit.parse(text)
        if project.file.name == FLOW_TOML and "tool" not in doc:
            table = doc
        else:
            tool = doc.setdefault("tool", tomlkit.table(is_super_table=True))
            table = tool.setdefault("flow", tomlkit.table())
        mutate(table)
        text = tomlkit.dumps(doc)
        new_data = validate_project(table.unwrap(), project.file, locate=False)
        remove_stale_temp_files(project.file)
        atomic_write_bytes(project.file, text.encode("utf-8"))
    project.data = new_data

