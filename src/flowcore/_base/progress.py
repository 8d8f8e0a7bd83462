"""Progress for work that takes longer than a moment: a spinner on stderr, only on a terminal.

When stderr is not a terminal (CI, pipes, tests) nothing is written, so logs and captured
output carry only results and errors.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

_FRAMES = "|/-\\"
_DELAY = 0.25  # seconds before anything is shown: quick steps stay silent


def enabled() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Show ``message`` with a spinner while the block runs, then a one-line outcome."""
    if not enabled():
        yield
        return
    done = threading.Event()
    shown = threading.Event()
    start = time.monotonic()

    def spin() -> None:
        if done.wait(_DELAY):
            return
        shown.set()
        i = 0
        while not done.is_set():
            sys.stderr.write(f"\r{_FRAMES[i % len(_FRAMES)]} {message} ...")
            sys.stderr.flush()
            i += 1
            done.wait(0.1)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        thread.join()
        if shown.is_set():
            outcome = f"done ({time.monotonic() - start:.1f}s)" if ok else "failed"
            sys.stderr.write(f"\r\033[K{message} ... {outcome}\n")
            sys.stderr.flush()
