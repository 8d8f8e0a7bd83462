"""The build dashboard with a 200,000-line log: the browser vs the CLI client on the same task.

One command (`.venv/bin/python benchmarks/bench_dashboard.py`) starts a real server on loopback
(offline) and a real `git daemon`, publishes a build printing 200,000 lines, and then, for
``--rounds`` interleaved rounds on that finished task:

* the CLI client (``flow_kit_cloudbuild.client.session.Session``, what ``flow publish --attach``
  runs): time to the first log line, and to the final message (every line received);
* the dashboard in Chromium (Playwright, ``/usr/bin/chromium``), signed in: time from opening
  the task page to its first log line on screen, to the whole log loaded, and to scroll to the
  end; the longest gap between two animation frames while it loads (a frozen tab shows up here);
  the tab's JS heap and DOM node count afterwards (CDP ``Performance.getMetrics``).

Also once: the same on the *running* task (the page opened while the build prints).
Prints medians and the ratios browser / CLI, then ``RESULT {...}``.

First (no browser needed): the task list API on a server whose data dir holds 10,000 finished
tasks against one holding 100, the same requests interleaved (first page, a filtered page, a page
deep in the list): "a server with 10,000 tasks stays fast" as a ratio, not as a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cloudbuild import KIT_SRC, free_port, git, start_server  # noqa: E402

sys.path.insert(0, str(KIT_SRC))
TOKEN = "bench-token-0123456789"
CHROMIUM = "/usr/bin/chromium"
LINES = 200_000
BIG_JS = ("const n = %d; let out = [];\n"
          "for (let i = 1; i <= n; i++) { out.push('line ' + i); if (out.length === 1000) {"
          " process.stdout.write(out.join('\\n') + '\\n'); out = []; } }\n"
          "setTimeout(() => { require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a'); }, %d);\n")


def give_up_after(t0: float, seconds: float, what: str) -> None:
    """End the run when a polled condition has not held ``seconds`` after ``t0`` (perf_counter)."""
    if time.perf_counter() - t0 > seconds:
        raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}")


def make_repo(path: Path, build_js: str) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    pkg = {"name": "bench", "version": "1.0.0", "private": True, "scripts": {"build": "node build.js"}}
    lock = {"name": "bench", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "bench", "version": "1.0.0"}}}
    (path / "package.json").write_text(json.dumps(pkg))
    (path / "package-lock.json").write_text(json.dumps(lock))
    (path / "build.js").write_text(build_js)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "c")


def cli_follow(url: str, task_id: str) -> tuple[float, float, int]:
    """(s to the first log line, s to the final message, log lines) through the CLI's Session."""
    from flow_kit_cloudbuild.client.session import Session

    seen = {"first": None, "lines": 0}
    t0 = time.perf_counter()
    session = Session(url, TOKEN, notify=lambda _t: None)
    try:
        session.connect()
        session.attach(task_id, 0)

        def on_message(msg: dict) -> None:
            if msg["data"]["action"] == "log":
                if seen["first"] is None:
                    seen["first"] = time.perf_counter() - t0
                seen["lines"] += msg["data"]["payload"]["message"].count("\n") + 1
        session.follow(task_id, on_message, 0)
        return seen["first"], time.perf_counter() - t0, seen["lines"]
    finally:
        session.close()


