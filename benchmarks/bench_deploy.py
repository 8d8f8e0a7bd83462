"""Deployments (issue 19): how soon a build's URL answers, and how fast a deployment serves.

One command (`.venv/bin/python benchmarks/bench_deploy.py`) starts a real server on loopback
(local store, offline) and a real `git daemon`, then:

1. **Build end -> URL answering** (``--rounds``): publishes a small site; as soon as the publish
   is acknowledged a poller asks ``http://<deployment>.localhost:<port>/`` (127.0.0.1 with that
   Host header) every millisecond. Reported: from the ``done`` message's server timestamp, and
   from the start of the publish step (the build command just ended: storing, recording and the
   final message included), to the first 200. Target: <= 100 ms from the build's end.
2. **Requests per second** for a 10 KB asset (``assets/app-<hash>.js``) from the deployment vs
   ``python -m http.server`` serving the same files, 20 concurrent clients for ``--seconds``
   each, ``--runs`` interleaved runs. The load comes from a separate process (asyncio, one
   connection per client, kept alive when the server allows it, as browsers do; http.server
   speaks HTTP/1.0 and closes each). Target: deployment / http.server >= 1.0x.

Prints medians and ``RESULT {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cloudbuild import KIT_SRC, TOKEN, Watcher, free_port, git, start_server  # noqa: E402

ASSET = "assets/app-4f2a9c1b.js"
SITE = {
    "index.html": '<!doctype html><link rel="stylesheet" href="/assets/app.css">'
                  f'<script type="module" src="/{ASSET}"></script><div id="app"></div>\n',
    ASSET: ("document.getElementById('app').textContent = 'hi';\n// ").ljust(10_239, "x") + "\n",  # 10 KB
    "assets/app.css": "#app { color: rgb(1, 2, 3); }\n",
}
BUILD_JS = ("const fs = require('fs'); fs.cpSync('site', 'dist', {recursive: true});"
            " console.log('built');\n")


def make_site_repo(path: Path) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    pkg = {"name": "bench-site", "version": "1.0.0", "private": True, "scripts": {"build": "node build.js"}}
    lock = {"name": "bench-site", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "bench-site", "version": "1.0.0"}}}
    (path / "package.json").write_text(json.dumps(pkg))
    (path / "package-lock.json").write_text(json.dumps(lock))
    (path / "build.js").write_text(BUILD_JS)
    write_site(path / "site")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "site")


def write_site(root: Path) -> None:
    for name, text in SITE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def get(port: int, host: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def first_answer(port: int, host: str, stop: threading.Event, out: list[float]) -> None:
    """Poll until the deployment answers 200; record the wall time it did."""
    while not stop.is_set():
        try:
            if get(port, host, "/") == 200:
                out.append(time.time())
                return
        except OSError:
            pass
        time.sleep(0.001)


def latency(w: Watcher, repo_url: str, port: int, rounds: int) -> dict[str, float]:
    from_done, from_build = [], []
    for _ in range(rounds):
        task_id = w.publish(repo_url)
        stop, seen = threading.Event(), []
        poller = threading.Thread(target=first_answer, args=(port, f"{task_id}.localhost:{port}", stop, seen))
        poller.start()
        msgs = w.wait(task_id)
        assert msgs[-1]["data"]["action"] == "done", msgs[-1]
        poller.join(10)
        stop.set()
        assert seen, "the deployment never answered"
        done_at = msgs[-1]["meta"]["timestamp"] / 1000
        publish_at = next(m["meta"]["timestamp"] for m in msgs if m["data"]["action"] == "publish") / 1000
        from_done.append((seen[0] - done_at) * 1000)
        from_build.append((seen[0] - publish_at) * 1000)
    done_ms, build_ms = statistics.median(from_done), statistics.median(from_build)
    print(f"URL answering after the done message   median {done_ms:7.1f} ms  (max {max(from_done):.1f})")
    print(f"URL answering after the build's end    median {build_ms:7.1f} ms  (max {max(from_build):.1f}; "
          "publish step, record, final message included)")
    return {"answer_after_done_ms": done_ms, "answer_after_build_end_ms": build_ms}


# -- the load generator (run as a separate process: --load) ----------------------------------
async def _client(host: str, port: int, header_host: str, path: str, until: float, counts: list[int]) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {header_host}\r\nUser-Agent: bench\r\n\r\n".encode()
    reader = writer = None
    while time.monotonic() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            ok = lines[0].split(" ")[1] == "200" and len(body) == 10_240
            counts[0 if ok else 1] += 1
            if lines[0].startswith("HTTP/1.0") or headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            counts[1] += 1
            writer = None
    if writer is not None:
        writer.close()


async def _load(host: str, port: int, header_host: str, path: str, seconds: float, clients: int) -> dict:
    counts = [0, 0]
    until = time.monotonic() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(host, port, header_host, path, until, counts) for _ in range(clients)))
    return {"ok": counts[0], "errors": counts[1], "seconds": time.perf_counter() - t0}


def load(port: int, header_host: str, path: str, seconds: float, clients: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", str(port), header_host, path, str(seconds),
                          str(clients)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def rps(port: int, task_id: str, tmp: Path, seconds: float, runs: int, clients: int) -> dict[str, float]:
    files = tmp / "static"
    write_site(files)
    static_port = free_port()
    static = subprocess.Popen([sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1",
                               "--directory", str(files)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if get(static_port, f"127.0.0.1:{static_port}", "/" + ASSET) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("python -m http.server did not start")
            time.sleep(0.05)
        host = f"{task_id}.localhost:{port}"
        assert get(port, host, "/" + ASSET) == 200
        ours, theirs = [], []
        for _ in range(runs):  # interleaved, so a change in the machine's load hits both
            got = load(port, host, "/" + ASSET, seconds, clients)
            assert got["errors"] == 0, got
            ours.append(got["ok"] / got["seconds"])
            got = load(static_port, f"127.0.0.1:{static_port}", "/" + ASSET, seconds, clients)
            assert got["errors"] == 0, got
            theirs.append(got["ok"] / got["seconds"])
    finally:
        static.terminate()
        static.wait()
    a, b = statistics.median(ours), statistics.median(theirs)
    for who, median, each in (("deployment", a, ours), ("http.server", b, theirs)):
        print(f"10 KB asset, {clients} clients: {who:<11} median {median:7.0f} req/s  "
              f"(runs {', '.join(f'{x:.0f}' for x in each)})")
    print(f"  ratio deployment / http.server: {a / b:.2f}x")
    return {"deploy_rps": a, "http_server_rps": b, "ratio_deploy_vs_http_server": a / b}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7, help="publishes timed for the URL's first answer")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of load per run")
    ap.add_argument("--runs", type=int, default=3, help="interleaved load runs per server")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--load", nargs=5, metavar=("PORT", "HOST", "PATH", "SECONDS", "CLIENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        port, header_host, path, seconds, clients = args.load
        print(json.dumps(asyncio.run(_load("127.0.0.1", int(port), header_host, path, float(seconds), int(clients)))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    base = tmp / "git"
    base.mkdir()
    git_port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                               f"--port={git_port}", "--reuseaddr", str(base)], stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PYTHONPATH=str(KIT_SRC), FLOW_CLOUDBUILD_TOKENS=TOKEN)
    server, url = start_server(tmp / "data", env)
    port = int(url.rsplit(":", 1)[1])
    results: dict[str, float] = {}
    try:
        make_site_repo(base / "site")
        repo_url = f"git://127.0.0.1:{git_port}/site"
        w = Watcher(url)
        warm = w.wait(w.publish(repo_url))  # warm-up: node, npm, the server's imports
        assert warm[-1]["data"]["action"] == "done", warm[-1]
        results.update(latency(w, repo_url, port, args.rounds))
        task_id = warm[-1]["meta"]["taskId"]
        results.update(rps(port, task_id, tmp, args.seconds, args.runs, args.clients))
        w.sio.disconnect()
    finally:
        server.terminate()
        server.wait()
        daemon.terminate()
        daemon.wait()
    print("RESULT " + json.dumps({k: round(v, 3) for k, v in results.items()}))
    ok = results["answer_after_build_end_ms"] <= 100 and results["ratio_deploy_vs_http_server"] >= 1.0
    if not ok:
        print("target missed: URL answering <= 100 ms after the build's end, rps >= 1.0x http.server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
