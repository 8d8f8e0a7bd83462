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

4. Scale-out of builds that wait (`--sections scale`): a build that prints a line every 0.1 s
   for 2 s (`sh build.sh`, standing in for a network-bound install), uploaded and run in the
   bubblewrap sandbox, through 2 gateways and 1, 2, 4, 8 workers of `--concurrency 1`; every
   task is followed by the client that submitted it (half the tasks through each gateway).
   It reports throughput (tasks/s, and vs 1 worker), and the coordination cost per task and
   per log line: Redis commands and bytes (`INFO commandstats` / `INFO stats` deltas over the
   batch, with the idle rate of the same processes measured just before) and gateway CPU
   (`/proc/<pid>/stat` utime+stime) per followed task. A variant whose build prints nothing
   gives the per-line share. docs/cloud-build.md ("Sizing a build farm") turns these figures
   into a model of a many-machine deployment.
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
sys.path.insert(0, str(REPO / "kits" / "flow-kit-cloudbuild" / "tests"))

from cloudbuild_redis_support import secret_file  # noqa: E402 - the deployment's --secret-file

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


def start_server(data: Path, *args: str, config: dict | None = None) -> tuple[subprocess.Popen, str]:
    data.mkdir(parents=True, exist_ok=True)
    cfg = data.parent / f"{data.name}.json"
    cfg.write_text(json.dumps(config or {"offline": True, "checks": []}))
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
                                         "--max-builds-per-token", str(workers), "--max-pending-uploads", str(N))
                procs.append(proc)
            else:
                port = free_port()
                (base / "redis").mkdir(parents=True)
                redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly",
                                          "no", "--bind", "127.0.0.1", "--dir", str(base / "redis")],
                                         stdout=subprocess.DEVNULL)
                wait_port(port)
                common = ["--redis-url", f"redis://127.0.0.1:{port}/0", "--shared-dir", str(base / "shared"),
                          "--secret-file", str(secret_file(base)),  # shared by the deployment
                          "--max-builds-per-token", str(workers),  # the one bench token may use every slot
                          "--max-pending-uploads", str(N)]  # and upload the whole batch before publishing it
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



# -- 4: scale-out of builds that wait ----------------------------------------------------------
SLEEP_LINES = 20  # lines per build, one every 0.1 s: 2 s of waiting
SLEEP_SH = ("i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo \"fetching dependency $i of {n}\"; sleep {pause}; done\n"
            "mkdir -p dist; echo built > dist/app.txt\n")


def sleep_tar(lines: int) -> bytes:
    script = SLEEP_SH.format(n=lines, pause=0.1) if lines else "sleep 2; mkdir -p dist; echo built > dist/app.txt\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("build.sh")
        info.size = len(script.encode())
        tf.addfile(info, io.BytesIO(script.encode()))
    return buf.getvalue()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_counters(client) -> dict[str, float]:
    stats, cmds, cpu = client.info("stats"), client.info("commandstats"), client.info("cpu")
    out = {"commands": float(stats["total_commands_processed"]), "bytes_in": float(stats["total_net_input_bytes"]),
           "bytes_out": float(stats["total_net_output_bytes"]),
           "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
           "usec": float(sum(v["usec"] for v in cmds.values()))}
    for name, value in cmds.items():
        out["cmd:" + name.removeprefix("cmdstat_")] = float(value["calls"])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def follow_batch(gateways: list[str], n: int, body: bytes) -> tuple[float, int]:
    """Submit n tasks at once, half through each gateway, each followed by its submitter."""
    import socketio

    lock = threading.Lock()
    finals: dict[str, str] = {}
    lines = [0]
    all_done = threading.Event()
    clients = []
    for url in gateways:
        sio = socketio.Client(reconnection=False, websocket_extra_options={"skip_utf8_validation": True})

        def on_message(msg: dict) -> None:
            with lock:
                if msg["data"]["action"] == "log":
                    lines[0] += msg["data"]["payload"].get("lines", 1)
                elif msg["data"]["action"] in ("done", "failed", "cancelled", "timed-out"):
                    finals[msg["meta"]["taskId"]] = msg["data"]["action"]
                    if len(finals) == n:
                        all_done.set()
        sio.on("message", on_message)
        sio.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
        clients.append(sio)
    uploads = [(i % len(gateways), upload(gateways[i % len(gateways)], body)) for i in range(n)]
    start = time.perf_counter()
    for which, up in uploads:
        ack = clients[which].call("publish", {"name": "bench", "version": "1.0.0", "source": "upload",
                                              "uploadId": up, "buildCmd": ["sh", "build.sh"], "timeout": 120})
        assert ack["ok"], ack
    if not all_done.wait(900):
        raise RuntimeError(f"only {len(finals)} of {n} tasks finished")
    elapsed = time.perf_counter() - start
    for sio in clients:
        sio.disconnect()
    bad = [v for v in finals.values() if v != "done"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} tasks did not succeed: {bad[:3]}")
    return elapsed, lines[0]


