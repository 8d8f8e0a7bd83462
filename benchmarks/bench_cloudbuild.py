"""flow-cloudbuild-server: what a publish costs, what the caches save, how logs and load scale.

One command (`.venv/bin/python benchmarks/bench_cloudbuild.py`) runs, all against one real
server on loopback (offline, --concurrency 4) and a real `git daemon`:

1. publish of a small npm project (first publish of a fresh repository) vs the same
   `git clone` + `npm ci` + `npm run build` run by hand in a shell;
2. second publish of the unchanged project vs the first (git mirror cache);
3. a build printing 200,000 lines: every line reaches the client in order; time vs running
   the same build locally with its output read through a pipe. Measured through the real
   `flow publish` (its own process, stdout a pipe read to the end, exactly what a user or CI
   waits for), through the in-file python-socketio Watcher and through a bare engine.io
   reader; the same publish printing no lines separates the fixed cost (clone, npm ci, the
   sandbox) from the per-line cost. Alternating rounds, medians;
4. 20 concurrent publishes: all complete, none lost; wall time vs 20/4 x one publish;
5. the sandbox's cost: first publish, second publish and the 200,000-line build on a server
   with the bubblewrap sandbox (the default) vs one with --no-sandbox, alternating, same run;
6. "build cache" (`--sections 6` or `--sections build-cache`): a site whose package-lock.json
   (v3) names 120 synthetic npm packages (`--cache-packages N`; 8 direct dependencies, the rest
   transitive, depth ~7; each an index.js requiring its dependencies, two lib/ modules of 2-20 KB
   and a README), generated with StaticNpmRegistry's pack (kits/flow-kit-cloudbuild/tests/
   npm_registry.py) and served from a process of its own on loopback, every lock entry resolved
   there (and an .npmrc naming it). Its build.js requires the direct ones, checks that all 120
   load, and writes dist/ (index.html with a banner line, assets/app.js, assets/app.css,
   manifest.json). Git source, as the other sections. Per round a fresh server data dir
   (sandboxed, the default; not --offline; `--registry-host 127.0.0.1:PORT` so the install step's
   egress proxy lets npm reach the registry), one token, three publishes timed from submitting
   to the final message: (1) first (cold: mirror clone, `npm ci` fetching every tarball: the
   registry's count is checked), (2) the same commit again (target <= 0.05x of (1): the build
   cache), (3) one line of build.js changed, lock file unchanged (target <= 0.5x of (1): the
   install cache skips `npm ci`). Each publish's dist/index.html is fetched and must carry the
   banner of its own commit (a stale cache hit fails the run). Printed per publish: whether
   `npm ci` and the build ran, the tarballs fetched, each step's time (server timestamps) and
   every line containing "from cache" or "install cache". Round 0 warms up and is not counted;
   medians of --rounds rounds, ratios of the medians against (1).

The repository has a heavy history (40 commits of a 1 MB incompressible file) but a small work
tree, like a long-lived project: that is where the mirror cache matters. The project has no npm
dependencies (sections 1-5 are offline), so the npm cache has nothing to save there; section 6
has its own loopback registry.
The socket side is a small python-socketio client inside this file, plus `flow publish` itself
(the kit installed into a throw-away FLOW_HOME) for the log case. `--sections 3` runs only
the log case; `--profile-client FILE` writes a cProfile of one `flow publish` of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KIT_SRC = REPO / "kits" / "flow-kit-cloudbuild" / "src"
TOKEN = "bench-token-0123456789"
GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b.invalid",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b.invalid"}
BUILD_JS = ("const fs = require('fs'); fs.mkdirSync('dist', {recursive: true});\n"
            "fs.writeFileSync('dist/app.js', 'console.log(1);\\n'); console.log('built');\n")
LINES_JS = ("const n = 200000; let out = [];\n"
            "for (let i = 1; i <= n; i++) { out.push('line ' + i); if (out.length === 1000) {"
            " process.stdout.write(out.join('\\n') + '\\n'); out = []; } }\n"
            "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a');\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=GIT_ENV)


def make_repo(path: Path, build_js: str, heavy: bool) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    pkg = {"name": "bench", "version": "1.0.0", "private": True, "scripts": {"build": "node build.js"}}
    lock = {"name": "bench", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "bench", "version": "1.0.0"}}}
    (path / "package.json").write_text(json.dumps(pkg))
    (path / "package-lock.json").write_text(json.dumps(lock))
    (path / "build.js").write_text(build_js)
    (path / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n')
    for i in range(40 if heavy else 1):
        (path / "data.bin").write_bytes(os.urandom(1024 * 1024 if heavy else 10))
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"c{i}")


class Watcher:
    """python-socketio client: collects messages per task, in seq order."""

    def __init__(self, url: str) -> None:
        import socketio

        self.sio = socketio.Client(reconnection=False)
        self.lock = threading.Lock()
        self.msgs: dict[str, dict[int, dict]] = {}
        self.final: dict[str, threading.Event] = {}
        self.sio.on("message", self.on_message)
        self.sio.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)

    def event(self, task_id: str) -> threading.Event:
        with self.lock:
            return self.final.setdefault(task_id, threading.Event())

    def on_message(self, msg: dict) -> None:
        with self.lock:
            self.msgs.setdefault(msg["meta"]["taskId"], {})[msg["meta"]["seq"]] = msg
        if msg["data"]["action"] in ("done", "failed", "cancelled", "timed-out"):
            self.event(msg["meta"]["taskId"]).set()

    def publish(self, url: str, *, cache: bool = False) -> str:
        """Submit a git publish; without ``cache`` the server's build and install caches are not
        read (``noCache``), so sections 1-5 time real builds as they did before the caches."""
        ack = self.sio.call("publish", {"name": "bench", "version": "1.0.0", "source": "git", "repo": url,
                                        "ref": "main", "buildCmd": ["npm", "run", "build"], "timeout": 600,
                                        "noCache": not cache},
                            timeout=30)
        assert ack["ok"], ack
        return ack["taskId"]

    def wait(self, task_id: str) -> list[dict]:
        assert self.event(task_id).wait(600), f"task {task_id} did not finish"
        while True:  # the final message can overtake earlier ones in the client's handler threads
            with self.lock:
                box = dict(self.msgs[task_id])
            if len(box) == max(box):
                return [box[k] for k in sorted(box)]
            time.sleep(0.01)

    def run(self, url: str, *, cache: bool = False) -> tuple[float, list[dict]]:
        t0 = time.perf_counter()
        msgs = self.wait(self.publish(url, cache=cache))
        return time.perf_counter() - t0, msgs


def raw_reader(url: str, repo_url: str) -> tuple[float, int]:
    """Publish and read the task's messages with a bare websocket (engine.io v4 framing), checking
    the order: the server's own rate, without a Socket.IO client library's per-message cost."""
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with connect(ws_url, max_size=None) as ws:
        ws.recv()
        ws.send("40" + json.dumps({"token": TOKEN}))
        ws.recv()
        t0 = time.perf_counter()
        ws.send("421" + json.dumps(["publish", {"name": "bench", "version": "1.0.0", "source": "git",
                                                "repo": repo_url, "ref": "main", "buildCmd": ["npm", "run", "build"],
                                                "noCache": True}]))
        expected, lines = 1, 0
        while True:
            frame = ws.recv()
            if frame == "2":
                ws.send("3")
            elif frame.startswith("42["):
                msg = json.loads(frame[2:])[1]
                assert msg["meta"]["seq"] == expected, (msg["meta"]["seq"], expected)
                expected += 1
                if msg["data"]["action"] == "log":
                    lines += sum(x.startswith("line ") for x in msg["data"]["payload"]["message"].split("\n"))
                if msg["data"]["action"] in ("done", "failed", "cancelled", "timed-out"):
                    assert msg["data"]["action"] == "done" and lines == 200_000, (msg, lines)
                    return time.perf_counter() - t0, expected - 1


EMPTY_JS = "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a');\n"


def install_flow(tmp: Path) -> dict[str, str]:
    """A throw-away FLOW_HOME with the kit installed (as a user's `flow buildkit add`); its env."""
    home = tmp / "flowhome"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "FLOW_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(FLOW_HOME=str(home), UV_OFFLINE="1", UV_CACHE_DIR=str(tmp / "uv-cache"), PIP_NO_INPUT="1",
               CI="true", NO_COLOR="1", COLUMNS="200")
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-m", "flowcore", "buildkit", "add", str(KIT_SRC.parent), "--no-index"],
                   cwd=tmp, env=env, check=True, capture_output=True)
    return env


