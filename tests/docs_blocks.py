"""The shell examples of README.md and docs/: found, classified, and turned into scripts.

A fenced block in ``sh``, ``bash``, ``shell`` or ``console`` is a command the reader is told to
run. Each one is either run by tests/test_docs.py (in order, per document, in a fresh copy of
the clone with an empty HOME), or visibly marked for the reader on the line before it::

    *Not run by the docs tests: needs a second machine.*

In ``console`` blocks, lines starting with ``$ `` are commands and the lines after one are its
expected output: each must appear in what the command printed, in order (``...`` inside a line
matches anything; a line that is only ``...`` skips any output). ``sh`` blocks are scripts.

A kit or plugin installed by name (``flow plugin add NAME``) must come after the page pointed flow
at a package index (``flow config set indexUrl URL``), in any example, run or not
(``name_installs``): this repository's kits and plugins are on no public index, so the docs
install them from a path.

Also a command: ``python tests/docs_blocks.py README.md`` prints the README's runnable blocks as
one bash script, and ``python tests/docs_blocks.py --test-command README.md`` its test command
(the block marked "it is the test command itself"): what .ci/run runs literally. Standard
library only: CI runs it with the machine's python3 before any virtualenv exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHELL_LANGS = ("sh", "bash", "shell", "console")
SKIP_RE = re.compile(r"^\*Not run by the docs tests: (?P<reason>.+?)\.?\*$")
FENCE_RE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z0-9_-]*)\s*$")


@dataclass
class Command:
    line: str                                   # the command as written (after "$ ")
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    path: Path
    lineno: int                                 # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None                            # the visible reason it is not run, if marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.lineno}"

    def commands(self) -> list[Command]:
        """The block as commands: console transcripts split at "$ ", sh blocks whole."""
        if self.lang != "console":
            return [Command(self.text)]
        out: list[Command] = []
        for raw in self.text.splitlines():
            if raw.startswith("$ "):
                out.append(Command(raw[2:]))
            elif out and raw.strip():
                out[-1].expected.append(raw)
        return out


def documents() -> list[Path]:
    """Every Markdown file a user reads: the README, docs/, and each kit's and plugin's README."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for group in ("kits", "plugins"):
        docs += sorted((REPO / group).glob("*/README.md"))
    return docs


def _fences(lines: list[str]) -> list[tuple[int, int, str, int]]:
    """Each fenced block: (index of the opening fence, of the closing one, language, indent)."""
    found = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        found.append((i, j, m.group("lang"), len(m.group("indent"))))
        i = j + 1
    return found


def _line_before(lines: list[str], i: int) -> str:
    """The last non-blank line above line ``i`` (what a marker or a file name is read from)."""
    k = i - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return lines[k].strip() if k >= 0 else ""


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    for i, j, lang, indent in _fences(lines):
        if lang in SHELL_LANGS:
            body = "\n".join(line[indent:] for line in lines[i + 1:j])
            marker = SKIP_RE.match(_line_before(lines, i))
            found.append(Block(path, i + 1, lang, body, marker.group("reason") if marker else None))
    return found


FILE_RE = re.compile(r"^`(?P<path>[A-Za-z0-9_./-]+)`:$")


def file_blocks(path: Path) -> list[tuple[str, str, int]]:
    """Files a guide shows whole: a fenced block right after a line like `` `pyproject.toml`: ``.

    ``(relative path, content, line of the fence)``, in document order, so a docs test can write
    the files a reader would type in before it runs the guide's commands.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[tuple[str, str, int]] = []
    for i, j, _, _ in _fences(lines):
        named = FILE_RE.match(_line_before(lines, i))
        if named:
            out.append((named.group("path"), "\n".join(lines[i + 1:j]) + "\n", i + 1))
    return out


def matches(expected: list[str], output: str) -> str | None:
    """None when every expected line appears in ``output`` in order; else what is missing."""
    actual = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for want in expected:
        want = " ".join(want.split())
        if want == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        while at < len(actual) and not pattern.search(actual[at]):
            at += 1
        if at == len(actual):
            return want
        at += 1
    return None


INSTALL_RE = re.compile(r"\bflow\b[^#;&|\n]*?\b(?:buildkit|plugin)\s+add\s+(?P<args>[^#;&|)\n]*)")
INDEX_RE = re.compile(r"\bflow\b[^#;&|\n]*?\bconfig\s+set\s+indexUrl\s|\bFLOW_INDEX_URL=")


def _from_an_index(args: str) -> list[str]:
    """The names among the specs of one `flow buildkit add` / `flow plugin add`: what a package
    index is asked for (a path, a wheel file, ``name @ URL`` or a --no-index install is not)."""
    words = args.split()
    if "--no-index" in words or "@" in words:
        return []
    names, skip = [], False
    for word in words:
        if skip or word.startswith("-"):
            skip = word in ("--find-links",)
            continue
        spec = word.strip("'\"")
        if "/" in spec or spec.startswith((".", "~", "$")) or spec.endswith((".whl", ".tar.gz", ".zip")):
            continue
        names.append(spec)
    return names


def name_installs(path: Path) -> list[str]:
    """Where a shell example of ``path`` installs a kit or plugin by name before the page has
    pointed flow at a package index (``flow config set indexUrl URL``): run on a fresh machine,
    such a name comes from PyPI, where this repository's kits and plugins are not, and where
    whoever registers the name would have their code run by every reader. One
    ``"path:line: names"`` each; the index counts when a command earlier on the page (in any
    shell or plain block, run or not) set it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index_set = [], False
    for i, j, lang, indent in _fences(lines):
        if lang not in (*SHELL_LANGS, ""):
            continue
        for k in range(i + 1, j):
            line = lines[k][indent:]
            if lang in ("", "console"):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if INDEX_RE.search(line):
                index_set = True
            for m in INSTALL_RE.finditer(line):
                names = _from_an_index(m.group("args"))
                if names and not index_set:
                    found.append(f"{path.relative_to(REPO)}:{k + 1}: {', '.join(names)}")
    return found


def script(path: Path) -> str:
    """The runnable blocks of one document as a single bash script (sh blocks only)."""
    parts = [f"# {b.where}\n{b.text}" for b in blocks(path) if b.skip is None and b.lang != "console"]
    return "\n\n".join(parts) + "\n"


#: The reason that marks a document's test command (README.md's "Tests" block).
TEST_COMMAND_REASON = "it is the test command itself"


def test_command(path: Path) -> str:
    """The one block marked as the test command, as a script; SystemExit if not exactly one."""
    found = [b for b in blocks(path) if b.skip and b.skip.startswith(TEST_COMMAND_REASON)]
    if len(found) != 1:
        raise SystemExit(f"{path}: {len(found)} blocks marked '{TEST_COMMAND_REASON}', expected 1")
    return f"# {found[0].where}\n{found[0].text}\n"


if __name__ == "__main__":
    if sys.argv[1] == "--test-command":
        sys.stdout.write(test_command(Path(sys.argv[2]).resolve()))
    else:
        sys.stdout.write(script(Path(sys.argv[1]).resolve()))