def scale_run(tmp: Path, workers: int, n: int, lines: int) -> dict[str, float]:
    """2 gateways + ``workers`` workers of concurrency 1 on a fresh redis-server: one batch of n."""
    import redis as redis_lib

    base = tmp / f"scale-{workers}-{lines}-{time.monotonic_ns()}"
    procs: list[subprocess.Popen] = []
    port = free_port()
    (base / "redis").mkdir(parents=True)
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--bind", "127.0.0.1", "--dir", str(base / "redis")], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        common = ["--redis-url", f"redis://127.0.0.1:{port}/0", "--shared-dir", str(base / "shared"),
                  "--secret-file", str(secret_file(base)),  # shared by the deployment
                  "--max-builds-per-token", "64", "--max-pending-uploads", "1000"]
        config = {"offline": True, "checks": [], "build-commands": [["sh", "build.sh"]]}
        gateways = []
        for g in range(2):
            proc, url = start_server(base / f"gateway{g}", *common, "--role", "gateway", config=config)
            procs.append(proc)
            gateways.append((proc, url))
        for i in range(workers):
            procs.append(start_server(base / f"worker{i}", *common, "--role", "worker", "--concurrency", "1",
                                      config=config)[0])
        r = redis_lib.Redis(port=port)
        gw_pids = [p.pid for p, _ in gateways]
        # the idle rate of this very deployment (heartbeats, blocked reads), to subtract
        time.sleep(1.0)
        idle0, idle_cpu0, idle_t0 = redis_counters(r), sum(map(cpu_seconds, gw_pids)), time.perf_counter()
        time.sleep(3.0)
        idle = delta(redis_counters(r), idle0)
        idle_gw_cpu = sum(map(cpu_seconds, gw_pids)) - idle_cpu0
        idle_s = time.perf_counter() - idle_t0
        body = sleep_tar(lines)
        before, cpu0, t0 = redis_counters(r), sum(map(cpu_seconds, gw_pids)), time.perf_counter()
        elapsed, got_lines = follow_batch([url for _, url in gateways], n, body)
        used = delta(redis_counters(r), before)
        window = time.perf_counter() - t0
        gw_cpu = sum(map(cpu_seconds, gw_pids)) - cpu0
        r.close()
    finally:
        stop(procs)
        server.terminate()
        server.wait(10)
    if lines:
        assert got_lines >= n * lines, (got_lines, n * lines)
    # what coordination used beyond the same deployment idling for as long
    net = {k: used[k] - idle.get(k, 0.0) * window / idle_s for k in used}
    out = {"elapsed_s": elapsed, "tasks_per_s": n / elapsed, "idle_commands_per_s": idle["commands"] / idle_s,
           "commands_per_task": net["commands"] / n, "bytes_per_task": (net["bytes_in"] + net["bytes_out"]) / n,
           "bytes_in_per_task": net["bytes_in"] / n, "bytes_out_per_task": net["bytes_out"] / n,
           "gateway_cpu_ms_per_task": (gw_cpu - idle_gw_cpu * window / idle_s) / n * 1000, "log_lines": got_lines,
           "idle_gateway_cpu_ms_per_s": idle_gw_cpu / idle_s * 1000,
           "redis_cpu_ms_per_task": net["cpu_s"] / n * 1000, "redis_cmd_ms_per_task": net["usec"] / n / 1000,
           "idle_redis_cpu_ms_per_s": idle["cpu_s"] / idle_s * 1000}
    out["top_commands"] = sorted(((k[4:], v / n) for k, v in net.items() if k.startswith("cmd:") and v / n >= 0.5),
                                 key=lambda kv: -kv[1])[:8]
    return out


