"""Watch mode: how long from saving a file to the new output, against running the build by hand.

One command (`.venv/bin/python benchmarks/bench_watch.py`), in a fresh FLOW_HOME with this
repo's kits installed offline:

1. static site (`flow create -t static-site`), `flow dev`: file written -> the new text served
   over HTTP, and -> the reloaded page in Chromium (when Debian's chromium and Playwright are
   there); baseline: `npm run build` run by hand in the same project;
2. Python library (`flow create -t library`), `flow build --watch`: file written -> a new wheel
   on disk; baseline: `flow build` run by hand.

Each figure is the median of --rounds edits; the watch figures include the 200 ms debounce.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOW = [sys.executable, "-m", "flowcore"]


def env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    e.update(FLOW_HOME=str(home), UV_OFFLINE="1", PIP_NO_INDEX="1", FLOW_OFFLINE="1",
             FLOW_NO_UPDATE_CHECK="1")
    return e


def flow(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*FLOW, *args], cwd=cwd, env=env(home), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"flow {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r


class Watching:
    def __init__(self, home: Path, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen([*FLOW, *args], cwd=cwd, env=env(home), text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.cond = threading.Condition()
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, count: int, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(text in x for x in self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"timed out waiting for {text!r}: {self.lines[-10:]}")
                self.cond.wait(left)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def wait_until(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.005)


def bench_site(home: Path, work: Path, rounds: int) -> dict[str, float]:
    flow(home, "create", "site", "-k", "flow-kit-cloudbuild", "-t", "static-site", "--defaults", cwd=work)
    site = work / "site"
    index = site / "src" / "index.html"
    by_hand = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(["npm", "run", "build"], cwd=site, capture_output=True, check=True)
        by_hand.append(time.perf_counter() - t0)
    w = Watching(home, ["dev", "--port", "0"], site)
    browser = page = None
    served, reloaded = [], []
    try:
        w.wait_for(1, "watching for changes")
        url = next(m.group(1) for x in w.lines if (m := re.search(r"at (http://\S+/)", x)))
        try:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => window.__flowDev && window.__flowDev.open")
        except Exception as exc:  # noqa: BLE001 - no browser here: report the HTTP figure only
            print(f"(no browser figure: {type(exc).__name__}: {str(exc)[:80]})")
            page = None
        for r in range(rounds):
            text = f"edit {r}"
            t0 = time.perf_counter()
            index.write_text(index.read_text().split("<!--edit-->")[0] + f"<!--edit--><p id=e>{text}</p>\n")

            def fresh(text: str = text) -> bool:
                with urllib.request.urlopen(url) as resp:
                    return text.encode() in resp.read()
            wait_until(fresh)
            served.append(time.perf_counter() - t0)
            if page is not None:
                page.wait_for_function(f"() => (document.getElementById('e') || {{}}).textContent === {text!r}")
                reloaded.append(time.perf_counter() - t0)
            w.wait_for(r + 2, "watching for changes")
    finally:
        if browser is not None:
            browser.close()
        w.stop()
    hand = statistics.median(by_hand)
    out = {"site_by_hand_ms": hand * 1000, "site_served_ms": statistics.median(served) * 1000,
           "ratio_site_served": statistics.median(served) / hand}
    print(f"static site: npm run build by hand {hand * 1000:6.0f} ms; save -> new page served "
          f"{out['site_served_ms']:6.0f} ms ({out['ratio_site_served']:.2f}x)")
    if reloaded:
        out.update(site_reloaded_ms=statistics.median(reloaded) * 1000,
                   ratio_site_reloaded=statistics.median(reloaded) / hand)
        print(f"  save -> reloaded tab in Chromium {out['site_reloaded_ms']:6.0f} ms "
              f"({out['ratio_site_reloaded']:.2f}x)")
    return out


def bench_library(home: Path, work: Path, rounds: int) -> dict[str, float]:
    flow(home, "create", "lib", "-k", "flow-kit-python", "-t", "library", "--defaults", cwd=work)
    lib = work / "lib"
    init = next((lib / "src").glob("*/__init__.py"))
    by_hand = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        flow(home, "build", cwd=lib)
        by_hand.append(time.perf_counter() - t0)
    w = Watching(home, ["build", "--watch"], lib)
    rebuilt = []
    try:
        w.wait_for(1, "watching for changes")
        wheel = next((lib / "dist").glob("*.whl"))
        for r in range(rounds):
            before = wheel.stat().st_mtime_ns
            t0 = time.perf_counter()
            init.write_text(init.read_text() + f"\nEDIT_{r} = {r}\n")
            wait_until(lambda before=before: wheel.exists() and wheel.stat().st_mtime_ns != before)
            rebuilt.append(time.perf_counter() - t0)
            w.wait_for(r + 2, "watching for changes")
    finally:
        w.stop()
    hand = statistics.median(by_hand)
    out = {"lib_by_hand_ms": hand * 1000, "lib_rebuilt_ms": statistics.median(rebuilt) * 1000,
           "ratio_lib_rebuilt": statistics.median(rebuilt) / hand}
    print(f"python library: flow build by hand {hand * 1000:6.0f} ms; save -> new wheel "
          f"{out['lib_rebuilt_ms']:6.0f} ms ({out['ratio_lib_rebuilt']:.2f}x)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    home = tmp / "flowhome"
    flow(home, "buildkit", "add", str(REPO / "kits" / "flow-kit-python"), "--no-index", cwd=tmp)
    flow(home, "buildkit", "add", str(REPO / "kits" / "flow-kit-cloudbuild"), "--no-index", cwd=tmp)
    results: dict[str, float] = {}
    results.update(bench_site(home, tmp, args.rounds))
    results.update(bench_library(home, tmp, args.rounds))
    print("RESULT " + json.dumps({k: round(v, 3) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
