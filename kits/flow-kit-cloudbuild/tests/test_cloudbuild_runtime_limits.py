"""Cloud build runtime (issue 18, parts 1 and 3): limits by what a build actually uses, summed
over its processes (cgroups), and a smaller kernel surface (no user namespaces, a seccomp filter).

Every test runs a real build through the real server, in real bubblewrap, in real cgroups, and
checks from the server's side what the build could do. The servers run as this test process's
user; CI runs as root on a machine with cgroup v1 controllers, like the dev machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cloudbuild_server_support import (
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

pytestmark = pytest.mark.skipif(not any((Path(d) / "bwrap").exists()
                                        for d in os.environ.get("PATH", "").split(os.pathsep)),
                                reason="bubblewrap is not installed (.ci/run installs it)")


def hostile(script: str) -> dict[str, str]:
    """An npm project whose build runs ``script`` (Python, the interpreter running these tests)."""
    files = npm_project(scripts={"build": f"{sys.executable} hostile.py"})
    files["hostile.py"] = script
    return files


def node_build(js: str) -> dict[str, str]:
    return npm_project(build_js=js)


def run(client: Client, url: str, timeout: int = 60) -> list[dict]:
    ack = client.publish(name="demo", version="1.0.0", source="git", repo=url, ref="main",
                         buildCmd=["npm", "run", "build"], prod=False, force=False, timeout=timeout)
    assert ack["ok"], ack
    return client.wait(ack["taskId"], timeout=timeout + 30)


def report(msgs: list[dict]) -> dict:
    end = final(msgs)
    assert end["action"] == "done", (end, logs(msgs)[-20:])
    [art] = [a for a in end["payload"]["artifacts"] if a["name"] == "report.json"]
    return json.loads(http_get(art["url"])[1])


def failure(msgs: list[dict]) -> str:
    end = final(msgs)
    assert end["action"] == "failed", (end, logs(msgs)[-20:])
    return end["payload"]["message"]


def build_cgroups_of(server: ServerProc) -> list[Path]:
    """The per-command cgroups under the server's own parent cgroup, in every hierarchy."""
    found: list[Path] = []
    for line in Path(f"/proc/{server.proc.pid}/cgroup").read_text().splitlines():  # type: ignore[union-attr]
        _, controllers, path = line.split(":", 2)
        name = "unified" if controllers == "" else controllers.split(",")[0].removeprefix("name=")
        for parent in Path("/sys/fs/cgroup", name, path.lstrip("/")).glob(f"flow-cloudbuild-{server.proc.pid}-*"):  # type: ignore[union-attr]
            found += [p for p in parent.iterdir() if p.is_dir()]
    return found


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A server with small limits, so that reaching them takes a fraction of a second."""
    s = ServerProc(tmp_path_factory.mktemp("small") / "data", "--concurrency", "2",
                   "--build-memory", "256M", "--build-processes", "48").start()
    yield s
    s.stop()


# -- memory: by use, summed, /tmp included ----------------------------------------------------
# A module with one exported memory of 4096 pages (256 MiB): V8 reserves ~10 GiB of address space
# for it, which an address-space limit (RLIMIT_AS) refused whatever the module really used.
WASM_256_MIB = (
    "const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0,\n"
    "  5, 4, 1, 0, 0x80, 0x20,\n"                         # memory section: min 4096 pages
    "  7, 7, 1, 3, 109, 101, 109, 2, 0]);\n"              # export it as 'mem'
    "WebAssembly.instantiate(bytes).then(({instance}) => {\n"
    "  const mem = new Uint8Array(instance.exports.mem.buffer);\n"
    "  mem.fill(7);\n"
    "  const fs = require('fs'); fs.mkdirSync('dist', {recursive: true});\n"
    "  fs.writeFileSync('dist/report.json', JSON.stringify({bytes: mem.length, last: mem[mem.length - 1]}));\n"
    "});\n")


def test_a_webassembly_module_with_256_mib_builds_under_the_defaults(client, git_daemon):
    got = report(run(client, new_repo(git_daemon, node_build(WASM_256_MIB))))
    assert got == {"bytes": 256 * 1024 ** 2, "last": 7}


def test_a_build_touching_6_gib_is_stopped_by_the_memory_limit(client, server, git_daemon):
    hog = ("const kept = [];\n"
           "for (let i = 1; i <= 6; i++) { kept.push(Buffer.alloc(1024 ** 3, i)); console.log('touched GiB ' + i); }\n"
           "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a');\n")
    msgs = run(client, new_repo(git_daemon, node_build(hog)))
    message = failure(msgs)
    assert "memory limit" in message and "4 GiB" in message and "--build-memory" in message, message
    assert "touched GiB 3" in logs(msgs)          # what it used, not what it reserved, was limited
    assert "touched GiB 5" not in logs(msgs)
    assert build_cgroups_of(server) == []          # the command's cgroup went with it


def test_writing_more_than_the_limit_into_tmp_is_stopped(small, git_daemon):
    fill_tmp = ("import os\n"
                "chunk = b'x' * (16 * 1024 ** 2)\n"
                "with open('/tmp/fill', 'wb') as f:\n"
                "    for i in range(32):\n"                      # 512 MiB into the tmpfs
                "        f.write(chunk); f.flush()\n"
                "os.makedirs('dist', exist_ok=True); open('dist/a', 'w').write('a')\n")
    before = _shmem()
    with Client(small.url) as c:
        message = failure(run(c, new_repo(git_daemon, hostile(fill_tmp))))
    assert "memory limit" in message and "256 MiB" in message and "--build-memory" in message, message
    assert _shmem() - before < 128 * 1024 ** 2     # the tmpfs went with the build
    assert build_cgroups_of(small) == []


def _shmem() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem in /proc/meminfo")


# -- processes -----------------------------------------------------------------------------------
FORK_BOMB = r'''
import os, sys, time
kids, refused = 0, 0
while refused < 50:
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        kids += 1
    except OSError:
        refused += 1
        time.sleep(0.001)
print(f"bomb got {kids} children", flush=True)
sys.exit(3)
'''


def test_a_fork_bomb_is_stopped_by_the_process_limit(small, git_daemon):
    with Client(small.url) as c:
        msgs = run(c, new_repo(git_daemon, hostile(FORK_BOMB)))
    message = failure(msgs)
    assert "48" in message and "--build-processes" in message, message
    [line] = [ln for ln in logs(msgs) if ln.startswith("bomb got")]
    assert int(line.split()[2]) < 48


# -- kernel surface ------------------------------------------------------------------------------
NAMESPACES = r'''
import json, os, subprocess
def rc(argv):
    return subprocess.run(argv, capture_output=True).returncode
out = {"unshare": rc(["unshare", "-Ur", "true"]),
       "bwrap": rc(["bwrap", "--ro-bind", "/", "/", "--unshare-user", "true"]),
       "bwrap_pid": rc(["bwrap", "--ro-bind", "/", "/", "--unshare-pid", "true"])}
os.makedirs("dist", exist_ok=True)
open("dist/report.json", "w").write(json.dumps(out))
'''


def test_a_build_cannot_make_user_namespaces_or_nest_bubblewrap(client, git_daemon):
    got = report(run(client, new_repo(git_daemon, hostile(NAMESPACES))))
    assert got["unshare"] != 0 and got["bwrap"] != 0 and got["bwrap_pid"] != 0, got


SYSCALLS = r'''
import ctypes, errno, json, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
X86 = platform.machine() == "x86_64"
NR = {  # x86_64, aarch64
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280),
    "perf_event_open": (298, 241), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "ptrace": (101, 117), "personality": (135, 92), "userfaultfd": (323, 282), "unshare": (272, 97),
    "setns": (308, 268), "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "reboot": (169, 142), "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89),
    "quotactl": (179, 60), "open_by_handle_at": (304, 265), "lookup_dcookie": (212, 18),
    "fsopen": (430, 430), "open_tree": (428, 428), "move_mount": (429, 429),
    "io_uring_setup": (425, 425), "clone3": (435, 435),
}
# Arguments with which each call would succeed or fail with another errno without the filter,
# where there are such (PTRACE_TRACEME, READ_IMPLIES_EXEC, UFFD_USER_MODE_ONLY, CLONE_NEWUSER...)
ARGS = {"keyctl": (0, -3, 0), "ptrace": (0, 0, 0, 0), "personality": (0x0400000,),
        "userfaultfd": (1,), "unshare": (0x10000000,), "setns": (-1, 0), "io_uring_setup": (1, 0),
        "clone3": (0, 0), "mount": (0, 0, 0, 0, 0), "reboot": (0, 0, 0, 0)}
got = {}
for name, nrs in NR.items():
    args = [ctypes.c_long(a) for a in ARGS.get(name, (0, 0, 0, 0, 0))]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nrs[0] if X86 else nrs[1]), *args)
    got[name] = errno.errorcode.get(ctypes.get_errno(), "0") if r == -1 else "ok"
ctypes.set_errno(0)
per_linux = libc.syscall(ctypes.c_long(135 if X86 else 92), ctypes.c_long(0))
got["personality(PER_LINUX)"] = "ok" if per_linux != -1 else "denied"
got["fork"] = "ok" if os.waitpid(os.fork() or os._exit(0), 0) else "denied"
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
got["seccomp"] = status.get("Seccomp", "").strip()
os.makedirs("dist", exist_ok=True)
open("dist/report.json", "w").write(json.dumps(got))
'''


def test_the_seccomp_filter_denies_kernel_surface_with_eperm(client, git_daemon):
    got = report(run(client, new_repo(git_daemon, hostile(SYSCALLS))))
    assert got.pop("seccomp") == "2", got
    assert got.pop("clone3") == "ENOSYS"   # so libc falls back to clone, whose flags are checked
    assert got.pop("personality(PER_LINUX)") == "ok" and got.pop("fork") == "ok"
    assert {name: e for name, e in got.items() if e != "EPERM"} == {}


# -- starting without cgroups --------------------------------------------------------------------
def test_no_cgroups_starts_and_says_so(tmp_path, git_daemon):
    srv = ServerProc(tmp_path / "data", "--no-cgroups").start()
    try:
        assert "--no-cgroups" in srv.stderr() and "memory" in srv.stderr()
        with Client(srv.url) as c:
            assert final(run(c, new_repo(git_daemon, npm_project())))["action"] == "done"
    finally:
        srv.stop()


def test_without_cgroup_access_the_server_refuses_to_start_with_one_line(tmp_path):
    nowhere = tmp_path / "not-a-cgroup-fs"
    nowhere.mkdir()
    cfg = tmp_path / "server.json"
    cfg.write_text("{}")
    argv = [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir",
            str(tmp_path / "data"), "--config", str(cfg)]
    env = server_env(FLOW_CLOUDBUILD_TOKENS=TOKEN, FLOW_CLOUDBUILD_CGROUP_ROOT=str(nowhere))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the server started without cgroups") from None
    assert proc.returncode != 0 and "listening" not in out
    [line] = err.strip().splitlines()
    assert "cgroup" in line and "--no-cgroups" in line and str(nowhere) in line, line