def scale_section(tmp: Path, reps: int) -> dict[str, float]:
    results: dict[str, float] = {}
    runs: dict[int, list[dict]] = {}
    worker_counts = (1, 2, 4, 8)
    for rep in range(reps):  # alternate the worker counts within each rep
        for workers in worker_counts:
            n = max(8, 4 * workers)
            run = scale_run(tmp, workers, n, SLEEP_LINES)
            runs.setdefault(workers, []).append(run)
            print(f"  rep {rep} {workers} worker(s): {n} tasks in {run['elapsed_s']:.2f} s "
                  f"({run['tasks_per_s']:.2f} tasks/s)", flush=True)
    quiet = [scale_run(tmp, 8, 32, 0) for _ in range(max(1, reps // 2))]
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "top_commands"} for w, rs in runs.items()}
    base = med[1]["tasks_per_s"]
    print(f"scale-out: builds that wait 2 s, 2 gateways, workers of --concurrency 1 (medians of {reps}):")
    print(f"  {'workers':>7} {'tasks/s':>8} {'vs 1':>6} {'cmds/task':>10} {'bytes/task':>11} {'gw CPU ms/task':>15}"
          f" {'Redis CPU ms/task':>18} {'of it in commands':>18}")
    for w in worker_counts:
        m = med[w]
        print(f"  {w:7d} {m['tasks_per_s']:8.2f} {m['tasks_per_s'] / base:5.2f}x {m['commands_per_task']:10.0f} "
              f"{m['bytes_per_task']:11.0f} {m['gateway_cpu_ms_per_task']:15.1f} {m['redis_cpu_ms_per_task']:18.2f}"
              f" {m['redis_cmd_ms_per_task']:18.2f}")
        results.update({f"scale_{w}w_tasks_per_s": m["tasks_per_s"], f"scale_{w}w_vs_1": m["tasks_per_s"] / base,
                        f"scale_{w}w_commands_per_task": m["commands_per_task"],
                        f"scale_{w}w_bytes_per_task": m["bytes_per_task"],
                        f"scale_{w}w_gateway_cpu_ms_per_task": m["gateway_cpu_ms_per_task"],
                        f"scale_{w}w_redis_cpu_ms_per_task": m["redis_cpu_ms_per_task"],
                        f"scale_{w}w_redis_cmd_ms_per_task": m["redis_cmd_ms_per_task"]})
    q = {k: statistics.median(r[k] for r in quiet) for k in quiet[0] if k != "top_commands"}
    loud = med[8]
    per_line_cmds = (loud["commands_per_task"] - q["commands_per_task"]) / SLEEP_LINES
    per_line_bytes = (loud["bytes_per_task"] - q["bytes_per_task"]) / SLEEP_LINES
    per_line_cpu = (loud["gateway_cpu_ms_per_task"] - q["gateway_cpu_ms_per_task"]) / SLEEP_LINES
    print(f"  the same 8-worker batch with builds that print nothing: {q['commands_per_task']:.0f} commands, "
          f"{q['bytes_per_task']:.0f} bytes, {q['gateway_cpu_ms_per_task']:.1f} ms gateway CPU per task")
    per_line_in = (loud["bytes_in_per_task"] - q["bytes_in_per_task"]) / SLEEP_LINES
    per_line_out = (loud["bytes_out_per_task"] - q["bytes_out_per_task"]) / SLEEP_LINES
    print(f"  so per log line (one message each, followed by one client): {per_line_cmds:.1f} commands, "
          f"{per_line_bytes:.0f} bytes ({per_line_in:.0f} into Redis, {per_line_out:.0f} out of it: pub/sub sends "
          f"each message to both gateways), {per_line_cpu:.2f} ms gateway CPU")
    per_line_redis = (loud["redis_cpu_ms_per_task"] - q["redis_cpu_ms_per_task"]) / SLEEP_LINES
    print(f"    and {per_line_redis:.3f} ms Redis CPU; without lines a task costs Redis "
          f"{q['redis_cpu_ms_per_task']:.2f} ms CPU")
    print(f"  idle deployment: {med[8]['idle_commands_per_s']:.1f} Redis commands/s "
          f"({med[8]['idle_redis_cpu_ms_per_s']:.2f} ms Redis CPU/s) with 8 workers + 2 gateways, "
          f"{med[1]['idle_commands_per_s']:.1f} with 1 worker; the 2 idle gateways use "
          f"{med[8]['idle_gateway_cpu_ms_per_s']:.1f} ms CPU/s")
    print("  commands per task (8 workers, last rep): "
          + ", ".join(f"{k} {v:.1f}" for k, v in runs[8][-1]["top_commands"]))
    results.update(scale_quiet_commands_per_task=q["commands_per_task"], scale_quiet_bytes_per_task=q["bytes_per_task"],
                   scale_quiet_gateway_cpu_ms_per_task=q["gateway_cpu_ms_per_task"],
                   scale_commands_per_log_line=per_line_cmds, scale_bytes_per_log_line=per_line_bytes,
                   scale_gateway_cpu_ms_per_log_line=per_line_cpu,
                   scale_redis_cpu_ms_per_log_line=per_line_redis,
                   scale_bytes_in_per_log_line=per_line_in, scale_bytes_out_per_log_line=per_line_out,
                   scale_quiet_bytes_in_per_task=q["bytes_in_per_task"],
                   scale_quiet_bytes_out_per_task=q["bytes_out_per_task"],
                   scale_idle_gateway_cpu_ms_per_s=med[8]["idle_gateway_cpu_ms_per_s"],
                   scale_quiet_redis_cpu_ms_per_task=q["redis_cpu_ms_per_task"],
                   scale_idle_redis_cpu_ms_per_s_8w=med[8]["idle_redis_cpu_ms_per_s"],
                   scale_idle_commands_per_s_8w=med[8]["idle_commands_per_s"],
                   scale_idle_commands_per_s_1w=med[1]["idle_commands_per_s"])
    return results

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sections", default="throughput,scale", help="throughput, scale or both (comma separated)")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if not (shutil.which("redis-server") and shutil.which("npm")):
        print("needs redis-server and npm")
        return 1
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cb-redis-") as tmp:
        tmp_path = Path(tmp)
        if "throughput" in sections:
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
            out.update(embedded_2_s=emb, redis_2x1_s=r2, redis_4x1_s=r4, ratio_redis2_vs_embedded=emb / r2,
                       ratio_redis4_vs_redis2=r2 / r4)
        if "scale" in sections:
            out.update(scale_section(tmp_path, args.reps))
        print(f"cores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")
    print("RESULT " + json.dumps({k: round(v, 3) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
