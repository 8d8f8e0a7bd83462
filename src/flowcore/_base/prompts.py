"""Interactive choices, for commands whose argument may be left out on a terminal.

``questionary`` is imported only when a question is actually asked (its import costs ~235 ms).
Without a terminal there is nobody to ask, so the error names the argument to pass instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flowcore._base.errors import UsageError


def interactive() -> bool:
    """True when both stdin and stdout are terminals."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def choose(
    message: str,
    choices: Sequence[str | tuple[str, str]],
    multiple: bool = False,
    *,
    argument: str = "NAME",
    command: str = "",
    what: str | None = None,
    fix: str | None = None,
) -> str | list[str]:
    """Ask the user to pick one of ``choices`` (or several with ``multiple``).

    A choice is a value, or a ``(value, title)`` pair when the list should show more than the
    value. ``argument``, ``command``, ``what`` and ``fix`` make the no-terminal error useful:
    ``no NAME given and no terminal to choose from. Pass it as an argument: flow buildkit
    delete NAME``. Ctrl-C raises ``KeyboardInterrupt`` (the CLI exits 130): an interruption is
    not an answer.
    """
    usage = f"{command} {argument}".strip()
    if not interactive():
        raise UsageError(
            f"no {what or argument} given and no terminal to choose from",
            fix or (f"Pass it as an argument: {usage}" if usage else f"Pass {argument}"),
        )
    if not choices:
        raise UsageError(f"nothing to choose from for {what or argument}")
    import questionary

    options = [questionary.Choice(c[1], value=c[0]) if isinstance(c, tuple) else c
               for c in choices]
    if multiple:
        answer = questionary.checkbox(message, choices=options).unsafe_ask()
    else:
        answer = questionary.select(message, choices=options).unsafe_ask()
    if answer is None:
        raise KeyboardInterrupt
    if answer == []:
        raise UsageError("nothing chosen", f"Pass it as an argument: {usage}")
    return answer
