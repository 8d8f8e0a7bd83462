"""A hook reference page rendered from a hookspecs module: flowcore's (``docs/hooks.md``) and each
kit's (``docs/hooks-<kit>.md``), so that the page readers see is the specification itself.

Run ``python -m flowcore.plugins.hookdocs MODULE FILE`` to write the page, ``--check`` to fail
(exit 1) when FILE differs; tests compare the page with :func:`render` byte for byte.

The page: a title, the module's docstring without its first line, then per phase (a comment
block ``# ---`` / ``# <phase>`` in the module's source) each hook marked ``@hookspec`` with its
arguments and its docstring, in source order.
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


def render(module: ModuleType, title: str = "Hook reference") -> str:
    """The Markdown page of ``module``'s hooks (see the module docs)."""
    doc = inspect.cleandoc(module.__doc__ or "").split("\n", 2)
    parts = [
        f"# {title}\n",
        f"<!-- Generated from {module.__name__.replace('.', '/')}.py by "
        "flowcore/plugins/hookdocs.py; do not edit by hand. -->\n",
    ]
    if len(doc) > 2 and doc[2].strip():
        parts.append(doc[2].strip() + "\n")
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
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the page is out of date")
    args = parser.parse_args(argv)
    text = render(importlib.import_module(args.module), args.title)
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