def flow_publish(url: str, project: Path, env: dict[str, str],
                 profile: str | None = None) -> tuple[float, float, str]:
    """`flow publish` of ``project`` in its own process, its stdout a pipe read as it comes.

    Returns the seconds until it exited, the seconds of its build step as its output shows it
    (from the `==> build` line to the `==> publish` line, every build line printed between
    them: the build plus its log's way from the build's pipe to this terminal), and stdout.
    """
    pre = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "flowcore"] if profile else \
        [sys.executable, "-m", "flowcore"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*pre, "publish", "--server", url, "--token", TOKEN, "--source", "git",
                             "--build-cmd", "npm run build"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    out = bytearray()
    marks: dict[bytes, float] = {}
    while True:
        chunk = proc.stdout.read1(1 << 20)  # type: ignore[union-attr]
        if not chunk:
            break
        start = max(0, len(out) - 16)
        out += chunk
        for mark in (b"\n==> build", b"\n==> publish"):
            if mark not in marks and out.find(mark, start) >= 0:
                marks[mark] = time.perf_counter()
    code = proc.wait()
    elapsed = time.perf_counter() - t0
    reader.join()
    assert code == 0, err[0][-2000:]
    return elapsed, marks[b"\n==> publish"] - marks[b"\n==> build"], out.decode()


def lines_section(tmp: Path, base: Path, port: int, url: str, w: Watcher, env: dict[str, str],
                  args: argparse.Namespace) -> dict[str, float]:
    """200,000 lines: local build vs `flow publish`, the Watcher and a raw reader, alternating."""
    make_repo(base / "nolines", EMPTY_JS, heavy=False)
    lines_url, empty_url = (f"git://127.0.0.1:{port}/{n}" for n in ("lines", "nolines"))
    src, empty_src = tmp / "lines-local", tmp / "nolines-local"
    git(tmp, "clone", "-q", lines_url, str(src))
    git(tmp, "clone", "-q", empty_url, str(empty_src))
    flow_env = install_flow(tmp)
    expected = [f"build | line {i}" for i in range(1, 200_001)]
    times: dict[str, list[float]] = {}
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        t0 = time.perf_counter()
        local = subprocess.run(["npm", "run", "build"], cwd=src, capture_output=True, text=True, check=True)
        t_local = time.perf_counter() - t0
        assert local.stdout.count("\nline ") + local.stdout.startswith("line ") >= 199_999
        shutil.rmtree(src / "dist", ignore_errors=True)

        t_flow, t_step, out = flow_publish(url, src, flow_env)
        build_lines = [x for x in out.splitlines() if x.startswith("build | line ")]
        assert build_lines == expected, "flow publish: lines lost or out of order"
        t_empty, t_empty_step, _ = flow_publish(url, empty_src, flow_env)

        t0 = time.perf_counter()
        msgs = w.wait(w.publish(lines_url))
        t_watcher = time.perf_counter() - t0
        build_lines = [x for m in msgs if m["data"]["action"] == "log"
                       for x in m["data"]["payload"]["message"].split("\n") if x.startswith("line ")]
        assert msgs[-1]["data"]["action"] == "done", msgs[-1]
        assert build_lines == [f"line {i}" for i in range(1, 200_001)], "lines lost or out of order"
        t_raw, n_raw = raw_reader(url, lines_url)
        if r:
            for k, v in (("local", t_local), ("flow", t_flow), ("empty", t_empty), ("watcher", t_watcher),
                         ("raw", t_raw), ("step", t_step), ("empty_step", t_empty_step)):
                times.setdefault(k, []).append(v)
            times.setdefault("messages", []).append(len(msgs))
        print(f"  round {r}{' (warm-up)' if not r else ''}: local {t_local:.2f} s; flow publish {t_flow:.2f} s, "
              f"its build step {t_step:.2f} s (no lines: {t_empty:.2f} s, step {t_empty_step:.2f} s); watcher "
              f"{t_watcher:.2f} s, raw reader {t_raw:.2f} s, {len(msgs)} messages", flush=True)
    if args.profile_client:
        flow_publish(url, src, flow_env, profile=args.profile_client)
        print(f"  cProfile of one flow publish written to {args.profile_client}")
    m = {k: statistics.median(v) for k, v in times.items()}
    print(f"200,000 log lines: all arrived in order; medians of {args.rounds} alternating rounds:")
    print(f"  the build step as `flow publish` prints it (==> build .. ==> publish, every line printed): "
          f"{m['step']:.2f} s vs the local build {m['local']:.2f} s: ratio {m['step'] / m['local']:.2f}x")
    print(f"    (the same step printing no lines: {m['empty_step']:.2f} s, the sandbox and npm starting)")
    print(f"  the whole flow publish {m['flow']:.2f} s vs local build: ratio {m['flow'] / m['local']:.2f}x; "
          f"the same publish printing no lines {m['empty']:.2f} s, so the lines add {m['flow'] - m['empty']:.2f} s")
    print(f"  python-socketio Watcher {m['watcher']:.2f} s ({m['watcher'] / m['local']:.2f}x), raw engine.io "
          f"reader {m['raw']:.2f} s ({m['raw'] / m['local']:.2f}x); {m['messages']:.0f} messages")
    return {"lines_local_s": m["local"], "lines_build_step_s": m["step"],
            "ratio_lines_build_step": m["step"] / m["local"],
            "no_lines_build_step_s": m["empty_step"], "lines_publish_s": m["flow"],
            "ratio_lines": m["flow"] / m["local"], "lines_publish_no_lines_s": m["empty"],
            "lines_added_s": m["flow"] - m["empty"], "lines_watcher_s": m["watcher"],
            "ratio_lines_watcher": m["watcher"] / m["local"], "lines_raw_reader_s": m["raw"],
            "ratio_lines_raw_reader": m["raw"] / m["local"], "lines_messages": m["messages"]}


def by_hand(url: str, work: Path) -> float:
    """The same clone + install + build, typed into a shell."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "npm_config_audit": "false", "npm_config_fund": "false",
           "npm_config_update_notifier": "false", "npm_config_cache": str(work.parent / "hand-npm-cache")}
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", f"git clone -q {url} src && cd src && npm ci && npm run build"],
                   cwd=work, check=True, capture_output=True, env={**env, **{k: v for k, v in GIT_ENV.items()
                                                                          if k.startswith("GIT_CONFIG")}})
    return time.perf_counter() - t0


def start_server(data: Path, env: dict[str, str], *extra: str, offline: bool = True) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir",
                               str(data), "--concurrency", "4", "--max-builds-per-token", "4",
                               *(["--offline"] if offline else []), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = server.stdout.readline()  # type: ignore[union-attr]
    if "listening on" not in line:
        raise SystemExit(f"the server did not start: {line!r}")
    threading.Thread(target=server.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    url = line.rsplit(" ", 1)[1].strip()
    deadline = time.monotonic() + 20
    while True:  # ready when it answers /healthz (the port is bound before uvicorn serves it)
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return server, url
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"the server at {url} never answered /healthz")
        time.sleep(0.05)


def sandbox_cost(tmp: Path, base: Path, port: int, env: dict[str, str], rounds: int) -> dict[str, float]:
    """First publish, second publish and 200,000 lines: sandbox vs --no-sandbox, alternating."""
    servers = {name: start_server(tmp / f"data-{name}", env, *extra)
               for name, extra in (("sandbox", ()), ("none", ("--no-sandbox",)))}
    watchers = {name: Watcher(url) for name, (_, url) in servers.items()}
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for w in watchers.values():  # warm-up
            w.run(f"git://127.0.0.1:{port}/warm")
        for r in range(rounds):
            for name, w in watchers.items():
                make_repo(base / f"sb-{name}-{r}", BUILD_JS, heavy=True)
                repo_url = f"git://127.0.0.1:{port}/sb-{name}-{r}"
                for kind in ("first", "second"):
                    t, msgs = w.run(repo_url)
                    assert msgs[-1]["data"]["action"] == "done", msgs[-1]
                    times.setdefault((name, kind), []).append(t)
                t, msgs = w.run(f"git://127.0.0.1:{port}/lines")
                assert msgs[-1]["data"]["action"] == "done", msgs[-1]
                times.setdefault((name, "lines"), []).append(t)
    finally:
        for w in watchers.values():
            w.sio.disconnect()
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    out: dict[str, float] = {}
    print("the sandbox's cost (bubblewrap vs --no-sandbox, medians of alternating runs):")
    for kind in ("first", "second", "lines"):
        with_sb, without = (statistics.median(times[(n, kind)]) for n in ("sandbox", "none"))
        print(f"  {kind:6} publish: sandbox {with_sb * 1000:6.0f} ms, no sandbox {without * 1000:6.0f} ms,"
              f" ratio {with_sb / without:.2f}x")
        out.update({f"sandbox_{kind}_ms": with_sb * 1000, f"nosandbox_{kind}_ms": without * 1000,
                    f"ratio_sandbox_{kind}": with_sb / without})
    return out


# -- section 6: the build cache and the install cache ---------------------------------------------
SECTION_NAMES = {"build-cache": 6}  # --sections accepts these names too
KIT_TESTS = REPO / "kits" / "flow-kit-cloudbuild" / "tests"
CACHE_TOP = 8              # of them, the ones the site depends on directly (the rest are transitive)
CACHE_TARGETS = {"second": 0.05, "edit": 0.5}  # x the first publish of the same round
CACHE_MARKS = ("from cache", "install cache")  # log lines that say a cache was used (case-insensitive)
WORDS = ("alpha beta gamma delta render parse token value node tree cache build layout style state event "
         "queue merge patch diff scope frame chunk stream buffer index route match field point range").split()


def js_text(rng: random.Random, size: int, tag: str) -> str:
    """About ``size`` bytes of plain CommonJS (functions and exports) that node can load."""
    out = [f"'use strict';\n// {tag}: generated for the flow build-cache benchmark\n"]
    total, i = len(out[0]), 0
    while total < size:
        a, b = rng.sample(WORDS, 2)
        name = f"{a}{b.title()}{i}"
        chunk = (f"function {name}(input, options) {{\n"
                 f"  const {a} = (input || []).map((x, k) => x * {rng.randint(2, 97)} + k);\n"
                 f"  // {' '.join(rng.choices(WORDS, k=9))}\n"
                 f"  if (options && options.{b}) {{ return {a}.filter((x) => x % {rng.randint(2, 9)} === 0); }}\n"
                 f"  return {a}.reduce((s, x) => s + x, {rng.randint(0, 999)});\n}}\n"
                 f"exports.{name} = {name};\n\n")
        out.append(chunk)
        total += len(chunk)
        i += 1
    return "".join(out)


def cache_packages(where: Path, count: int) -> list[dict]:
    """``count`` tarballs written under ``where``: each an index.js that requires its
    dependencies, two lib/ modules of 2-20 KB and a README; package j >= CACHE_TOP is a dependency
    of one package below it (so every package is reachable from the site, depth ~7), plus a few
    more edges. Returns [{name, version, deps, file, integrity}] in index order."""
    sys.path.insert(0, str(KIT_TESTS))
    from npm_registry import integrity, pack

    rng = random.Random(23)
    names = [f"flow-bench-{rng.choice(WORDS)}-{i:03d}" for i in range(count)]
    deps: list[set[int]] = [set() for _ in names]
    for j in range(CACHE_TOP, count):
        deps[rng.randrange(j // 3, j)].add(j)
    for i in range(count - 1):
        deps[i].update(rng.sample(range(i + 1, count), min(rng.randint(0, 2), count - i - 1)))
    where.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        dep_names = [names[d] for d in sorted(deps[i])]
        index = ("'use strict';\nconst core = require('./lib/core.js');\nconst util = require('./lib/util.js');\n"
                 f"const deps = [{', '.join(repr(d) for d in dep_names)}].map((d) => require(d));\n"
                 "let all = null;\n"
                 f"exports.name = {name!r};\n"
                 "exports.all = function () {\n  if (all === null) {\n    all = new Set([exports.name]);\n"
                 "    for (const d of deps) for (const n of d.all()) all.add(n);\n  }\n  return all;\n};\n"
                 "exports.render = function () {\n"
                 "  return '/* ' + exports.name + ' */ ' + Object.keys(core).length + ':' + Object.keys(util).length;\n"
                 "};\n")
        files = {"index.js": index,
                 "lib/core.js": js_text(rng, rng.randint(2_000, 20_000), name),
                 "lib/util.js": js_text(rng, rng.randint(2_000, 10_000), name),
                 "README.md": f"# {name}\n\n" + " ".join(rng.choices(WORDS, k=rng.randint(150, 600))) + "\n"}
        spec = {d: "^1.0.0" for d in dep_names}
        data = pack(name, "1.0.0", files, spec)
        file = where / f"{name}-1.0.0.tgz"
        file.write_bytes(data)
        out.append({"name": name, "version": "1.0.0", "deps": spec, "file": str(file), "integrity": integrity(data)})
    return out


def serve_registry(manifest: Path) -> None:
    """(In its own process.) The tarballs of ``manifest`` on a StaticNpmRegistry; prints its URL,
    then, for each line read from stdin, how many tarball requests it has answered so far."""
    sys.path.insert(0, str(KIT_TESTS))
    from npm_registry import StaticNpmRegistry

    registry = StaticNpmRegistry()
    for p in json.loads(manifest.read_text()):
        registry.add_tarball(p["name"], p["version"], Path(p["file"]).read_bytes(), {"dependencies": p["deps"]})
    print(registry.url, flush=True)
    for _ in sys.stdin:  # ends when the benchmark closes the pipe
        print(sum(path.split("?", 1)[0].endswith(".tgz") for path, _ in list(registry.requests)), flush=True)


class CacheRegistry:
    """The synthetic packages on a loopback npm registry in a process of its own (in this process
    it would share the GIL with the benchmark's client), as bench_egress.RegistryProcess."""

    def __init__(self, where: Path, count: int) -> None:
        self.packages = cache_packages(where / "tarballs", count)
        (where / "registry.json").write_text(json.dumps(self.packages))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-registry", str(where / "registry.json")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the benchmark's npm registry did not start: {self.url!r}")
        self.host = self.url.removeprefix("http://").rstrip("/")  # 127.0.0.1:PORT, for --registry-host
        self.size = sum(Path(p["file"]).stat().st_size for p in self.packages)

    def fetched(self) -> int:
        """Tarballs the registry has served so far."""
        self.proc.stdin.write("\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return int(self.proc.stdout.readline())  # type: ignore[union-attr]

    def tarball_url(self, name: str, version: str) -> str:
        return f"{self.url.rstrip('/')}/{name}/-/{name}-{version}.tgz"

    def lock(self) -> dict:
        """package-lock.json v3 of the site: every package (transitive ones too) at the top of
        node_modules (one version each, so npm hoists them all), resolved to this registry."""
        top = {p["name"]: "^1.0.0" for p in self.packages[:CACHE_TOP]}
        packages: dict[str, dict] = {"": {"name": "bench", "version": "1.0.0", "dependencies": top}}
        for p in self.packages:
            entry = {"version": p["version"], "resolved": self.tarball_url(p["name"], p["version"]),
                     "integrity": p["integrity"]}
            if p["deps"]:
                entry["dependencies"] = p["deps"]
            packages[f"node_modules/{p['name']}"] = entry
        return {"name": "bench", "version": "1.0.0", "lockfileVersion": 3, "requires": True, "packages": packages}

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.terminate()
        self.proc.wait(10)


def cache_build_js(top: list[str], edit: int, count: int) -> str:
    """The site's build: requires the top packages (which require the rest), writes dist/."""
    return ("'use strict';\nconst fs = require('fs');\n"
            f"const BANNER = 'flow build-cache benchmark, edit {edit}';\n"
            f"const top = [{', '.join(f'require({n!r})' for n in top)}];\n"
            "const seen = new Set();\nfor (const m of top) for (const n of m.all()) seen.add(n);\n"
            f"if (seen.size !== {count}) {{\n"
            f"  console.error('expected {count} packages, found ' + seen.size); process.exit(1);\n}}\n"
            "fs.mkdirSync('dist/assets', {recursive: true});\n"
            "fs.writeFileSync('dist/index.html', '<!doctype html><title>bench</title><p>' + BANNER +\n"
            "  '</p><script src=\"assets/app.js\"></script><link rel=\"stylesheet\" href=\"assets/app.css\">\\n');\n"
            "fs.writeFileSync('dist/assets/app.js', top.map((m) => m.render()).join('\\n') + '\\n');\n"
            "fs.writeFileSync('dist/assets/app.css', 'body { font: 16px sans-serif; }\\n');\n"
            "fs.writeFileSync('dist/manifest.json', JSON.stringify({banner: BANNER, packages: [...seen].sort()}));\n"
            "console.log('built dist/ from ' + seen.size + ' packages');\n")


def make_cache_repo(path: Path, registry: CacheRegistry) -> None:
    """The site: package.json + package-lock.json (v3, every entry resolved to the loopback
    registry), an .npmrc naming that registry, build.js and flow.toml; one commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    lock = registry.lock()
    pkg = {"name": "bench", "version": "1.0.0", "private": True, "scripts": {"build": "node build.js"},
           "dependencies": lock["packages"][""]["dependencies"]}
    (path / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    (path / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    (path / ".npmrc").write_text(f"registry={registry.url}\n")
    top = [p["name"] for p in registry.packages[:CACHE_TOP]]
    (path / "build.js").write_text(cache_build_js(top, 0, len(registry.packages)))
    (path / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n')
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "site")


def edit_cache_repo(path: Path, edit: int) -> None:
    """One source line of build.js changed (its banner), committed; the lock file untouched."""
    js = path / "build.js"
    old = js.read_text()
    new = old.replace("edit 0';", f"edit {edit}';", 1)
    assert new != old and sum(a != b for a, b in zip(old.splitlines(), new.splitlines(), strict=True)) == 1
    js.write_text(new)
    git(path, "commit", "-q", "-am", f"edit {edit}")


def message_lines(msgs: list[dict]) -> list[str]:
    """Every line any message of the task carries (log output, step announcements, the end)."""
    out = []
    for m in msgs:
        payload = m["data"].get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            out.extend(payload["message"].split("\n"))
    return out


def cache_publish(w: Watcher, registry: CacheRegistry, repo_url: str, banner: str) -> dict:
    """One publish, timed from submitting it to its final message (Watcher.run); what its log
    says about the caches, the tarballs it fetched from the registry and its steps' times (from
    the messages' server timestamps); its dist/index.html checked to hold ``banner`` (a stale
    cache hit would serve the previous build)."""
    before = registry.fetched()
    t, msgs = w.run(repo_url, cache=True)
    fetched = registry.fetched() - before
    marks = [(m["data"]["action"], m["meta"]["timestamp"]) for m in msgs if m["data"]["action"] != "log"]
    steps = {a: (marks[i + 1][1] - ts) / 1000 for i, (a, ts) in enumerate(marks[:-1])}
    lines = message_lines(msgs)
    end = msgs[-1]["data"]
    if end["action"] != "done":
        raise SystemExit(f"build cache section: a publish ended {end['action']!r}:\n" + "\n".join(lines[-40:]))
    index = artifact_text(end["payload"], "index.html")
    if banner not in index:
        raise SystemExit(f"build cache section: dist/index.html does not say {banner!r} (a stale result?): "
                         f"{index[:300]!r}")
    return {"t": t, "marks": [x.strip() for x in lines if any(k in x.lower() for k in CACHE_MARKS)],
            "fetched": fetched, "steps": steps,
            "npm_ci": any(x.startswith("$ npm ci") for x in lines),
            "build": any(x.startswith("$ npm run build") for x in lines)}


def artifact_text(done: dict, name: str) -> str:
    """An artifact of a finished task, read from the URL its done message names."""
    [art] = [a for a in done["artifacts"] if a["name"] == name]
    with urllib.request.urlopen(art["url"], timeout=30) as resp:
        return resp.read().decode()


def describe(p: dict) -> str:
    said = "; ".join(repr(x[:160]) for x in p["marks"]) or "nothing about a cache"
    ran = ", ".join(w for w, yes in (("npm ci", p["npm_ci"]), ("the build", p["build"])) if yes) or "neither"
    steps = " ".join(f"{k} {v:.2f}" for k, v in p["steps"].items())
    return f"ran {ran}; {p['fetched']} tarballs fetched; steps (s): {steps}\n            log: {said}"


def median_steps(runs: list[dict]) -> str:
    """Each step's median seconds over the publishes that announced it (queued and prepare left out)."""
    steps = [s for p in runs for s in p["steps"] if s not in ("queued", "prepare")]
    order = list(dict.fromkeys(steps))
    return " ".join(f"{s} {statistics.median(p['steps'][s] for p in runs if s in p['steps']):.2f}" for s in order)


def cache_section(tmp: Path, base: Path, port: int, env: dict[str, str], rounds: int,
                  count: int) -> dict[str, float]:
    """First publish (cold: fresh data dir), the same source again, one line changed: per round
    a fresh server; medians and ratios against the first publish."""
    rounds = max(rounds, 1)
    registry = CacheRegistry(tmp / "cache-registry", count)
    names = ("first", "second", "edit")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        print(f"build cache: {len(registry.packages)} npm packages ({registry.size / 1e6:.1f} MB of tarballs) on "
              f"{registry.url}; git source; a fresh server data dir per round (sandbox on, --registry-host "
              f"{registry.host})", flush=True)
        for r in range(rounds + 1):  # round 0 warms up (node, npm, the registry) and is not counted
            make_cache_repo(base / f"cache-{r}", registry)
            repo_url = f"git://127.0.0.1:{port}/cache-{r}"
            server, url = start_server(tmp / f"data-cache-{r}", env, "--registry-host", registry.host, offline=False)
            w = None
            try:
                w = Watcher(url)
                got = {"first": cache_publish(w, registry, repo_url, "edit 0<")}
                if got["first"]["fetched"] < count:
                    raise SystemExit(f"build cache section: the first publish fetched {got['first']['fetched']} of "
                                     f"{count} tarballs from the registry: it was not cold")
                got["second"] = cache_publish(w, registry, repo_url, "edit 0<")
                edit_cache_repo(base / f"cache-{r}", 1)
                got["edit"] = cache_publish(w, registry, repo_url, "edit 1<")
            finally:
                if w is not None:
                    w.sio.disconnect()
                server.terminate()
                server.wait(30)
                shutil.rmtree(tmp / f"data-cache-{r}", ignore_errors=True)
            first = got["first"]["t"]
            print(f"  round {r}{' (warm-up)' if not r else ''}: first {first:.2f} s; same source "
                  f"{got['second']['t']:.2f} s ({got['second']['t'] / first:.3f}x); one line changed "
                  f"{got['edit']['t']:.2f} s ({got['edit']['t'] / first:.3f}x)", flush=True)
            for n in names:
                print(f"    {n:6}: {describe(got[n])}")
                if r:
                    runs[n].append(got[n])
    finally:
        registry.stop()
    med = {n: statistics.median(p["t"] for p in runs[n]) for n in names}
    print(f"build cache, medians of {rounds} rounds (wall time from submitting the publish to its final message):")
    print(f"  {f'first publish (cold: clone, npm ci of {count} packages, build)':62} {med['first'] * 1000:7.0f} ms")
    print(f"      steps (medians, s): {median_steps(runs['first'])}")
    out = {"cache_first_ms": med["first"] * 1000}
    for n, what in (("second", "same source again"), ("edit", "one line of build.js changed, lock unchanged")):
        ratio, target = med[n] / med["first"], CACHE_TARGETS[n]
        built_from = sum(any("from cache" in x.lower() for x in p["marks"]) for p in runs[n])
        reused = sum(any("install cache: reused" in x.lower() for x in p["marks"]) for p in runs[n])
        ci = sum(p["npm_ci"] for p in runs[n])
        built = sum(p["build"] for p in runs[n])
        print(f"  {what:62} {med[n] * 1000:7.0f} ms  ratio {ratio:.3f}x  target <= {target}x: "
              f"{'met' if ratio <= target else 'missed'}")
        k = len(runs[n])
        print(f"      log said 'from cache' in {built_from}/{k}, 'install cache: reused' in {reused}/{k}; "
              f"npm ci ran in {ci}/{k}, the build in {built}/{k}; steps (medians, s): {median_steps(runs[n])}")
        out.update({f"cache_{n}_ms": med[n] * 1000, f"ratio_cache_{n}": ratio,
                    f"cache_{n}_met": float(ratio <= target), f"cache_{n}_from_cache": float(built_from),
                    f"cache_{n}_install_reused": float(reused), f"cache_{n}_npm_ci_ran": float(ci)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sections", default="1,2,3,4,5,6",
                    help="comma separated, e.g. 3; build-cache is 6")
    ap.add_argument("--profile-client", metavar="FILE", help="cProfile one `flow publish` of section 3")
    ap.add_argument("--cache-packages", type=int, default=120, metavar="N",
                    help="npm packages in section 6's site (default 120, at least 8)")
    ap.add_argument("--serve-registry", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_registry:
        serve_registry(args.serve_registry)
        return 0
    if args.cache_packages < CACHE_TOP:
        ap.error(f"--cache-packages: at least {CACHE_TOP}")
    try:
        args.sections = {SECTION_NAMES.get(x.strip(), None) or int(x) for x in args.sections.split(",")}
    except ValueError:
        ap.error(f"--sections: numbers 1-6 or names ({', '.join(SECTION_NAMES)}), comma separated")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cloudbuild-"))
    base = tmp / "git"
    base.mkdir()
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                               f"--port={port}", "--reuseaddr", str(base)], stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PYTHONPATH=str(KIT_SRC))
    env.update(FLOW_CLOUDBUILD_TOKENS=TOKEN)
    server, url = start_server(tmp / "data", env)
    results: dict[str, float] = {}
    try:
        w = Watcher(url)
        # warm-up: node, npm and the server's imports
        make_repo(base / "warm", BUILD_JS, heavy=False)
        w.run(f"git://127.0.0.1:{port}/warm")

        # 1 + 2: first publish (cold mirror) vs by hand; second publish vs first
        firsts, seconds, hands = [], [], []
        for r in range(args.rounds if {1, 2} & args.sections else 0):
            make_repo(base / f"p{r}", BUILD_JS, heavy=True)
            repo_url = f"git://127.0.0.1:{port}/p{r}"
            hands.append(by_hand(repo_url, tmp / "hand"))
            t, msgs = w.run(repo_url)
            assert msgs[-1]["data"]["action"] == "done", msgs[-1]
            firsts.append(t)
            t, msgs = w.run(repo_url)
            assert msgs[-1]["data"]["action"] == "done", msgs[-1]
            seconds.append(t)
        if firsts:
            hand, first, second = (statistics.median(x) for x in (hands, firsts, seconds))
            print(f"publish, first (cold mirror)      median {first * 1000:7.0f} ms")
            print(f"by hand: git clone + npm ci + build  median {hand * 1000:7.0f} ms")
            print(f"  ratio publish / by hand: {first / hand:.2f}x")
            print(f"publish, second (unchanged)       median {second * 1000:7.0f} ms")
            print(f"  ratio second / first: {second / first:.2f}x")
            results.update(first_ms=first * 1000, by_hand_ms=hand * 1000, second_ms=second * 1000,
                           ratio_publish_vs_hand=first / hand, ratio_second_vs_first=second / first)

        # 3: 200,000 lines (section 5 builds this repository too)
        make_repo(base / "lines", LINES_JS, heavy=False)
        if 3 in args.sections:
            results.update(lines_section(tmp, base, port, url, w, env, args))

        # 4: 20 concurrent publishes, concurrency 4
        if 4 in args.sections:
            make_repo(base / "many", BUILD_JS, heavy=False)
            many_url = f"git://127.0.0.1:{port}/many"
            t_one, _ = w.run(many_url)
            t0 = time.perf_counter()
            ids = [w.publish(many_url) for _ in range(20)]
            ends = [w.wait(t)[-1]["data"]["action"] for t in ids]
            t_all = time.perf_counter() - t0
            assert ends == ["done"] * 20, ends
            assert len(set(ids)) == 20
            print(f"20 concurrent publishes (--concurrency 4): all 20 done in {t_all:.1f} s; one alone {t_one:.2f} s")
            print(f"  ratio wall / (20/4 x one): {t_all / (5 * t_one):.2f}x")
            results.update(concurrent_20_s=t_all, one_s=t_one, ratio_concurrent=t_all / (5 * t_one))
        w.sio.disconnect()

        # 5: the sandbox's cost
        if 5 in args.sections:
            results.update(sandbox_cost(tmp, base, port, env, args.rounds))

        # 6: the build cache and the install cache (its own servers: sandboxed, not offline)
        if 6 in args.sections:
            results.update(cache_section(tmp, base, port, env, args.rounds, args.cache_packages))
    finally:
        server.terminate()
        server.wait(30)
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
        print("RESULT " + json.dumps({k: round(v, 3) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
