"""``flow publish`` on a terminal: Ctrl-C as a user presses it, then "cancel the task" or
"detach" at the prompt. Real CLI on a pseudo-terminal that is its controlling terminal, so
writing ^C to the pty master makes the terminal driver send SIGINT to flow's process group;
real server (see cloudbuild_publish_support)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path)
from cloudbuild_publish_support import make_site, needs_node
from tcp_proxy import TcpProxy

from offline import FLOW


@pytest.fixture(scope="module")
def server(publish_server):
    """The publish tests' build server (cloudbuild_publish_support), not the server tests' one."""
    return publish_server


pytestmark = needs_node

SLOW = ("--source", "upload", "--build-cmd", "npm run slow")
DOWN, ENTER, CTRL_C = b"\x1b[B", b"\r", b"\x03"
PROMPT = b"Cancel the task on the server, or detach"
FINAL = ("done", "failed", "cancelled", "timed-out")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _take_terminal() -> None:
    """In the child, after setsid: make the pty on stdin the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """flow running on a pty of its own: read what it prints, type into it."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.proc = subprocess.Popen(
            [*FLOW, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env={**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
            start_new_session=True, preexec_fn=_take_terminal)
        os.close(slave)
        self.master = master
        self.out = b""

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.out += chunk
        return bool(chunk)

    def expect(self, pattern: bytes, timeout: float = 60) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.out)
            if found:
                return found
            if not self._read(0.2) and self.proc.poll() is not None:
                raise AssertionError(f"flow exited ({self.proc.returncode}) before {pattern!r}: "
                                     f"{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s: {self.text()[-3000:]}")

    def wait_for_raw_mode(self, timeout: float = 15) -> None:
        """Until the prompt reads keys: typed while the terminal is still cooked, they would be
        edited or echoed by the terminal itself (on Linux the master reports the slave's mode)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:
            if not self._read(0.05) and self.proc.poll() is not None:
                raise AssertionError(f"flow exited before its prompt: {self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no prompt reading keys: {self.text()[-3000:]}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.05):
            pass
        if self.proc.poll() is None:
            raise AssertionError(f"flow still runs after {timeout} s: {self.text()[-3000:]}")
        return self.proc.returncode

    def text(self) -> str:
        """What was printed, without the prompt's escape sequences and carriage returns."""
        return ESCAPES.sub("", self.out.decode(errors="replace")).replace("\r", "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def interrupt_a_slow_publish(flow, server, tmp_path: Path, name: str,
                             url: str | None = None) -> tuple[Terminal, str]:
    """Start a long build on a terminal, press Ctrl-C during its build step; the prompt shows."""
    project = make_site(tmp_path / "site", name=name, slow_lines=600, slow_interval_ms=50)
    term = Terminal(["publish", "--server", url or server.url, "--token", server.token, *SLOW],
                    project, flow.env())
    task_id = term.expect(rb"task ([0-9a-f]+) submitted").group(1).decode()
    term.expect(rb"build \| slow line 3\r?\n")
    term.send(CTRL_C)  # the terminal driver turns it into SIGINT for flow's process group
    term.expect(PROMPT, timeout=15)
    term.wait_for_raw_mode()
    return term, task_id


def state_of(server, task_id: str) -> str:
    return server.get(f"/api/tasks/{task_id}")["state"]


def test_ctrl_c_then_cancel_the_task_cancels_it_on_the_server(flow, server, tmp_path):
    term, task_id = interrupt_a_slow_publish(flow, server, tmp_path, "tty-cancel-site")
    try:
        term.send(DOWN + ENTER)  # the second choice: "cancel the task"
        code = term.wait(timeout=30)
    finally:
        term.close()
    out = term.text()

    assert "not a connected namespace" not in out
    assert f"cancelling task {task_id}" in out
    assert code == 1, out
    assert state_of(server, task_id) == "cancelled"
    assert "==> cancelled: cancelled by request during build" in out
    errors = [line for line in out.splitlines() if line.startswith("flow: error:")]
    assert errors == [f"flow: error: task {task_id} was cancelled during step 'build': "
                      "cancelled by request during build."], out
    assert "slow line 600" not in out


def test_cancel_reconnects_when_the_connection_was_lost_at_the_prompt(flow, server, tmp_path):
    proxy = TcpProxy(server.port)
    try:
        term, task_id = interrupt_a_slow_publish(flow, server, tmp_path, "tty-lost-site",
                                                 url=f"http://127.0.0.1:{proxy.port}")
        try:
            proxy.cut()  # the network goes while the question waits for an answer
            time.sleep(1)  # deliberate: the client notices the closed socket meanwhile
            term.send(DOWN + ENTER)
            code = term.wait(timeout=30)
        finally:
            term.close()
    finally:
        proxy.close()
    out = term.text()

    assert code == 1, out
    assert state_of(server, task_id) == "cancelled"
    assert out.count("==> cancelled: cancelled by request during build") == 1
    errors = [line for line in out.splitlines() if line.startswith("flow: error:")]
    assert errors == [f"flow: error: task {task_id} was cancelled during step 'build': "
                      "cancelled by request during build."], out
    # every line once, in order, although the connection was replaced
    slow = [line for line in out.splitlines() if line.startswith("build | slow line")]
    assert slow == [f"build | slow line {i}" for i in range(1, len(slow) + 1)]


def test_ctrl_c_then_detach_leaves_the_task_running(flow, server, tmp_path):
    term, task_id = interrupt_a_slow_publish(flow, server, tmp_path, "tty-detach-site")
    try:
        term.send(ENTER)  # the default: "detach"
        code = term.wait(timeout=30)
    finally:
        term.close()
    out = term.text()

    assert code == 130, out
    errors = [line for line in out.splitlines() if line.startswith("flow: error:")]
    assert errors == [f"flow: error: detached from task {task_id}; it keeps running on the "
                      f"server. Follow it with: flow publish --attach {task_id}"], out
    assert state_of(server, task_id) not in FINAL
    # no 30 s build left behind on a shared machine
    cancelled = flow("publish", "--server", server.url, "--token", server.token,
                     "--cancel", task_id, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert state_of(server, task_id) == "cancelled"
