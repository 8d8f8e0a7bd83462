"""A build (or a hostile server) printing terminal escapes: ``flow publish`` shows its text,
never its control sequences (issue 24 part 5, issue 18 part 7).

The build prints OSC 52 (sets the clipboard of whoever runs ``flow publish``), OSC 0 (the window
title), a C1 CSI, a colour, and ``\\r`` followed by a forged ``==> done: published fake`` that
would cover its own ``build | `` prefix on a terminal. The real CLI runs on a real pseudo-terminal
(``os.openpty``: stdout is a terminal, so the build's colour may pass) and on a pipe, against the
real server on loopback; the server's downloadable log keeps the raw bytes.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path)
from cloudbuild_publish_support import make_site, needs_node, publish

from offline import FLOW


@pytest.fixture(scope="module")
def server(publish_server):
    """The publish tests' build server (cloudbuild_publish_support), not the server tests' one."""
    return publish_server


pytestmark = needs_node

#: A JavaScript source: its string escapes are JavaScript's.
EVIL_JS = r"""
const fs = require("fs");
process.stdout.write("before\n");
process.stdout.write("\x1b]52;c;cHduZWQ=\x07clip\n");
process.stdout.write("\x1b]0;pwned\x1b\\title\n");
process.stdout.write("c1\u009b2Jafter\n");
process.stdout.write("\x1b[31mred\x1b[0m plain\n");
process.stdout.write("progress 50%\r==> done: published fake\n");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.html", "<h1>ok</h1>\n");
"""
FAKE = b"==> done: published fake"


def evil_site(root: Path, name: str) -> Path:
    project = make_site(root, name=name)
    package = json.loads((project / "package.json").read_text())
    package["scripts"]["evil"] = "node evil.js"
    (project / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    (project / "evil.js").write_text(EVIL_JS)
    return project


def on_a_terminal(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> bytes:
    """Run flow with stdout and stderr on a pty; everything the terminal received."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*FLOW, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: flow exited and the terminal closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"flow still runs after {timeout} s: {out[-3000:]!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out


def downloaded_log(server, task_id: str) -> bytes:
    """The task's whole log as the dashboard offers it for download."""
    login = urllib.request.Request(
        server.url + "/ui/api/login", data=json.dumps({"token": server.token}).encode(),
        method="POST", headers={"Content-Type": "application/json", "Origin": server.url})
    with urllib.request.urlopen(login, timeout=10) as resp:
        cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    request = urllib.request.Request(f"{server.url}/ui/api/tasks/{task_id}/log",
                                     headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read()


def assert_no_sequences(out: bytes) -> None:
    assert b"\x1b]" not in out and b"\x07" not in out, out
    assert "\x9b".encode() not in out and b"\x9b" not in out, out
    assert b"pwned" not in out and b"cHduZWQ" not in out and b"2J" not in out, out


def test_a_terminal_sees_text_and_colour_but_no_control_sequences(flow, server, tmp_path):
    project = evil_site(tmp_path / "site", "escape-tty-site")
    env = {k: v for k, v in flow.env().items() if k != "NO_COLOR"}
    out = on_a_terminal(["publish", "--server", server.url, "--token", server.token,
                         "--source", "upload", "--build-cmd", "npm run evil"],
                        project, {**env, "TERM": "xterm"})

    assert_no_sequences(out)
    lines = out.replace(b"\r\n", b"\n").split(b"\n")
    # the forged line is a line of the build's output, prefixed like every other
    assert b"build | " + FAKE in lines, out
    assert all(line.startswith(b"build | ") for line in lines if FAKE in line), out
    assert b"build | progress 50%" in lines
    # nothing moves the cursor back over a prefix: the only CR is the pty's before a newline
    assert b"\r" not in out.replace(b"\r\n", b""), out
    assert b"build | clip" in lines and b"build | title" in lines and b"build | c1after" in lines
    # the build's colour reaches the terminal, and ends with its line
    assert b"build | \x1b[31mred\x1b[0m plain\x1b[0m" in lines, out
    # the only escape sequences left are colours (SGR)
    assert re.sub(rb"\x1b\[[0-9;]*m", b"", out).count(b"\x1b") == 0, out

    task_id = re.search(rb"task ([0-9a-f]+) submitted", out).group(1).decode()
    raw = downloaded_log(server, task_id)
    assert b"\x1b]52;c;cHduZWQ=\x07clip\n" in raw
    assert b"\x1b]0;pwned\x1b\\title\n" in raw
    assert "c1\x9b2Jafter\n".encode() in raw
    assert b"progress 50%\r==> done: published fake\n" in raw


def test_a_pipe_gets_neither_sequences_nor_colour(flow, server, tmp_path):
    project = evil_site(tmp_path / "site", "escape-pipe-site")
    result = subprocess.run(
        [*FLOW, "publish", "--server", server.url, "--token", server.token, "--source",
         "upload", "--build-cmd", "npm run evil"], cwd=project, capture_output=True,
        env={k: v for k, v in flow.env().items() if k != "NO_COLOR"}, stdin=subprocess.DEVNULL,
        timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert_no_sequences(out)
    assert b"\x1b" not in out and b"\r" not in out, out
    lines = result.stdout.decode().split("\n")
    assert "build | red plain" in lines
    assert "build | " + FAKE.decode() in lines
    assert [line for line in lines if line.startswith("==> done:")] == [
        "==> done: published 1 artifact(s) of escape-pipe-site 1.0.0"]  # the server's own

    # --json: the server's messages, unchanged as data, no raw control character
    result = publish(flow, server, project, "--source", "upload", "--build-cmd", "npm run evil",
                     "--json", "--no-cache")  # the build again, not the cache's copy of its files
    assert result.returncode == 0, result.stderr
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", result.stdout)
    logs = "\n".join(m["data"]["payload"]["message"] for m in map(json.loads,
                     result.stdout.splitlines()) if m["data"]["action"] == "log")
    assert "\x1b]52;c;cHduZWQ=\x07clip" in logs and "c1\x9b2Jafter" in logs
