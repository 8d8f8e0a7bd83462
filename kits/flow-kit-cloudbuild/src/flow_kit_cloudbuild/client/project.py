"""The name and version ``flow publish`` sends, read from package.json or pyproject.toml."""

from __future__ import annotations

import json
from pathlib import Path

from flow_kit_cloudbuild.client.errors import PublishUsageError

__all__ = ["ProjectMeta", "read_project"]


class ProjectMeta:
    """What the server needs to know about the project: its name, version and kind."""

    __slots__ = ("name", "version", "kind", "file")

    def __init__(self, name: str, version: str, kind: str, file: Path) -> None:
        self.name = name
        self.version = version
        self.kind = kind  # "npm" or "python"
        self.file = file


def read_project(root: Path) -> ProjectMeta:
    """Read ``package.json`` (first) or ``pyproject.toml`` in ``root``.

    package.json wins because an npm site may carry a pyproject.toml only for its flow settings.
    """
    package_json = root / "package.json"
    if package_json.is_file():
        return _from_package_json(package_json)
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        return _from_pyproject(pyproject)
    raise PublishUsageError(
        f"no package.json or pyproject.toml in {root}",
        "Run flow publish in a project folder (or create one with: flow create)",
    )


def _from_package_json(path: Path) -> ProjectMeta:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishUsageError(f"cannot read {path}: {exc}", "Fix the file") from exc
    if not isinstance(data, dict):
        raise PublishUsageError(f"{path} is not a JSON object", "Fix the file")
    return ProjectMeta(_field(data, "name", path), _field(data, "version", path), "npm", path)


def _from_pyproject(path: Path) -> ProjectMeta:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PublishUsageError(f"cannot read {path}: {exc}", "Fix the file") from exc
    project = data.get("project")
    if not isinstance(project, dict):
        raise PublishUsageError(f"{path} has no [project] table",
                                "Add [project] with name and version")
    if "version" not in project and "version" in project.get("dynamic", []):
        raise PublishUsageError(
            f"{path} declares a dynamic version, which flow publish cannot read",
            "Set a static version in [project] (version = \"1.0.0\")",
        )
    return ProjectMeta(_field(project, "name", path), _field(project, "version", path),
                       "python", path)


def _field(data: dict, key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PublishUsageError(f"{path} has no '{key}'", f"Add a \"{key}\" to {path.name}")
    return value.strip()
