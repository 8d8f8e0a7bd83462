"""Reading a kit's ``flow_kit_info`` answer: which files it recognises a project folder by.
Used by ``flow init`` (which kit takes this folder) and by the hints for a command that another
kit would provide."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def declared_files(info: object) -> list[str] | None:
    """``project_files`` of a kit's ``flow_kit_info`` answer: file names (no paths), or
    ``None`` when it names none."""
    files = info.get("project_files") if isinstance(info, dict) else None
    if not isinstance(files, list):
        return None
    names = [f for f in files if isinstance(f, str) and f and "/" not in f and f not in (".", "..")]
    return names or None


def accepts(files: list[str] | None, folder: Path) -> bool:
    """Whether a kit that recognises a project by ``files`` takes ``folder``."""
    return files is None or any((folder / name).is_file() for name in files)


def files_text(files: list[str] | None) -> str:
    """``"a, b or c"`` (``"any folder"`` when there are none)."""
    if not files:
        return "any folder"
    return files[0] if len(files) == 1 else f"{', '.join(files[:-1])} or {files[-1]}"
