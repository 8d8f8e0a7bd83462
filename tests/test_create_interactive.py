"""`flow create` on a terminal: questionary lists and copier's questions, and Ctrl-C.

Runs the real CLI under a pseudo-terminal (python's pty module) and types into it.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from create_support import PYTHON_KIT, listing
from offline import FLOW, offline_env
from packages_support import kit_wheel, one_line_error

DOWN, ENTER, CTRL_C = b"\x1b[B", b"\r", b"\x03"


def cooked(master: int) -> bool:
    """Whether the terminal is in canonical (line) mode, i.e. no prompt is reading keys.

    On Linux the master side of a pty reports the slave's settings.
    """
    return bool(termios.tcgetattr(master)[3] & termios.ICANON)


def run_on_terminal(args: list[str], cwd: Path, env: dict[str, str],
                    steps: list[tuple[bytes, bytes]], timeout: float = 30):
    """Run flow on a pty; for each step wait for ``expect`` in the output, then type ``send``."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*FLOW, *args], cwd=cwd, env={**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, close_fds=True)
    os.close(slave)
    out = b""

    def read(wait: float) -> bool:
        nonlocal out
        ready, _, _ = select.select([master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return False
        out += chunk
        return bool(chunk)

    try:
        for expect, send in steps:
            deadline = time.monotonic() + timeout
            # the question is shown and its prompt reads keys: copier may print a question's
            # text before the prompt switches the terminal to raw mode, and keys typed while it
            # is still cooked are edited by the terminal itself (Ctrl-U, Enter) or echoed
            while expect not in out or cooked(master):
                if not read(0.05) and proc.poll() is not None:
                    raise AssertionError(f"flow exited before {expect!r}: {out!r} "
                                         f"{proc.stderr.read()!r}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no prompt reading keys after {expect!r} in {out!r}")
            os.write(master, send)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            read(0.2)
        while read(0.05):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    code = proc.wait()
    return code, out.decode(errors="replace"), proc.stderr.read().decode()


@pytest.fixture
def terminal(run_flow, flow_home, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    assert run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index").returncode == 0

    def run(args, steps):
        return run_on_terminal(args, work, offline_env(flow_home), steps)

    return work, run


def test_ctrl_c_at_a_question_leaves_nothing(terminal):
    work, run = terminal
    before = listing(work)
    code, out, err = run(["create", "demo", "-k", "flow-kit-python", "-t", "library"],
                         [(b"Import name", CTRL_C)])
    assert code == 130, (out, err)
    assert one_line_error(err) == "flow: error: interrupted."
    assert listing(work) == before


def test_ctrl_c_at_the_kit_list(terminal, run_flow, tmp_path):
    work, run = terminal
    kit_wheel(tmp_path / "wheels", "flow-kit-other")
    assert run_flow("buildkit", "add", "flow-kit-other", "--no-index", "--find-links",
                    str(tmp_path / "wheels")).returncode == 0
    before = listing(work)
    code, out, err = run(["create", "demo"], [(b"flow-kit-other", CTRL_C)])
    assert code == 130, (out, err)
    assert one_line_error(err) == "flow: error: interrupted."
    assert listing(work) == before


def test_choosing_template_and_answering_on_a_terminal(terminal):
    work, run = terminal
    code, out, err = run(["create", "demo", "-k", "flow-kit-python"], [
        (b"Template:", DOWN + ENTER),          # the second entry: cli
        (b"Import name", ENTER),               # copier shows each question's help; default kept
        (b"One line saying", b"\x15Says hello" + ENTER),  # Ctrl-U clears the default
        (b"Author name", ENTER),
    ])
    assert code == 0, (out, err)
    assert (work / "demo" / "src" / "demo" / "cli.py").is_file()
    assert 'description = "Says hello"' in (work / "demo" / "pyproject.toml").read_text()
