"""How ``flow publish`` shows a task: readable lines, or one JSON message per line (``--json``).

Human output: a ``==> step: what it does`` line when a step starts, then the step's output as
``step | line``; at the end the artifacts, and the artifact URL as the very last line (so
``flow publish | tail -n 1`` is the URL). With ``--json`` stdout carries the server's messages
unchanged, one per line, in ``seq`` order; client notices always go to stderr.

Everything the server sends is someone else's text: the build's output above all, which any
project (or a hostile server) fills with what it likes. A terminal would obey the escape
sequences in it (OSC 52 writes the user's clipboard, OSC 0 the window title, CSI moves the
cursor) and a ``\r`` would return to column 0, so that a forged ``==> done: published ...``
covers the ``build | `` prefix. So every field printed here passes through flowcore's
``printable``/``printable_line`` first: a ``\r`` in a log line starts a new, prefixed line, and
the build's colours (SGR only) pass only when stdout is a terminal (and ``NO_COLOR`` is unset),
reset at the end of each line so that no prefix is ever drawn in them. The server's stored
log keeps the raw bytes; in ``--json`` the text is JSON-escaped, never a raw control character.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from flow_kit_cloudbuild.protocol import ACTION_LOG, STATE_DONE, STEPS, log_lines
from flowcore.api import printable, printable_line

__all__ = ["Renderer", "colour_wanted"]

#: What ``json.dumps(..., ensure_ascii=False)`` leaves raw but a terminal may obey: DEL, C1.
_RAW_CONTROLS = re.compile("[\x7f-\x9f]")
#: Ends the build's colours before the next line's prefix.
_RESET = "\x1b[0m"


def colour_wanted() -> bool:
    """Whether the build's own colours may pass: stdout is a terminal and ``NO_COLOR`` is unset
    (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


def _json_line(obj: Any) -> str:
    """``obj`` as one JSON line, UTF-8 kept, no raw control character (C1 escaped too)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return _RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Renderer:
    """Prints messages as they arrive; ``json_mode`` switches to one JSON object per line."""

    def __init__(self, json_mode: bool = False, quiet: bool = False,
                 colour: bool | None = None) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.step: str | None = None
        #: keep the build's SGR colours (default: only on a terminal, see colour_wanted)
        self.colour = colour_wanted() if colour is None else colour

    def notice(self, text: str) -> None:
        """A client-side remark (reconnecting, detaching): stderr, never mixed into --json."""
        click.echo(f"flow: {printable(text)}", err=True)

    def _log_line(self, line: str) -> list[str]:
        """One line of the build's output as the lines to print after its prefix: each ``\r``
        starts a new one (it cannot move back over the prefix), every control character and
        escape sequence but colour (on a terminal) is gone, and colour ends with the line."""
        out = []
        for part in [p for p in line.split("\r") if p] or [""]:
            text = printable(part, keep_colour=self.colour)
            out.append(text + _RESET if self.colour and "\x1b" in text else text)
        return out

    def message(self, msg: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.json_mode:
            sys.stdout.write(_json_line(msg) + "\n")
            sys.stdout.flush()
            return
        data = msg.get("data") or {}
        action = printable_line(str(data.get("action")))
        payload = data.get("payload") or {}
        text = printable_line(str(payload.get("message", "")))
        if action == ACTION_LOG:
            prefix = f"{printable_line(str(payload.get('step') or self.step or 'log'))} | "
            lines = [out for line in log_lines(msg) for out in self._log_line(line)]
            click.echo(prefix + f"\n{prefix}".join(lines) + "\n", nl=False, color=self.colour)
        elif action in STEPS:
            self.step = action
            click.echo(f"==> {action}: {text}" if text else f"==> {action}")
        elif action == STATE_DONE:
            click.echo(f"==> done: {text}" if text else "==> done")
            for artifact in payload.get("artifacts") or []:
                if isinstance(artifact, dict):
                    name = printable_line(str(artifact.get("name")))
                    url = printable_line(str(artifact.get("url", "")))
                    click.echo(f"    {name}  ({_size(artifact.get('size'))})  {url}".rstrip())
        else:
            click.echo(f"==> {action}: {text}" if text else f"==> {action}")

    def alias(self, kind: str, url: str) -> None:
        """A stable URL now serving the build (``prod: URL``, ``branch: URL``), before the last line."""
        if not self.json_mode and not self.quiet and url:
            click.echo(printable_line(f"{kind}: {url}"))

    def result_url(self, url: str) -> None:
        """The artifact URL, printed last (human mode; --json has it in the final message)."""
        if not self.json_mode and not self.quiet and url:
            click.echo(printable_line(url))

    def detached(self, task_id: str) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps({"taskId": task_id}) + "\n")
            sys.stdout.flush()
        else:
            click.echo(printable_line(task_id))
