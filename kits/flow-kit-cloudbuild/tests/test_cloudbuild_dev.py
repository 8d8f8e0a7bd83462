"""`flow dev` (flow-kit-cloudbuild) in a real Chromium: open the page, edit the source, the page
reloads by itself and shows the new text; a broken edit shows the overlay while the last good
build stays served; errors that stop `flow dev` before it serves are one line with the fix.

Chromium is Debian's (`/usr/bin/chromium`, installed by .ci/run) driven by Playwright for
Python; Playwright's own browser download is not possible here.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cloudbuild_publish_support import needs_node
from cloudbuild_server_support import CHROMIUM

pytestmark = [needs_node,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")]


class Dev:
    """A running `flow dev`, its stderr read line by line."""

    def __init__(self, flow, project: Path, *args: str) -> None:
        self.proc = flow.popen("dev", *args, cwd=project)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 60) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no line with {text!r}; saw {got[-20:]}"
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"flow dev exited {self.proc.returncode}: {got[-20:]}"
                continue
            self.seen.append(line)
            got.append(line)
            if text in line:
                return got

    @property
    def url(self) -> str:
        for line in self.seen:
            m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"no URL printed: {self.seen}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def site(flow, tmp_path) -> Path:
    created = flow("create", "dev-site", "-k", "flow-kit-cloudbuild", "-t", "static-site", "--defaults",
                   cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return tmp_path / "dev-site"


def test_the_page_reloads_by_itself_and_a_broken_build_shows_an_overlay(flow, site, browser):
    index = site / "src" / "index.html"
    dev = Dev(flow, site, "--port", "0")
    try:
        dev.until("watching for changes")
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(dev.url)
        page.wait_for_function("() => document.querySelector('h1').textContent === 'dev-site'")
        # wait until the live channel is open, so the reload below is the page's own doing
        page.wait_for_function("() => window.__flowDev && window.__flowDev.open")
        page.evaluate("window.__marker = 'before-reload'")

        index.write_text(index.read_text().replace("<h1>", "<h1 id=t>").replace("dev-site</h1>", "Hello live</h1>"))
        lines = dev.until("watching for changes")
        assert "src/index.html changed" in lines and any(x.startswith("rebuilt in ") for x in lines), lines
        page.wait_for_function("() => document.querySelector('h1').textContent === 'Hello live'", timeout=15000)
        assert page.evaluate("window.__marker") is None  # a new document: the page reloaded

        # A broken build: the build script throws. The overlay shows; the old page stays.
        build_js = site / "build.js"
        good = build_js.read_text()
        build_js.write_text("throw new Error('<b>broken on purpose</b>');\n" + good)
        lines = dev.until("watching for changes")
        assert any("build failed" in x and "last good build stays served" in x for x in lines), lines
        page.wait_for_selector("#flow-dev-overlay", timeout=15000)
        overlay = page.text_content("#flow-dev-overlay")
        assert "broken on purpose" in overlay and "<b>broken on purpose</b>" in overlay  # text, not HTML
        assert page.text_content("h1") == "Hello live"
        with urllib.request.urlopen(dev.url) as r:  # and a fresh load still gets the last good build
            assert b"Hello live" in r.read()

        build_js.write_text(good)  # fixed: the overlay goes and the page is current again
        dev.until("watching for changes")
        page.wait_for_function("() => !document.getElementById('flow-dev-overlay')", timeout=15000)
        assert dialogs == []
        page.close()
    finally:
        assert dev.stop() == 130  # Ctrl-C ends it cleanly


def test_only_html_gets_the_live_reload_script(flow, site):
    dev = Dev(flow, site, "--port", "0")
    try:
        dev.until("watching for changes")
        with urllib.request.urlopen(dev.url) as r:
            html = r.read()
        with urllib.request.urlopen(dev.url + "style.css") as r:
            css = r.read()
        assert html.count(b'src="/__flow/live.js"') == 1 and html.index(b"/__flow/live.js") < html.index(b"</body>")
        assert b"__flow" not in css and css == (site / "src" / "style.css").read_bytes()
    finally:
        dev.stop()
    no_live = Dev(flow, site, "--port", "0", "--no-live")
    try:
        no_live.until("watching for changes")
        with urllib.request.urlopen(no_live.url) as r:
            assert b"__flow" not in r.read()
    finally:
        no_live.stop()


def _get(port: int, path: str, host: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_only_requests_for_localhost_are_served(flow, site):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 would read the
    unreleased site and its build errors; its requests carry ``Host: evil.example``."""
    dev = Dev(flow, site, "--port", "0")
    try:
        dev.until("watching for changes")
        port = int(dev.url.rsplit(":", 1)[1].strip("/"))
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}",
                     f"localhost:{port + 1}", ""):
            for path in ("/", "/__flow/events", "/__flow/live.js"):
                status, body = _get(port, path, host)
                assert status == 403, (host, path, status)
                assert b"dev-site" not in body and len(body) < 300 and b"Host" in body
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            status, body = _get(port, "/", host)
            assert status == 200 and b"dev-site" in body, host
    finally:
        dev.stop()


def test_a_taken_port_and_a_missing_build_script_are_one_line_errors(flow, site):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = flow("dev", "--port", str(port), cwd=site, timeout=60)
    assert r.returncode != 0
    [line] = r.stderr.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line
    package = json.loads((site / "package.json").read_text())
    package["scripts"] = {}
    (site / "package.json").write_text(json.dumps(package))
    r = flow("dev", "--port", "0", cwd=site, timeout=60)
    assert r.returncode != 0
    [line] = r.stderr.strip().splitlines()
    assert "package.json has no 'build' script" in line and "scripts" in line


def test_the_default_port_moves_to_the_next_free_one(flow, site):
    default = 8000  # flow_kit_cloudbuild.client.dev.DEFAULT_PORT
    holders = []
    try:
        for port in range(default, default + 2):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
            except OSError:
                s.close()
                continue
            holders.append(s)
        dev = Dev(flow, site)
        try:
            dev.until("watching for changes")
            port = int(dev.url.rsplit(":", 1)[1].strip("/"))
            assert port > default and port not in [h.getsockname()[1] for h in holders]
        finally:
            dev.stop()
    finally:
        for h in holders:
            h.close()

