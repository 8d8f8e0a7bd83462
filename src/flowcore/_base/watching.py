"""Watching a project for changes: the loop behind ``--watch`` and ``flow dev``.

Kits call :func:`watch` with a callback that rebuilds; it runs the callback once, then again
after each debounced batch of changes that matter. What does not matter is decided here, once,
for every kit: ``.gitignore`` patterns, the project's ``[tool.flow] watch-ignore`` patterns, the
build outputs a kit names, flow's own ``.flow/`` and the usual tool caches.

Built on ``watchfiles`` (a Rust core over inotify); it is imported only when a watch starts, so
it costs nothing on flow's start-up path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from flowcore._base.errors import FlowError

#: Directories never worth a rebuild, whatever the project says.
ALWAYS_IGNORED = (".git/", ".hg/", ".svn/", ".flow/", "__pycache__/", ".pytest_cache/",
                  ".mypy_cache/", ".ruff_cache/", ".tox/", ".nox/", ".venv/", ".hypothesis/",
                  "node_modules/", "*.pyc", "*.pyo", "*.swp", "*.swx", "*~", ".#*", ".DS_Store")
DEBOUNCE_MS = 200
INOTIFY_FIX = ("Raise the limit: sudo sysctl fs.inotify.max_user_watches=524288 "
               "(and add it to /etc/sysctl.conf to keep it)")


@dataclass(frozen=True)
class Change:
    """One changed file: ``kind`` is "added", "modified" or "deleted"; ``path`` is relative."""

    kind: str
    path: str


class IgnoreRules:
    """gitignore-style rules relative to a root: .gitignore, extra patterns, outputs."""

    def __init__(self, root: Path, patterns: Iterable[str] = ()) -> None:
        import pathspec

        self.root = root
        lines = list(ALWAYS_IGNORED) + project_watch_ignore(root)
        gitignore = root / ".gitignore"
        if gitignore.is_file():
            lines += gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
        lines += [str(p) for p in patterns]
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, path: str | Path) -> bool:
        """True when ``path`` (absolute, or relative to the root) is to be ignored."""
        p = Path(path)
        try:
            rel = p.relative_to(self.root) if p.is_absolute() else p
        except ValueError:
            return True
        text = rel.as_posix()
        # The path may be a directory (or one just deleted): "dist/" must match "dist" itself.
        if self._spec.match_file(text) or self._spec.match_file(text + "/"):
            return True
        # A pattern like "dist/" matches the directory, so it matches everything below it.
        return any(self._spec.match_file(parent.as_posix() + "/") for parent in rel.parents
                   if parent != Path("."))


def project_watch_ignore(root: Path) -> list[str]:
    """``[tool.flow] watch-ignore`` of the project at ``root`` (pyproject.toml, else flow.toml)."""
    import tomllib

    for name in ("pyproject.toml", "flow.toml"):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FlowError(f"{path} cannot be read: {exc}", "Fix the file") from None
        value = data.get("tool", {}).get("flow", {}).get("watch-ignore", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FlowError(f"[tool.flow] watch-ignore in {path} must be a list of patterns",
                            'Write it like watch-ignore = ["*.log", "docs/"]')
        return list(value)
    return []


class Batches:
    """Debounced batches of changes under ``root`` that ``ignore`` does not rule out.

    The watcher runs in a thread from the moment it is made, so changes made while the caller
    is busy (rebuilding) are kept and come out as the next batch instead of being missed.
    Iterating blocks until a batch comes; Ctrl-C in the main thread raises KeyboardInterrupt
    out of the iteration (flow turns it into exit 130).
    """

    def __init__(self, root: Path, ignore: IgnoreRules, *, debounce_ms: int = DEBOUNCE_MS) -> None:
        import queue
        import threading

        try:
            import watchfiles
        except ImportError:  # pragma: no cover - a dependency of flowcore
            raise FlowError("watch mode needs the watchfiles package", "pip install watchfiles") from None
        self.root = root
        self._kinds: dict[object, str] = {watchfiles.Change.added: "added",
                                          watchfiles.Change.modified: "modified",
                                          watchfiles.Change.deleted: "deleted"}
        self._queue: queue.Queue[list[Change] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()

        def keep(change: object, path: str) -> bool:
            return not ignore.ignored(path)

        def run() -> None:
            try:
                for raw in watchfiles.watch(root, watch_filter=keep, debounce=debounce_ms, step=50,
                                            stop_event=self._stop, rust_timeout=100,
                                            yield_on_timeout=True, raise_interrupt=False):
                    self._ready.set()  # the first (empty) yield: the watches are in place
                    if raw:
                        self._queue.put(self._changes(raw))
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, raised there
                self._queue.put(exc)
            finally:
                self._ready.set()

        self._thread = threading.Thread(target=run, name="flow-watch", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _changes(self, raw: Iterable[tuple[object, str]]) -> list[Change]:
        return sorted({Change(self._kinds.get(kind, "modified"), Path(p).relative_to(self.root).as_posix())
                       for kind, p in raw if Path(p).is_relative_to(self.root)}, key=lambda c: c.path)

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[list[Change]]:
        import queue

        while True:
            try:
                item = self._queue.get(timeout=0.25)  # a timeout keeps Ctrl-C deliverable
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                _raise_watch_error(item)
            if item:
                yield item


def _raise_watch_error(exc: BaseException) -> NoReturn:
    try:
        raise exc
    except OSError as exc:
        text = str(exc)
        if "inotify" in text.lower() or "watch limit" in text.lower() or getattr(exc, "errno", None) == 28:
            raise FlowError("the system's file watch limit (inotify max_user_watches) is reached",
                            INOTIFY_FIX) from None
        raise
    except RuntimeError as exc:  # watchfiles reports backend errors as RuntimeError
        if "watch" in str(exc).lower() and ("limit" in str(exc).lower() or "inotify" in str(exc).lower()):
            raise FlowError("the system's file watch limit (inotify max_user_watches) is reached",
                            INOTIFY_FIX) from None
        raise


def describe(changes: list[Change], limit: int = 3) -> str:
    """``src/a.py changed`` / ``3 files changed: a, b, c`` for the line printed before a rebuild."""
    if len(changes) == 1:
        c = changes[0]
        return f"{c.path} {'deleted' if c.kind == 'deleted' else 'changed'}"
    names = ", ".join(c.path for c in changes[:limit])
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return f"{len(changes)} files changed: {names}{more}"


def watch(root: Path, run: Callable[[list[Change]], object], *,
          ignore: Iterable[str] = (), relevant: Callable[[Change], bool] | None = None,
          echo: Callable[[str], None] | None = None, debounce_ms: int = DEBOUNCE_MS) -> None:
    """Run ``run([])`` now, then ``run(changes)`` after each batch of relevant changes.

    ``ignore``: more gitignore-style patterns (the project's ``watch-ignore``, build outputs).
    ``relevant``: a further filter of single changes (e.g. "goes into the distribution").
    ``echo``: where the "what changed / how long it took" lines go (default: stderr).
    A ``FlowError`` (or a click command's non-zero exit) from ``run`` is reported as a failed
    rebuild and the watch goes on, so a broken edit is fixed by the next save. Ctrl-C ends the
    watch with KeyboardInterrupt.
    """
    import click

    say = echo or (lambda line: click.echo(line, err=True))
    rules = IgnoreRules(root, ignore)

    def once(changes: list[Change]) -> None:
        start = time.perf_counter()
        ok = True
        try:
            run(changes)
        except FlowError as exc:
            ok = False
            say(f"flow: error: {exc.message}")
        except SystemExit as exc:  # a click command's ctx.exit(code)
            ok = exc.code in (0, None)
        took = time.perf_counter() - start
        say(f"{'rebuilt' if ok else 'failed'} in {took:.2f} s; watching for changes (Ctrl-C to stop)")

    changes_of = Batches(root, rules, debounce_ms=debounce_ms)
    try:
        once([])
        for changes in changes_of:
            if relevant is not None:
                changes = [c for c in changes if relevant(c)]
            if not changes:
                continue
            say(describe(changes))
            once(changes)
    finally:
        changes_of.close()
