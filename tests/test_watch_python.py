"""`flow build --watch` and `flow test --watch` (flow-kit-python) on real file changes in a real
project: one rebuild per debounced batch, none for ignored files or files outside the wheel,
none after Ctrl-C; a test run after an edit that breaks a test and one that fixes it."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from create_support import PYTHON_KIT
from offline import FLOW, offline_env


class Watching:
    """A `flow ... --watch` process whose output lines are read as they come.

    stdout and stderr share one pipe, as in a terminal: two pipes read by two threads would
    deliver a stdout line and a later stderr line in either order.
    """

    def __init__(self, args: list[str], cwd: Path, flow_home: Path) -> None:
        self.proc = subprocess.Popen([*FLOW, *args], cwd=cwd, env=offline_env(flow_home),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self.pump.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 120) -> list[str]:
        """Lines up to and including the next one that holds ``text``."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line with {text!r} within {timeout} s; saw {got[-20:]}"
            try:
                item = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                assert self.proc.poll() is None, f"flow exited {self.proc.returncode}; saw {got[-20:]}"
                continue
            self.seen.append(item)
            got.append(item)
            if text in item:
                return got

    def stop(self) -> int:
        """Ctrl-C, as a user presses it; the exit code. The rest of the output lands in seen."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.pump.join(10)
            while not self.lines.empty():
                self.seen.append(self.lines.get())


@pytest.fixture
def demo(run_flow, tmp_path: Path) -> Path:
    assert run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index").returncode == 0
    r = run_flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "demo"
    text = (root / "pyproject.toml").read_text()
    text = text.replace("[tool.flow]\n", '[tool.flow]\nwatch-ignore = ["*.log"]\n', 1)
    assert "watch-ignore" in text
    (root / "pyproject.toml").write_text(text)
    return root


def test_build_watch_rebuilds_once_per_batch_and_only_for_distribution_files(demo, flow_home):
    w = Watching(["build", "--watch"], demo, flow_home)
    try:
        first = w.until("watching for changes")
        assert "built dist/demo-0.1.0-py3-none-any.whl" in first, first
        assert not [line for line in first if "unknown key" in line], first  # watch-ignore is known
        package = demo / "src" / "demo"
        # Ignored (watch-ignore), outside the wheel (tests/), then one file that goes in.
        (demo / "notes.log").write_text("x")
        (demo / "tests" / "test_more.py").write_text("def test_more():\n    assert True\n")
        time.sleep(0.5)  # let those two land in a batch of their own (which must rebuild nothing)
        (package / "__init__.py").write_text((package / "__init__.py").read_text() + "\nVALUE = 1\n")
        lines = w.until("watching for changes")
        [changed] = [line for line in lines if "changed" in line or "added" in line]
        assert changed == "src/demo/__init__.py changed", lines
        assert lines.count("built dist/demo-0.1.0-py3-none-any.whl") == 1, lines
        assert any(line.startswith("rebuilt in ") for line in lines)
        # Three new modules written together: one batch, one rebuild.
        for name in ("a", "b", "c"):
            (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
        lines = w.until("watching for changes")
        assert lines.count("built dist/demo-0.1.0-py3-none-any.whl") == 1, lines
        assert "3 files changed: src/demo/a.py, src/demo/b.py, src/demo/c.py" in lines, lines
    finally:
        code = w.stop()
    assert code == 130
    assert "stopped watching" in w.seen
    before = {p: p.stat().st_mtime_ns for p in (demo / "dist").iterdir()}
    (package / "__init__.py").write_text("VALUE = 2\n")  # after Ctrl-C nothing watches
    assert {p: p.stat().st_mtime_ns for p in (demo / "dist").iterdir()} == before


def test_test_watch_reruns_after_a_breaking_and_a_fixing_edit(demo, flow_home):
    test_file = next((demo / "tests").glob("test_*.py"))
    good = test_file.read_text()
    w = Watching(["test", "--watch", "--no-clear", "-q"], demo, flow_home)
    try:
        assert "run 1: passed" in w.until("run 1:")[-1]
        test_file.write_text(good + "\n\ndef test_broken():\n    assert 1 == 2\n")
        lines = w.until("run 2:")
        assert "run 2: FAILED: 1 failed, 2 passed" in lines[-1], lines
        test_file.write_text(good)
        lines = w.until("run 3:")
        assert "run 3: passed: 2 passed" in lines[-1], lines
    finally:
        assert w.stop() == 130
