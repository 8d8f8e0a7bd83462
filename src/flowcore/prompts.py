"""Interactive choices, for commands whose argument may be left out on a terminal.

``questionary`` is imported only when a question is actually asked (its import costs ~235 ms).
Without a terminal there is nobody to ask, so the error names the argument to pass instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flowcore.errors import UsageError


def interactive() -> bool:
    """True when both stdin and stdout are terminals."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def choose(
    message: str,
    choices: Sequence[str],
    multiple: bool = False,
    *,
    argument: str = "NAME",
    command: str = "",
) -> str | list[str]:
    """Ask the user to pick one of ``choices`` (or several with ``multiple``).

    ``argument`` and ``command`` make the no-terminal error useful: ``no NAME given and no
    terminal to choose from. Pass it: flow buildkit delete NAME``.
    """
    usage = f"{command} {argument}".strip()
    if not interactive():
        raise UsageError(
            f"no {argument} given and no terminal to choose from",
            f"Pass it as an argument: {usage}" if usage else f"Pass {argument} as an argument",
        )
    if not choices:
        raise UsageError(f"nothing to choose from for {argument}")
    import questionary

    if multiple:
        answer = questionary.checkbox(message, choices=list(choices)).ask()
    else:
        answer = questionary.select(message, choices=list(choices)).ask()
    if answer is None or answer == []:
        raise UsageError("nothing chosen", f"Pass it as an argument: {usage}")
    return answer
