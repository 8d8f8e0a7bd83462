"""Text from outside flow, made safe to print on a terminal.

Why this exists: flow prints many strings it did not write: command names and help from
plugins' manifests, template names and descriptions, kit and plugin names from config files,
exception messages from plugin code, a build server's log. A terminal obeys the control
characters in them wherever they come from: OSC 0 sets the window title, OSC 52 writes the
user's clipboard, CSI moves the cursor and erases lines, ``\\r`` returns to column 0 so that a
forged line covers what flow printed before it, and the C1 character ``\\x9b`` is CSI in one
character. click strips only CSI sequences, and only when the output is not a terminal, so none
of that is stopped on the way to the user.

Two functions, one for each shape of text:

* :func:`printable` for messages and log lines: removes every C0 control except tab and
  newline, DEL and every C1 control, and with an ESC (or a C1 introducer) the whole escape
  sequence it starts (CSI; OSC, DCS, SOS, PM and APC strings up to their BEL or ST; two- and
  three-character ESC sequences), so no payload is left behind as garbage. ``keep_colour=True``
  keeps SGR sequences (colour and bold, ``ESC [ ... m``) and nothing else: for a build log
  written to a terminal.
* :func:`printable_line` for names and table cells: the same, with tabs and line breaks
  turned into spaces, so one value stays one cell of one row.

Where flow applies them, so that no caller has to remember: :func:`flowcore._base.errors.warn` and
``FlowError.message`` (every warning and error line, which carry plugin names, exception
messages and config values), ``CommandRegistry.list`` (every command row of ``flow --help`` and
of shell completion), and the cells of the listing commands (``plugin list``, ``buildkit list``,
``create --list``, ``doctor``). Kits and plugins get both through :mod:`flowcore.api`.
JSON output needs neither: ``json.dumps`` writes every control character as a ``\\u`` escape.

Cheap on purpose: text without any control character (``str.isprintable``, in C) is returned as
it is, and the one pattern is compiled the first time some text needs it (compiling costs
~0.4 ms, which ``flow --help`` does not pay for plugins whose help is plain text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re

__all__ = ["printable", "printable_line"]

#: String terminator: BEL (xterm's), ESC \ (ST), or the C1 ST.
_ST = r"(?:\x07|\x1b\\|\x9c)"
_PATTERN = (
    # 1: SGR (colour, bold, ...), the one sequence that may be kept
    r"(\x1b\[[0-9;:]*m)"
    # OSC, DCS, SOS, PM, APC (7- or 8-bit introducer): everything up to the terminator
    rf"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*{_ST}"
    # CSI (7- or 8-bit): parameters, intermediates, final byte
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    # other ESC sequences (charset, save/restore, reset, ...); an unterminated string above
    # loses its introducer here, and its text stays visible rather than eating what follows
    r"|\x1b[ -/]*[0-~]"
    # any other C0 control but tab and newline (a lone ESC among them), DEL, C1
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_compiled: re.Pattern[str] | None = None
#: What splits a line apart once the controls are gone: tab, newline, Unicode separators.
_BREAKS = {ord("\t"): " ", ord("\n"): " ", 0x2028: " ", 0x2029: " "}


def _sequences() -> re.Pattern[str]:
    """The pattern, compiled on first use (``re`` too, should start-up ever do without it)."""
    global _compiled
    if _compiled is None:
        import re

        _compiled = re.compile(_PATTERN)
    return _compiled


def _keep_sgr(match: re.Match[str]) -> str:
    return match.group(1) or ""


def printable(text: str, *, keep_colour: bool = False) -> str:
    """``text`` without control characters and escape sequences; tabs and newlines stay.

    :param keep_colour: keep SGR sequences (``ESC [ 1;31 m``): only for output that goes to a
        terminal and shows someone else's colours (a build log). Every other sequence goes.
    """
    if text.isprintable():
        return text
    return _sequences().sub(_keep_sgr if keep_colour else "", text)


def printable_line(text: str) -> str:
    """:func:`printable` for a name or a table cell: tabs and line breaks become spaces."""
    if text.isprintable():
        return text
    return printable(text).translate(_BREAKS)
