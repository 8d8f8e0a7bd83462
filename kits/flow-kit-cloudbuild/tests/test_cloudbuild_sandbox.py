"""The build sandbox against the attacks that worked before it (issue: every build runs in a
sandbox). Each test runs a hostile build through the real server, with real bubblewrap, and
checks what the build could see and do from the server's side: its environment and command
line, the data dir, another tenant's artifact, the git mirror, processes left behind, limits.

The hostile builds are Python scripts run by ``npm run build`` (the allowlisted command) with
the interpreter that runs these tests, which the sandbox mounts read-only like any toolchain.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    ServerProc,
    final,
    http_get,
    logs,
    new_repo,
    npm_project,
    server_env,
)

pytestmark = pytest.mark.skipif(not Path("/usr/bin/bwrap").exists() and not any(
    (Path(d) / "bwrap").exists() for d in os.environ.get("PATH", "").split(os.pathsep)),
    reason="bubblewrap is not installed (.ci/run installs it)")

_marker = itertools.count(1)


def hostile(script: str, **extra: str) -> dict[str, str]:
    """An npm project whose build runs ``script`` (Python) and then leaves dist/ behind."""
    files = npm_project(scripts={"build": f"{sys.executable} hostile.py"})
    files["hostile.py"] = script
    files.update(extra)
    return files


def payload(url: str, **extra) -> dict:
    p = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
         "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 120}
    p.update(extra)
    return p


def run(client: Client, url: str, **extra) -> list[dict]:
    ack = client.publish(**payload(url, **extra))
    assert ack["ok"], ack
    return client.wait(ack["taskId"], timeout=120)


def report(msgs: list[dict]) -> dict:
    end = final(msgs)
    assert end["action"] == "done", (end, logs(msgs)[-20:])
    [art] = [a for a in end["payload"]["artifacts"] if a["name"] == "report.json"]
    return json.loads(http_get(art["url"])[1])


# -- what a build can see ----------------------------------------------------------------------
SPY = r'''
import json, os, pathlib
data_dir, server_pid, secrets = %r, %d, %r
found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for what in ("cmdline", "environ"):
        try:
            blob = open(f"/proc/{pid}/{what}", "rb").read().decode(errors="replace")
        except OSError:
            continue
        found += [f"{pid}/{what}: {s}" for s in secrets if s in blob]
def can(fn):
    try:
        fn()
        return True
    except OSError:
        return False
out = {
    "found": found,
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "server_environ": can(lambda: open(f"/proc/{server_pid}/environ", "rb").read()),
    "data_dir": sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else None,
    "data_dir_listed": can(lambda: os.listdir(data_dir)),
    "uid": os.getuid(),
    "hostname": os.uname().nodename,
    "usr_writable": can(lambda: open("/usr/flow-was-here", "w")),
}
os.makedirs("dist", exist_ok=True)
pathlib.Path("dist/report.json").write_text(json.dumps(out))
'''


def test_a_build_sees_no_server_process_environment_or_data_dir(client, server, git_daemon):
    secrets = [TOKEN, OTHER_TOKEN, "do-not-leak-me", "flow_kit_cloudbuild.server"]
    url = new_repo(git_daemon, hostile(SPY % (str(server.data_dir), server.proc.pid, secrets)))
    got = report(run(client, url))
    assert got["found"] == []
    assert max(got["pids"]) < 50, got["pids"]          # its own PID namespace: a handful of pids
    assert got["server_environ"] is False or server.proc.pid not in got["pids"]
    # Only the mount points of its own work dir and caches exist: no tasks, uploads, artifacts,
    # mirrors or token file.
    assert set(got["data_dir"] or []) <= {"work", "cache"}, got["data_dir"]
    assert got["uid"] != 0 and got["hostname"] == "flow-build"
    assert got["usr_writable"] is False


TAMPER = r'''
import glob, os, pathlib, subprocess
data_dir = %r
home = os.environ["HOME"]
tries = []
for target in glob.glob(os.path.join(home, "..", "..", "..", "artifacts", "*", "files", "index.html")) + \
        glob.glob(os.path.join(data_dir, "artifacts", "*", "files", "index.html")) + \
        [os.path.join(data_dir, "artifacts", "x", "files", "index.html")]:
    try:
        pathlib.Path(target).write_text("<h1>owned by A</h1>")
        tries.append(("wrote", target))
    except OSError as exc:
        tries.append(("refused", target, exc.strerror))
for config in glob.glob(os.path.join(data_dir, "cache", "git", "*.git", "config")) + \
        [os.path.join(data_dir, "cache", "git", "x.git", "config")]:
    r = subprocess.run(["git", "config", "--file", config, "remote.origin.url", "git://evil/repo"],
                       capture_output=True)
    tries.append(("git config", config, r.returncode))
os.makedirs("dist", exist_ok=True)
pathlib.Path("dist/report.json").write_text(__import__("json").dumps(tries))
'''


def test_a_build_cannot_rewrite_another_tenants_artifact_or_poison_the_git_mirror(server, git_daemon):
    site = npm_project(build_js=(
        "const fs = require('fs'); fs.mkdirSync('dist');\n"
        "fs.writeFileSync('dist/index.html', '<h1>B site</h1>');\n"))
    victim_url = new_repo(git_daemon, site)
    attacker_url = new_repo(git_daemon, hostile(TAMPER % str(server.data_dir)))
    with Client(server.url, OTHER_TOKEN) as b, Client(server.url, TOKEN) as a:
        b_end = final(run(b, victim_url))
        [b_index] = [x for x in b_end["payload"]["artifacts"] if x["name"] == "index.html"]
        mirrors = sorted((server.data_dir / "cache" / "git").glob("*.git/config"))
        assert mirrors, "the victim's publish made a git mirror"
        before = {m: m.read_bytes() for m in mirrors}
        tries = report(run(a, attacker_url))
        assert not any(t[0] == "wrote" for t in tries), tries
        assert all(t[2] != 0 for t in tries if t[0] == "git config"), tries
        assert http_get(b_index["url"])[1] == b"<h1>B site</h1>"
        assert {m: m.read_bytes() for m in mirrors} == before
        # B publishes the real repository again: it builds B's commit, not an evil one.
        assert http_get([x for x in final(run(b, victim_url))["payload"]["artifacts"]
                         if x["name"] == "index.html"][0]["url"])[1] == b"<h1>B site</h1>"


NO_NETWORK = r'''
import json, os, pathlib, socket
try:
    socket.create_connection(("127.0.0.1", %d), timeout=3).close()
    reached = True
except OSError:
    reached = False
os.makedirs("dist", exist_ok=True)
pathlib.Path("dist/report.json").write_text(json.dumps({"reached": reached}))
'''


def test_the_build_step_has_no_network(client, server, git_daemon):
    url = new_repo(git_daemon, hostile(NO_NETWORK % server.port))
    assert report(run(client, url)) == {"reached": False}


def test_build_network_gives_the_build_step_the_network(tmp_path, git_daemon):
    srv = ServerProc(tmp_path / "data", "--build-network").start()
    try:
        url = new_repo(git_daemon, hostile(NO_NETWORK % srv.port))
        with Client(srv.url) as c:
            assert report(run(c, url)) == {"reached": True}
    finally:
        srv.stop()


# -- nothing outlives a build ----------------------------------------------------------------
ESCAPE = r'''
import os, pathlib, subprocess, sys, time
marker = %r
subprocess.Popen(["setsid", "sh", "-c", f"exec sleep {marker}"], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(["env", "-i", "sh", "-c", f"sleep {marker}.5 & sleep {marker}.7"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:  # double fork: a grandchild adopted by the namespace's init
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", f"{marker}.9"])
    os._exit(0)
print("escaped", flush=True)
os.makedirs("dist", exist_ok=True)
pathlib.Path("dist/out.txt").write_text("x")
if %r:
    time.sleep(600)
'''


def leftovers(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``: processes a build left behind."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return [p for p in pids if p != os.getpid()]


def wait_until(check, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def escapee(git_daemon, keep_running: bool) -> tuple[str, str]:
    marker = f"{7000 + next(_marker)}"
    return new_repo(git_daemon, hostile(ESCAPE % (marker, keep_running))), f"sleep\0{marker}"


@pytest.mark.parametrize("how", ["normal end", "cancel", "timeout"])
def test_no_process_outlives_its_build(client, git_daemon, how):
    url, marker = escapee(git_daemon, keep_running=how != "normal end")
    ack = client.publish(**payload(url, timeout=8 if how == "timeout" else 120))
    if how == "cancel":
        wait_until(lambda: len(leftovers(marker)) >= 4, what="the build's processes to start")
        assert client.call("cancel", {"taskId": ack["taskId"]}) == {"ok": True}
    end = final(client.wait(ack["taskId"], timeout=60))
    assert end["action"] == {"normal end": "done", "cancel": "cancelled", "timeout": "timed-out"}[how]
    wait_until(lambda: not leftovers(marker), timeout=10, what=f"{leftovers(marker)} to end")


def test_no_process_outlives_a_killed_server(tmp_path, git_daemon):
    url, marker = escapee(git_daemon, keep_running=True)
    srv = ServerProc(tmp_path / "data").start()
    try:
        with Client(srv.url) as c:
            ack = c.publish(**payload(url))
            wait_until(lambda: len(leftovers(marker)) >= 4, what="the build's processes to start")
        srv.stop(signal.SIGKILL)
        wait_until(lambda: not leftovers(marker), timeout=10, what=f"{leftovers(marker)} to end")
        srv.start()  # and the restarted server fails the task it lost
        with Client(srv.url) as c:
            assert c.call("attach", {"taskId": ack["taskId"], "afterSeq": 0})["task"]["state"] == "failed"
    finally:
        srv.stop()


# -- limits ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = ServerProc(tmp_path_factory.mktemp("limited") / "data", "--concurrency", "3",
                   "--build-memory", "1G", "--build-processes", "64", "--build-file-size", "20M",
                   "--build-disk", "60M").start()
    yield s
    s.stop()


def test_a_memory_hog_fails_with_the_limit_named(limited, git_daemon):
    url = new_repo(git_daemon, hostile("b = bytearray(3 * 1024 ** 3)\n"))
    with Client(limited.url) as c:
        end = final(run(c, url))
    assert end["action"] == "failed"
    assert "ran out of memory" in end["payload"]["message"] and "1 GiB" in end["payload"]["message"]


def test_a_fork_bomb_is_contained_while_another_tenants_build_completes(limited, git_daemon):
    bomb = new_repo(git_daemon, hostile(
        "import os, time\n"
        "kids = 0\n"
        "deadline = time.time() + 600\n"
        "while time.time() < deadline:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600); os._exit(0)\n"
        "        kids += 1\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n"))
    good = new_repo(git_daemon, npm_project())
    with Client(limited.url, TOKEN) as a, Client(limited.url, OTHER_TOKEN) as b:
        bomb_task = a.publish(**payload(bomb, timeout=20))["taskId"]
        wait_until(lambda: any(m["data"]["action"] == "build" for m in a.ordered(bomb_task)),
                   what="the fork bomb's build step")
        b_end = final(run(b, good))
        assert b_end["action"] == "done", b_end
        bomb_end = final(a.wait(bomb_task, timeout=60))
    assert bomb_end["action"] == "timed-out"


def test_a_huge_file_and_a_full_disk_stop_the_build_with_the_limit_named(limited, git_daemon):
    big_file = new_repo(git_daemon, hostile("open('big', 'wb').write(b'x' * (30 * 1024 ** 2))\n"))
    many = new_repo(git_daemon, hostile(
        "import time\n"
        "for i in range(20):\n"
        "    open(f'part{i}', 'wb').write(b'x' * (10 * 1024 ** 2))\n"
        "time.sleep(30)\n"))
    with Client(limited.url) as c:
        end = final(run(c, big_file))
        assert end["action"] == "failed" and "larger than the build limit of 20 MiB" in end["payload"]["message"]
        end = final(run(c, many))
        assert end["action"] == "failed" and "disk limit of 60 MiB" in end["payload"]["message"]


# -- secure by default -------------------------------------------------------------------------
def test_the_server_refuses_to_start_without_a_sandbox(tmp_path):
    cfg = tmp_path / "server.json"
    cfg.write_text("{}")
    argv = [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir",
            str(tmp_path / "data"), "--config", str(cfg)]
    env = server_env(PATH=str(tmp_path / "empty-bin"), FLOW_CLOUDBUILD_TOKENS=TOKEN)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "cannot make a build sandbox: bubblewrap (bwrap) is not installed" in line
    assert "apt-get install bubblewrap" in line and "--no-sandbox" in line


def test_no_sandbox_is_an_explicit_logged_opt_out(tmp_path, git_daemon):
    srv = ServerProc(tmp_path / "data", "--no-sandbox").start()
    try:
        assert "--no-sandbox: builds run as this server's user" in srv.stderr()
        url = new_repo(git_daemon, hostile(SPY % (str(srv.data_dir), srv.proc.pid, [TOKEN])))
        with Client(srv.url) as c:
            got = report(run(c, url))
        assert {"tasks", "work"} <= set(got["data_dir"])  # what the sandbox is for
    finally:
        srv.stop()
