"""flow-cloudbuild-server in Redis mode: throughput of 40 small publishes.

One command (`.venv/bin/python benchmarks/bench_cloudbuild_redis.py [--reps 3]`) compares, all
on loopback with real processes and a real `redis-server` (no persistence):

1. embedded server, `--concurrency 2` (the one-machine default);
2. Redis mode: 1 gateway + 2 workers of `--concurrency 1` (same build slots as 1.);
3. Redis mode: 1 gateway + 4 workers of `--concurrency 1`.

Each run submits 40 publishes of a small npm project (uploaded source, `npm run build`) at
once through one client and measures the wall time until every task is done (median of the
reps). The ratios say what Redis mode costs per build slot (2. / 1.) and what adding workers
buys on this machine (3. / 2.); on a 2-core machine 4 workers share the same 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KIT_SRC = REPO / "kits" / "flow-kit-cloudbuild" / "src"
TOKEN = "bench-token-0123456789"
N = 40
BUILD_JS = ("const fs = require('fs'); fs.mkdirSync('dist', {recursive: true});\n"
            "fs.writeFileSync('dist/app.js', 'console.log(1);\\n'); console.log('built');\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_tar() -> bytes:
    pkg = {"name": "bench", "version": "1.0.0", "private": True, "scripts": {"build": "node build.js"}}
    lock = {"name": "bench", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "bench", "version": "1.0.0"}}}
    files = {"package.json": json.dumps(pkg), "package-lock.json": json.dumps(lock), "build.js": BUILD_JS}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tf.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def start_server(data: Path, *args: str) -> tuple[subprocess.Popen, str]:
    data.mkdir(parents=True, exist_ok=True)
    cfg = data.parent / f"{data.name}.json"
    cfg.write_text(json.dumps({"offline": True, "checks": []}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "FLOW_CLOUDBUILD"))}
    env["PYTHONPATH"] = str(KIT_SRC)
    env["FLOW_CLOUDBUILD_TOKENS"] = TOKEN  # one token: it may use every build slot, as before
    proc = subprocess.Popen([sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0",
                             "--data-dir", str(data), "--config", str(cfg), *args],
                            stdout=subprocess.PIPE, stderr=open(data.parent / f"{data.name}.log", "wb"),
                            text=True, env=env)
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"server did not start: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    url = line.rsplit(" ", 1)[1].strip()
    deadline = time.monotonic() + 20
    while True:  # the port is bound before uvicorn listens: wait until it answers
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("server never became healthy") from None
            time.sleep(0.05)


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def upload(url: str, body: bytes) -> str:
    req = urllib.request.Request(url + "/api/uploads", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["uploadId"]


def run_batch(url: str) -> float:
    """Submit N publishes at once; seconds until all are done."""
    import socketio

    done: dict[str, str] = {}
    all_done = threading.Event()
    lock = threading.Lock()
    sio = socketio.Client(reconnection=False)

    def on_message(msg: dict) -> None:
        if msg["data"]["action"] in ("done", "failed", "cancelled", "timed-out"):
            with lock:
                done[msg["meta"]["taskId"]] = msg["data"]["action"]
                if len(done) == N:
                    all_done.set()
    sio.on("message", on_message)
    sio.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
    body = project_tar()
    uploads = [upload(url, body) for _ in range(N)]
    start = time.perf_counter()
    for up in uploads:
        ack = sio.call("publish", {"name": "bench", "version": "1.0.0", "source": "upload", "uploadId": up,
                                   "buildCmd": ["npm", "run", "build"], "prod": False, "force": False})
        assert ack["ok"], ack
    if not all_done.wait(600):
        raise RuntimeError(f"only {len(done)} of {N} tasks finished")
    elapsed = time.perf_counter() - start
    sio.disconnect()
    bad = [s for s in done.values() if s != "done"]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not succeed: {bad[:3]}")
    return elapsed


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def measure(tmp: Path, mode: str, workers: int, reps: int) -> list[float]:
    times = []
    for rep in range(reps):
        base = tmp / f"{mode}-{workers}-{rep}"
        procs: list[subprocess.Popen] = []
        redis = None
        try:
            if mode == "embedded":
                proc, url = start_server(base / "server", "--concurrency", str(workers),
                                         "--max-builds-per-token", str(workers))
                procs.append(proc)
            else:
                port = free_port()
                (base / "redis").mkdir(parents=True)
                redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly",
                                          "no", "--bind", "127.0.0.1", "--dir", str(base / "redis")],
                                         stdout=subprocess.DEVNULL)
                wait_port(port)
                common = ["--redis-url", f"redis://127.0.0.1:{port}/0", "--shared-dir", str(base / "shared"),
                          "--max-builds-per-token", str(workers)]  # the one bench token may use every slot
                proc, url = start_server(base / "gateway", *common, "--role", "gateway")
                procs.append(proc)
                for i in range(workers):
                    procs.append(start_server(base / f"worker{i}", *common, "--role", "worker",
                                              "--concurrency", "1")[0])
            times.append(run_batch(url))
        finally:
            stop(procs)
            if redis is not None:
                redis.terminate()
                redis.wait(10)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if not (shutil.which("redis-server") and shutil.which("npm")):
        print("needs redis-server and npm")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-cb-redis-") as tmp:
        tmp_path = Path(tmp)
        results = {}
        for label, mode, workers in (("embedded, concurrency 2", "embedded", 2),
                                     ("redis, 2 workers x 1", "redis", 2),
                                     ("redis, 4 workers x 1", "redis", 4)):
            times = measure(tmp_path, mode, workers, args.reps)
            results[label] = statistics.median(times)
            print(f"{label:28s} {N} publishes: median {results[label]:.2f} s "
                  f"({N / results[label]:.1f} publishes/s; runs {', '.join(f'{t:.2f}' for t in times)})")
        emb, r2, r4 = results.values()
        print(f"throughput redis 2x1 / embedded 2: {emb / r2:.2f}")
        print(f"throughput redis 4x1 / redis 2x1:  {r2 / r4:.2f}")
        print(f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
