"""A hook reference page rendered from a hookspecs module: flowcore's (``docs/hooks.md``) and each
kit's (``docs/hooks-<kit>.md``), so that the page readers see is the specification itself.

Run ``python -m flowcore.plugins.hookdocs MODULE FILE`` to write the page, ``--check`` to fail
(exit 1) when FILE differs; tests compare the page with :func:`render` byte for byte.

The page: a title, the module's docstring without its first line, with ``--payloads`` the
TypedDicts the module defines (each key with its annotation and its ``#:`` comment), then per
phase (a comment block ``# ---`` / ``# <phase>`` in the module's source) each hook marked
``@hookspec`` with its arguments and its docstring, in source order.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The attribute flow's ``hookspec`` marker sets on a specification (pluggy's ``<project>_spec``).
_SPEC_MARK = "flow_spec"


def hooks(module: ModuleType) -> list[tuple[str, str, object]]:
    """``(phase, name, function)`` of every hook specification of ``module``, in source order."""
    phase, out = "", []
    lines = inspect.getsource(module).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# ") and i and lines[i - 1].startswith("# ---"):
            phase = line[2:].strip()
        match = re.match(r"def (flow_\w+)\(", line)
        if match:
            func = getattr(module, match.group(1))
            if _SPEC_MARK in getattr(func, "__dict__", {}):
                out.append((phase, match.group(1), func))
    return out


def payload_types(module: ModuleType) -> list[type]:
    """The TypedDicts ``module`` defines (not imports), in source order."""
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and obj.__module__ == module.__name__
             and hasattr(obj, "__required_keys__")]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def payload_fields(cls: type) -> list[tuple[str, str, str]]:
    """``(key, annotation as written, its #: comment)`` of the keys ``cls`` itself declares."""
    out, notes = [], []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#:"):
            notes.append(text[2:].strip())
        elif re.match(r"\w+: ", text):
            name, annotation = text.split(": ", 1)
            out.append((name, annotation, " ".join(notes)))
            notes = []
    return out


def render(module: ModuleType, title: str = "Hook reference", *, payloads: bool = False) -> str:
    """The Markdown page of ``module``'s hooks (see the module docs)."""
    doc = inspect.cleandoc(module.__doc__ or "").split("\n", 2)
    parts = [
        f"# {title}\n",
        f"<!-- Generated from {module.__name__.replace('.', '/')}.py by "
        "flowcore/plugins/hookdocs.py; do not edit by hand. -->\n",
    ]
    if len(doc) > 2 and doc[2].strip():
        parts.append(doc[2].strip() + "\n")
    types = payload_types(module) if payloads else []
    if types:
        parts.append("## Payloads\n")
    for cls in types:
        parts.append(f"### `{cls.__name__}`\n")
        parts.append(inspect.cleandoc(cls.__doc__ or "") + "\n")
        parts.append("\n".join(f"- `{key}: {annotation}`" + (f": {note}" if note else "")
                               for key, annotation, note in payload_fields(cls)) + "\n")
    phase = None
    for hook_phase, name, func in hooks(module):
        if hook_phase != phase and hook_phase:
            parts.append(f"## {hook_phase}\n")
        phase = hook_phase
        params = ", ".join(inspect.signature(func).parameters)  # type: ignore[arg-type]
        parts.append(f"### `{name}({params})`\n")
        parts.append(inspect.cleandoc(getattr(func, "__doc__", None) or "") + "\n")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flowcore.plugins.hookdocs",
                                     description="Write a hook reference page from a hookspecs "
                                                 "module.")
    parser.add_argument("module", help="the hookspecs module, e.g. flow_kit_python.hookspecs")
    parser.add_argument("file", type=Path, help="the Markdown page to write")
    parser.add_argument("--title", default="Hook reference", help="the page's title")
    parser.add_argument("--payloads", action="store_true",
                        help="also list the TypedDicts the module defines")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the page is out of date")
    args = parser.parse_args(argv)
    text = render(importlib.import_module(args.module), args.title, payloads=args.payloads)
    if args.check:
        current = args.file.read_text(encoding="utf-8") if args.file.exists() else None
        if current != text:
            print(f"{args.file} is out of date: run python -m flowcore.plugins.hookdocs "
                  f"{args.module} {args.file}", file=sys.stderr)
            return 1
        return 0
    args.file.write_text(text, encoding="utf-8")
    print(f"wrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
