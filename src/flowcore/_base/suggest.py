"""Did-you-mean: the nearest known name to a misspelt one, for errors and warnings at any layer
(unknown config keys, commands, kit names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate nearest to ``word`` (difflib's ratio at least ``cutoff``), else ``None``."""
    import difflib

    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"Did you mean 'x'? "`` for the nearest candidate, or ``""``."""
    match = closest(word, candidates)
    return f"Did you mean '{match}'? " if match else ""
