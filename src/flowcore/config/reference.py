"""The schema as docs/configuration.md shows it: the reference section, generated.

The section between ``BEGIN`` and ``END`` in docs/configuration.md is :func:`render`'s output;
tests/test_config_docs.py compares it byte for byte, so the page cannot drift from the schema.
Regenerate it after changing ``flowcore.config.schema``::

    .venv/bin/python -m flowcore.config.reference docs/configuration.md

(``--check`` only reports whether the page is current: exit 1 when it is not.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flowcore.config.schema import GLOBAL, KINDS, KIT_ENTRY, NO_DEFAULT, PROJECT, Key

BEGIN = ("<!-- BEGIN config reference: generated from src/flowcore/config/schema.py by "
         "python -m flowcore.config.reference; do not edit by hand -->")
END = "<!-- END config reference -->"


def _default(key: Key) -> str:
    return "unset" if key.default is NO_DEFAULT else f"`{json.dumps(key.default)}`"


def _meaning(key: Key) -> str:
    notes = []
    if key.managed_by:
        notes.append(f"Written by `{key.managed_by}`.")
    elif key.by_flow:
        notes.append("Written by flow.")
    if key.env:
        notes.append(f"`{key.env}` overrides it.")
    return " ".join([key.help, *notes])


def _table(keys: tuple[Key, ...], with_default: bool) -> list[str]:
    head = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"] if with_default \
        else ["| key | type | meaning |", "| --- | --- | --- |"]
    rows = [f"| `{k.name}` | {KINDS[k.kind].expected} | {_default(k)} | {_meaning(k)} |" if with_default
            else f"| `{k.name}` | {KINDS[k.kind].expected} | {_meaning(k)} |" for k in keys]
    return head + rows


def render() -> str:
    """The reference section, markers included, ending in a newline."""
    lines = [
        BEGIN,
        "",
        "### `config.json`",
        "",
        "Defaults are filled in when the file is read; any other top-level key is yours or a "
        "plugin's and is kept on every write (a near miss of one of these, like "
        "`activeBuildkit`, is warned about).",
        "",
        *_table(GLOBAL, with_default=True),
        "",
        "### `buildKits[]` entries",
        "",
        "Every key of an entry is flow's: any other is warned about.",
        "",
        *_table(KIT_ENTRY, with_default=True),
        "",
        "### `[tool.flow]`",
        "",
        "Beside these keys, `[tool.flow]` holds one table per kit or plugin, named after its short "
        "name (`[tool.flow.python]`). Any other key is warned about, with the nearest known one.",
        "",
        *_table(PROJECT, with_default=False),
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with the generated section (from ``BEGIN`` through ``END`` and its newline)
    replaced by ``section``; ``ValueError`` when the markers are missing."""
    start = text.index(BEGIN)
    end = text.index(END, start) + len(END) + 1
    return text[:start] + section + text[end:]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    if len(args) != 1:
        print("usage: python -m flowcore.config.reference [--check] docs/configuration.md",
              file=sys.stderr)
        return 2
    page = Path(args[0])
    text = page.read_text(encoding="utf-8")
    new = replace_section(text, render())
    if check:
        return 0 if new == text else 1
    if new != text:
        page.write_text(new, encoding="utf-8")
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