def login_cookie(url: str) -> str:
    req = urllib.request.Request(url + "/ui/api/login", data=json.dumps({"token": TOKEN}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Origin": url})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]


def browser_open(browser, url: str, task_id: str, cookie: str, want_last: str) -> dict[str, float]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_cookies([{"name": "flowcb_session", "value": cookie, "url": url, "httpOnly": True, "sameSite": "Strict"}])
    page = ctx.new_page()
    page.add_init_script("""window.__gaps = []; (function tick(t0) { requestAnimationFrame((t) => {
        if (t0) window.__gaps.push(t - t0); tick(t); }); })();""")
    try:
        t0 = time.perf_counter()
        page.goto(f"{url}/tasks/{task_id}")
        # the first *log* line: the step headers come before it
        while not page.evaluate("window.__flowLog && window.__flowLog.kinds.indexOf(0) >= 0 && "
                                "document.querySelector('#log-rows .log-row') !== null"):
            give_up_after(t0, 120, "the first log line in the browser")
            time.sleep(0.005)
        first = time.perf_counter() - t0
        while not page.evaluate(f"window.__flowLog.lines.indexOf({json.dumps(want_last)}) >= 0"):
            give_up_after(t0, 600, "the last log line in the browser")
            time.sleep(0.02)
        loaded = time.perf_counter() - t0
        scroll = page.evaluate("""async () => {
            const s = document.getElementById('log'); const t0 = performance.now();
            s.scrollTop = 0; await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            s.scrollTop = s.scrollHeight; await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            return performance.now() - t0; }""")
        assert want_last in page.locator("#log-rows .log-row .tx").all_text_contents()
        gap = page.evaluate("Math.max(...window.__gaps)")
        cdp = ctx.new_cdp_session(page)
        cdp.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        lines = page.evaluate("window.__flowLog.lines.length")
        return {"first": first, "loaded": loaded, "scroll_ms": scroll, "gap_ms": gap,
                "heap_mb": metrics.get("JSHeapUsedSize", 0) / 2 ** 20, "nodes": metrics.get("Nodes", 0),
                "lines": lines}
    finally:
        ctx.close()


def seed_tasks(data: Path, count: int) -> None:
    """``count`` finished tasks of TOKEN written into a data dir as the file store keeps them
    (what a server that has run that many builds holds); the dashboard indexes them at start."""
    from flow_kit_cloudbuild import protocol

    tasks = data / "tasks"
    tasks.mkdir(parents=True)
    owner = protocol.token_hash(TOKEN)
    now = int(time.time() * 1000) - 10_000_000
    for i in range(count):
        task_id = f"{i:024x}"
        state = ["done", "failed"][i % 2]
        rec = {"taskId": task_id, "name": f"proj{i % 7}", "version": f"1.0.{i}", "state": state,
               "step": "publish", "createdAt": now + i * 1000, "startedAt": now + i * 1000 + 200,
               "finishedAt": now + i * 1000 + 900, "prod": i % 3 == 0, "artifacts": [], "error": None,
               "tokenHash": owner, "request": {"source": "upload"}, "attempt": 1}
        d = tasks / task_id
        d.mkdir()
        (d / "task.json").write_text(json.dumps(rec))
        msgs = [protocol.make_message(task_id, 1, "log", "hello", step="build", stream="stdout", lines=1),
                protocol.make_message(task_id, 2, state, "over", step="build")]
        (d / "messages.jsonl").write_text("".join(json.dumps(m, separators=(",", ":")) + "\n" for m in msgs))


def task_list(tmp: Path, env: dict[str, str], rounds: int) -> dict[str, float]:
    """The task list API with 10,000 tasks vs 100, interleaved; medians in ms and the ratios."""
    sizes = (100, 10_000)
    servers = {}
    for n in sizes:
        seed_tasks(tmp / f"list-{n}", n)
        servers[n] = start_server(tmp / f"list-{n}", env)
    queries = {"first page": "limit=50", "filtered": "limit=20&project=proj3&state=failed",
               "deep page": "limit=50&cursor={deep}"}
    samples: dict[tuple[int, str], list[float]] = {(n, q): [] for n in sizes for q in queries}
    try:
        cookies = {n: login_cookie(url) for n, (_, url) in servers.items()}
        deep = {}
        for n, (_, url) in servers.items():  # the cursor of the page just past the middle
            page = get_json(url, f"limit={n // 2}", cookies[n])
            deep[n] = page["next"]
            # what is timed below is real: full pages, the filter applied
            assert len(get_json(url, "limit=50", cookies[n])["tasks"]) == 50
            assert len(get_json(url, queries["deep page"].format(deep=deep[n]), cookies[n])["tasks"]) == 50
            found = get_json(url, queries["filtered"], cookies[n])["tasks"]
            assert found and all(t["name"] == "proj3" and t["state"] == "failed" for t in found), found
        for _ in range(rounds * 10 + 1):
            for n, (_, url) in servers.items():
                for name, query in queries.items():
                    t0 = time.perf_counter()
                    get_json(url, query.format(deep=deep[n]), cookies[n])
                    samples[(n, name)].append((time.perf_counter() - t0) * 1000)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    out: dict[str, float] = {}
    print(f"task list API, medians of {rounds * 10} interleaved rounds (the first one dropped):")
    for name in queries:
        small, big = (statistics.median(samples[(n, name)][1:]) for n in sizes)
        print(f"  {name:<10}  100 tasks {small:6.2f} ms   10,000 tasks {big:6.2f} ms   ratio {big / small:5.2f}x")
        key = name.replace(" ", "_")
        out.update({f"list_{key}_100_ms": small, f"list_{key}_10000_ms": big,
                    f"ratio_list_{key}_10000_vs_100": big / small})
    return out


def get_json(url: str, query: str, cookie: str) -> dict:
    req = urllib.request.Request(f"{url}/ui/api/tasks?{query}", headers={"Cookie": f"flowcb_session={cookie}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PYTHONPATH=str(KIT_SRC), FLOW_CLOUDBUILD_TOKENS=TOKEN)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-list-"))
    try:
        results = task_list(tmp, env, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results.update(in_the_browser(env, args.rounds))
    print("RESULT " + json.dumps({k: round(v, 3) for k, v in results.items()}))
    return 0


def in_the_browser(env: dict[str, str], rounds: int) -> dict[str, float]:
    """The 200,000-line log in Chromium against the CLI client (the module docs); nothing when
    Playwright, Chromium or npm is missing."""
    try:
        import playwright.sync_api as pw
    except ImportError:
        print("bench_dashboard: the browser part skipped (pip install playwright)")
        return {}
    if not Path(CHROMIUM).exists() or shutil.which("npm") is None:
        print("bench_dashboard: the browser part skipped (needs /usr/bin/chromium and npm)")
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    base = tmp / "git"
    base.mkdir()
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                               f"--port={port}", "--reuseaddr", str(base)], stderr=subprocess.DEVNULL)
    server, url = start_server(tmp / "data", env)
    results: dict[str, float] = {}
    from flow_kit_cloudbuild.client.session import Session

    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            cookie = login_cookie(url)
            make_repo(base / "big", BIG_JS % (LINES, 1))
            make_repo(base / "running", BIG_JS % (LINES, 20_000))
            session = Session(url, TOKEN, notify=lambda _t: None)
            session.connect()
            payload = {"name": "bench", "version": "1.0.0", "source": "git", "repo": f"git://127.0.0.1:{port}/big",
                       "ref": "main", "buildCmd": ["npm", "run", "build"], "timeout": 600}
            task_id = session.publish(payload)
            final = session.follow(task_id, lambda m: None, 0)
            assert final["data"]["action"] == "done", final
            session.close()

            cli, web = [], []
            for r in range(rounds):  # interleaved; the first round warms both up
                c = cli_follow(url, task_id)
                b = browser_open(browser, url, task_id, cookie, f"line {LINES}")
                assert c[2] >= LINES and b["lines"] >= LINES, (c, b)
                if r or rounds == 1:
                    cli.append(c)
                    web.append(b)
            cli_first = statistics.median(c[0] for c in cli)
            cli_all = statistics.median(c[1] for c in cli)
            med = {k: statistics.median(b[k] for b in web) for k in web[0]}
            print(f"finished task, {LINES:,} lines ({len(web)} rounds, medians):")
            print(f"  CLI client (Session):  first log line {cli_first * 1000:6.0f} ms   "
                  f"whole log {cli_all:5.2f} s")
            print(f"  dashboard (Chromium):  first log line {med['first'] * 1000:6.0f} ms   "
                  f"whole log {med['loaded']:5.2f} s"
                  f"   scroll to end {med['scroll_ms']:.0f} ms   worst frame gap {med['gap_ms']:.0f} ms")
            print(f"  tab: JS heap {med['heap_mb']:.1f} MiB, {med['nodes']:.0f} DOM nodes")
            print(f"  ratio browser / CLI: first line {med['first'] / cli_first:.2f}x, whole log "
                  f"{med['loaded'] / cli_all:.2f}x")
            results.update(cli_first_line_ms=cli_first * 1000, cli_whole_log_s=cli_all,
                           browser_first_line_ms=med["first"] * 1000, browser_whole_log_s=med["loaded"],
                           browser_scroll_to_end_ms=med["scroll_ms"], browser_worst_frame_gap_ms=med["gap_ms"],
                           browser_js_heap_mib=med["heap_mb"], browser_dom_nodes=med["nodes"],
                           ratio_first_line=med["first"] / cli_first, ratio_whole_log=med["loaded"] / cli_all)

            # the running task: open the page while the build prints
            session = Session(url, TOKEN, notify=lambda _t: None)
            session.connect()
            running = session.publish({**payload, "repo": f"git://127.0.0.1:{port}/running"})
            seen: list[int] = []
            import threading

            follower = threading.Thread(target=lambda: session.follow(running, lambda m: seen.append(1), 0),
                                        daemon=True)
            follower.start()
            started = time.perf_counter()
            while len(seen) < 3:  # queued, prepare, ...: the build has started
                give_up_after(started, 120, "the running task's first messages")
                time.sleep(0.01)
            b = browser_open(browser, url, running, cookie, f"line {LINES}")
            print(f"running task: first log line {b['first'] * 1000:.0f} ms after opening; all {LINES:,} lines "
                  f"{b['loaded']:.2f} s; worst frame gap {b['gap_ms']:.0f} ms")
            results.update(running_first_line_ms=b["first"] * 1000, running_whole_log_s=b["loaded"],
                           running_worst_frame_gap_ms=b["gap_ms"])
            follower.join(120)
            session.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
