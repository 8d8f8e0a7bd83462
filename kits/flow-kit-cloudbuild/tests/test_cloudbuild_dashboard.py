"""The build dashboard in a real browser (Chromium through Playwright) against the real server on
loopback: sign-in, the live log (in order, whole after a reload, ANSI colours), cancel from the
page, ownership, hostile log lines, project names and published pages, a 200,000-line log, the
task list with 10,000 tasks, and Redis mode with a gateway killed under the page.

FLOW_UPDATE_SCREENSHOTS=1 writes the screenshots docs/cloud-build.md shows (docs/images/)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from cloudbuild_server_support import (
    CHROMIUM,
    OTHER_TOKEN,
    REPO,
    TOKEN,
    Client,
    ServerProc,
    http_get,
    http_request,
    new_repo,
    npm_project,
    protocol,
)

try:
    import playwright.sync_api as pw
except ImportError:  # pragma: no cover - .ci/run installs it
    pw = None

pytestmark = [
    pytest.mark.skipif(pw is None, reason="the dashboard tests need playwright (pip install playwright; .ci/run does)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="the dashboard tests need /usr/bin/chromium (apt-get install chromium; .ci/run does)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="the builds are npm projects"),
]
SCREENSHOTS = os.environ.get("FLOW_UPDATE_SCREENSHOTS") == "1"
IMAGES = REPO / "docs" / "images"

HOSTILE_LINE = "<img src=x onerror=alert(1)>"
HOSTILE_HTML = ("<!doctype html><title>site</title><h1 id=h>published</h1>"
                "<img src=x onerror=\"alert('img')\">"
                "<script>alert('script');fetch('/ui/api/tasks',{credentials:'include'})"
                ".then(r=>r.text()).then(t=>{document.title='LEAK '+t;alert('leak')});</script>")
SLOW_JS = """const fs = require('fs');
console.log('\\x1b[31mred text\\x1b[0m and \\x1b[1;32mbold green\\x1b[0m');
console.log(HOSTILE);
let i = 0;
const t = setInterval(() => {
  i += 1; console.log('slow line ' + i);
  if (i >= %d) { clearInterval(t); fs.mkdirSync('dist/site', {recursive: true});
    fs.copyFileSync('page.html', 'dist/index.html'); fs.writeFileSync('dist/site/app.js', 'x');
    console.log('build done'); }
}, %d);
"""
BIG_JS = """let n = %d, out = [];
for (let i = 1; i <= n; i++) {
  out.push('big line ' + i);
  if (out.length === 5000) { process.stdout.write(out.join('\\n') + '\\n'); out = []; }
}
if (out.length) process.stdout.write(out.join('\\n') + '\\n');
setTimeout(() => {
  require('fs').mkdirSync('dist', {recursive: true}); require('fs').writeFileSync('dist/x.txt', 'x');
}, %d);
"""


def slow_files(name: str = "demo", lines: int = 40, interval_ms: int = 60) -> dict[str, str]:
    files = npm_project(name=name, scripts={"build": "node build.js", "slow": "node slow.js", "big": "node big.js"})
    files["slow.js"] = (SLOW_JS % (lines, interval_ms)).replace("HOSTILE", json.dumps(HOSTILE_LINE))
    files["page.html"] = HOSTILE_HTML
    return files


def git_payload(url: str, cmd: str = "slow", **extra) -> dict:
    p = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
         "buildCmd": ["npm", "run", cmd], "prod": False, "force": False, "timeout": 300}
    p.update(extra)
    return p


def start(client: Client, payload: dict) -> str:
    ack = client.publish(**payload)
    assert ack["ok"], ack
    return ack["taskId"]


def expected_lines(msgs: list[dict]) -> list[str]:
    """What the page's log holds for these messages (the CLI's view of the same task)."""
    out = []
    for m in msgs:
        action, payload = m["data"]["action"], m["data"]["payload"]
        if action == protocol.ACTION_LOG:
            out += protocol.log_lines(m)
        else:
            out.append(f"==> {action}: {payload.get('message', '')}")
    return out


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return got


def strip_ansi(lines: list[str]) -> list[str]:
    import re

    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]


# -- the browser ------------------------------------------------------------------------------------
class Tab:
    """A browser context (its own cookies) with one page; remembers every dialog it opened."""

    def __init__(self, browser, base: str) -> None:
        self.base = base
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.ctx.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self, token: str = TOKEN) -> Tab:
        self.page.goto(self.base + "/")
        self.page.fill("#token", token)
        self.page.click("#signin")
        self.page.wait_for_selector("#tasks")
        return self

    def log(self) -> list[str]:
        return self.page.evaluate("window.__flowLog ? window.__flowLog.lines.slice() : []")

    def wait_log(self, predicate, timeout: float = 60, what: str = "log") -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {lines[-5:]}")
            time.sleep(0.05)

    def wait_final(self, timeout: float = 120) -> list[str]:
        self.page.wait_for_selector("#live:text('finished')", timeout=timeout * 1000)
        return self.log()

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def tab(browser, server):
    t = Tab(browser, server.url)
    yield t
    t.close()


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=False)


# -- sign-in, live log, reload ----------------------------------------------------------------------
def test_sign_in_and_a_running_builds_lines_appear_live_in_order(tab, server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=40, interval_ms=80))
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        tab.sign_in()
        tab.page.wait_for_selector(f"tr[data-task='{task_id}']")
        tab.page.click(f"tr[data-task='{task_id}'] a.task-link")
        tab.page.wait_for_url(f"**/tasks/{task_id}")
        seen = tab.wait_log(lambda ls: "slow line 5" in ls, what="slow line 5")
        assert "slow line 40" not in seen, "the lines must arrive while the build runs"
        assert tab.page.text_content("#live") == "● live"
        shot(tab.page, "dashboard-task-running.png")
        lines = tab.wait_final()
        msgs = client.wait(task_id)
    assert strip_ansi(expected_lines(msgs)) == lines  # every line once, in seq order
    # ANSI colours are rendered as classes, not as escape characters
    red = tab.page.locator("#log-rows .fg1", has_text="red text")
    assert red.count() == 1
    assert tab.page.locator("#log-rows .fg2.ab", has_text="bold green").count() == 1
    # the step timeline, the artifacts (index page first), the CLI command
    steps = tab.page.locator("#timeline li")
    assert [steps.nth(i).get_attribute("data-step") for i in range(6)] == protocol.STEPS
    assert all("tl-ok" in (steps.nth(i).get_attribute("class") or "") for i in range(6))
    first = tab.page.locator("#artifacts ul.artifacts li a").first
    assert first.text_content() == "index.html"
    assert tab.page.text_content("#attach-cmd") == f"flow publish --attach {task_id}"
    # the preview is the deployment at its own origin, not the JSON file list
    assert tab.page.locator("#site-url").get_attribute("href").startswith(f"http://{task_id}.localhost:")
    assert "Preview URL" in tab.page.text_content("#artifacts")
    # the search box narrows the log to matching lines
    tab.page.fill("#log-search", "slow line 3")
    tab.page.wait_for_selector("#log-count:text('11 matching lines')")  # 3, 30..39
    shot(tab.page, "dashboard-task-search.png")
    # the full log download is the same text
    status, body = _session_get(tab, f"/ui/api/tasks/{task_id}/log")
    assert status == 200 and body.decode().splitlines() == expected_lines(msgs)
    assert not tab.dialogs and not tab.errors


def _session_get(tab: Tab, path: str) -> tuple[int, bytes]:
    cookies = {c["name"]: c["value"] for c in tab.ctx.cookies()}
    return http_request("GET", tab.base + path, headers={"Cookie": f"flowcb_session={cookies['flowcb_session']}"})


def test_reload_mid_build_and_the_log_is_whole(tab, server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=50, interval_ms=60))
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        tab.sign_in()
        tab.page.goto(f"{server.url}/tasks/{task_id}")
        tab.wait_log(lambda ls: "slow line 10" in ls, what="slow line 10")
        tab.page.reload()
        tab.wait_log(lambda ls: "slow line 20" in ls, what="slow line 20 after the reload")
        # a lost connection (not a reload): the event stream resumes after the last seq
        tab.page.evaluate("window.__flowLog.lines.length")
        lines = tab.wait_final()
        msgs = client.wait(task_id)
    assert strip_ansi(expected_lines(msgs)) == lines
    assert not tab.dialogs


def test_the_event_stream_resumes_after_last_event_id_without_gaps_or_repeats(server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=10, interval_ms=20))
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        msgs = client.wait(task_id)
    cookie = _login(server.url, TOKEN)
    first = _events(server.url, task_id, cookie, {})
    last = max(m["meta"]["seq"] for m in first)
    assert [m["meta"]["seq"] for m in first] == list(range(1, last + 1)) == [m["meta"]["seq"] for m in msgs]
    again = _events(server.url, task_id, cookie, {"Last-Event-ID": "5"})
    assert [m["meta"]["seq"] for m in again] == list(range(6, last + 1))


def _login(base: str, token: str) -> str:
    req = urllib.request.Request(base + "/ui/api/login", data=json.dumps({"token": token}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Origin": base})
    with urllib.request.urlopen(req, timeout=10) as resp:
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";", 1)[0]


def _events(base: str, task_id: str, cookie: str, headers: dict[str, str]) -> list[dict]:
    req = urllib.request.Request(f"{base}/ui/api/tasks/{task_id}/events", headers={"Cookie": cookie, **headers})
    out: list[dict] = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event = None
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is None:
                out += json.loads(line[6:])
            elif line == "" and event == "end":
                break
    return out


# -- cancel, auth, ownership, CSRF ------------------------------------------------------------------
def test_cancel_from_the_page_and_a_socketio_client_sees_cancelled(tab, server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=2000, interval_ms=50))
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        tab.sign_in()
        tab.page.goto(f"{server.url}/tasks/{task_id}")
        tab.wait_log(lambda ls: "slow line 3" in ls, what="the build to run")
        tab.page.click("#cancel")
        shot(tab.page, "dashboard-cancel-confirm.png")
        tab.page.click("#cancel-yes")
        msgs = client.wait(task_id, timeout=60)
        assert msgs[-1]["data"]["action"] == protocol.STATE_CANCELLED
        lines = tab.wait_final()
    assert lines[-1].startswith("==> cancelled: ")
    assert "tl-cancelled" in tab.page.locator("#timeline li[data-step='build']").get_attribute("class")
    assert tab.page.locator("#cancel").count() == 0
    assert not tab.dialogs


def test_a_wrong_token_is_refused(tab, server):
    tab.page.goto(server.url + "/")
    tab.page.fill("#token", "not-the-right-token-at-all")
    tab.page.click("#signin")
    tab.page.wait_for_selector("#login-error:text('not valid')")
    assert not [c for c in tab.ctx.cookies() if c["name"] == "flowcb_session"]
    assert tab.page.input_value("#token") == ""  # the token is not left in the page
    status, _ = http_request("GET", server.url + "/ui/api/session")
    assert status == 401
    assert "not-the-right-token" not in server.stderr()
    shot(tab.page, "dashboard-sign-in.png")


def test_a_session_cannot_open_another_tokens_task(tab, server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=2, interval_ms=10))
    with Client(server.url, token=OTHER_TOKEN) as other:
        theirs = start(other, git_payload(url))
        other.wait(theirs)
    tab.sign_in(TOKEN)
    assert tab.page.locator(f"tr[data-task='{theirs}']").count() == 0
    tab.page.goto(f"{server.url}/tasks/{theirs}")
    tab.page.wait_for_selector("#task-error")
    assert "no such task" in tab.page.text_content("#task-error")
    for path in ("", "/events", "/log"):
        status, body = _session_get(tab, f"/ui/api/tasks/{theirs}{path}")
        assert status == 404, (path, body)
        assert b"slow line" not in body
    # and the owner sees it
    owner = Tab(tab.page.context.browser, server.url).sign_in(OTHER_TOKEN)
    try:
        assert owner.page.locator(f"tr[data-task='{theirs}']").count() == 1
    finally:
        owner.close()


def test_state_changing_requests_need_the_csrf_token_and_the_same_origin(server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=2000, interval_ms=50))
    cookie = _login(server.url, TOKEN)
    status, body = http_request("GET", server.url + "/ui/api/session", headers={"Cookie": cookie})
    csrf = json.loads(body)["csrf"]
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        cancel = f"{server.url}/ui/api/tasks/{task_id}/cancel"
        good = {"Cookie": cookie, "Origin": server.url, "Content-Type": "application/json", "X-CSRF-Token": csrf}
        for bad in ({"X-CSRF-Token": ""}, {"X-CSRF-Token": "guess"}, {"Origin": "http://evil.example"},
                    {"Origin": ""}, {"Content-Type": "text/plain"}, {"Sec-Fetch-Site": "cross-site"}):
            status, _ = http_request("POST", cancel, body=b"{}", headers={**good, **bad})
            assert status in (403, 415), bad
        attached = client.call(protocol.EVENT_ATTACH, {"taskId": task_id, "afterSeq": 0})
        assert attached["task"]["state"] not in protocol.FINAL
        status, _ = http_request("POST", cancel, body=b"{}", headers=good)
        assert status == 200
        assert client.wait(task_id)[-1]["data"]["action"] == protocol.STATE_CANCELLED
    # sign-out needs it too, and ends the session
    assert http_request("POST", server.url + "/ui/api/logout", body=b"{}",
                        headers={**good, "X-CSRF-Token": "x"})[0] == 403
    assert http_request("POST", server.url + "/ui/api/logout", body=b"{}", headers=good)[0] == 200
    assert http_request("GET", server.url + "/ui/api/session", headers={"Cookie": cookie})[0] == 401



def test_a_cancel_while_a_message_is_stored_never_reuses_its_seq(server, git_daemon):
    """The test above, over and over: its cancel (after six refused ones) often lands while the
    download step stores a message. That once gave the message's seq back while its write went
    on, so the final message got the same seq, the log held it twice, and the client, which had
    the first, dropped the final as a repeat and waited forever. Now every cancelled task ends for
    its watcher and every stored log has each seq once, in order."""
    cookie = _login(server.url, TOKEN)
    csrf = json.loads(http_request("GET", server.url + "/ui/api/session", headers={"Cookie": cookie})[1])["csrf"]
    good = {"Cookie": cookie, "Origin": server.url, "Content-Type": "application/json", "X-CSRF-Token": csrf}
    with Client(server.url) as client:
        for _ in range(40):
            url = new_repo(git_daemon, slow_files(lines=2000, interval_ms=50))
            task_id = start(client, git_payload(url))
            cancel = f"{server.url}/ui/api/tasks/{task_id}/cancel"
            for bad in ({"X-CSRF-Token": ""}, {"Origin": ""}, {"Sec-Fetch-Site": "cross-site"}):
                assert http_request("POST", cancel, body=b"{}", headers={**good, **bad})[0] == 403
            client.call(protocol.EVENT_ATTACH, {"taskId": task_id, "afterSeq": 0})
            assert http_request("POST", cancel, body=b"{}", headers=good)[0] == 200
            assert client.wait(task_id, timeout=20)[-1]["data"]["action"] == protocol.STATE_CANCELLED
            log = (server.data_dir / "tasks" / task_id / "messages.jsonl").read_text().splitlines()
            seqs = [json.loads(line)["meta"]["seq"] for line in log]
            assert seqs == list(range(1, len(seqs) + 1)), seqs

def test_the_origin_is_checked_against_the_servers_url_not_the_host_header(server, tmp_path):
    """DNS rebinding: a page on evil.example whose name now points at the server sends
    ``Host: evil.example:PORT`` and ``Origin: http://evil.example:PORT``, which agree."""
    body = json.dumps({"token": TOKEN}).encode()
    rebound = f"evil.example:{server.port}"
    status, raw = http_request("POST", server.url + "/ui/api/login", body=body, headers={
        "Host": rebound, "Origin": f"http://{rebound}", "Content-Type": "application/json"})
    assert status == 403 and b"Origin" in raw, raw
    for origin in (server.url, f"http://localhost:{server.port}"):  # the server's own names
        status, _ = http_request("POST", server.url + "/ui/api/login", body=body, headers={
            "Origin": origin, "Content-Type": "application/json"})
        assert status == 200, origin
    # with --public-url, that origin is the one
    public = "https://build.example.com"
    with ServerProc(tmp_path / "pub" / "data", "--public-url", public) as s:
        status, _ = http_request("POST", s.url + "/ui/api/login", body=body, headers={
            "Host": "build.example.com", "Origin": public, "Content-Type": "application/json"})
        assert status == 200
        status, _ = http_request("POST", s.url + "/ui/api/login", body=body, headers={
            "Origin": s.url, "Content-Type": "application/json"})
        assert status == 403


# -- hostile content ----------------------------------------------------------------------------------
def test_hostile_log_lines_and_published_pages_execute_nothing(tab, server, git_daemon):
    url = new_repo(git_daemon, slow_files(lines=3, interval_ms=10))
    with Client(server.url) as client:
        task_id = start(client, git_payload(url))
        client.wait(task_id)
    tab.sign_in()
    tab.page.goto(f"{server.url}/tasks/{task_id}")
    tab.wait_final()
    tab.page.fill("#log-search", "onerror")
    tab.page.wait_for_selector("#log-count:text('1 matching line')")
    assert tab.page.locator("#log-rows .tx", has_text=HOSTILE_LINE).count() == 1  # shown as text
    assert tab.page.locator("#log img, #app img, #app script").count() == 0
    csp = tab.page.evaluate("fetch('/').then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    # the published page: opened with the dashboard session, it runs nothing and reads nothing
    requests: list[str] = []
    tab.page.on("request", lambda r: requests.append(r.url))
    resp = tab.page.goto(f"{server.url}/artifacts/{task_id}/index.html")
    assert resp.headers["content-security-policy"] == "sandbox"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert tab.page.text_content("#h") == "published"
    # the page has done all it will: the image failed to load and no request is open for 500 ms
    # (a script that ran would have started its fetch, and alerts once the fetch answers)
    tab.page.wait_for_load_state("networkidle")
    assert not tab.dialogs, tab.dialogs
    assert not [u for u in requests if "/ui/api" in u], requests
    assert not tab.page.title().startswith("LEAK")
    status, _ = http_get(f"{server.url}/artifacts/{task_id}/")
    assert status == 200


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A server whose data dir already holds 10,000 finished tasks of TOKEN (and one of
    OTHER_TOKEN), one of them with a hostile name, error and log: the dashboard indexes them
    at start."""
    data = tmp_path_factory.mktemp("seeded") / "data"
    tasks = data / "tasks"
    tasks.mkdir(parents=True)
    th, other = protocol.token_hash(TOKEN), protocol.token_hash(OTHER_TOKEN)
    now = int(time.time() * 1000) - 10_000_000
    for i in range(10_000):
        task_id = f"{i:024x}"
        hostile = i == 9_990
        name = "<script>alert('name')</script><img src=x onerror=alert(2)>" if hostile else f"proj{i % 7}"
        rec = {"taskId": task_id, "name": name, "version": f"1.0.{i}", "state": ["done", "failed"][i % 2],
               "step": "publish", "createdAt": now + i * 1000, "startedAt": now + i * 1000 + 200,
               "finishedAt": now + i * 1000 + 900, "prod": i % 3 == 0, "artifacts": [],
               "error": HOSTILE_LINE if hostile else None, "tokenHash": other if i == 5 else th,
               "request": ({"source": "git", "repo": "git://h/<b>r</b>", "ref": "main"} if i % 2
                           else {"source": "upload"}),
               "attempt": 1}
        d = tasks / task_id
        d.mkdir()
        (d / "task.json").write_text(json.dumps(rec))
        msg = protocol.make_message(task_id, 1, "log", HOSTILE_LINE if hostile else "hello", step="build",
                                    stream="stdout", lines=1)
        final = protocol.make_message(task_id, 2, rec["state"], "over", step="build")
        (d / "messages.jsonl").write_text(json.dumps(msg, separators=(",", ":")) + "\n"
                                          + json.dumps(final, separators=(",", ":")) + "\n")
    s = ServerProc(data).start()
    yield s
    s.stop()


def test_the_task_list_is_newest_first_filtered_and_paged_with_10000_tasks(browser, seeded):
    """(How fast with 10,000 tasks against 100: benchmarks/bench_dashboard.py, not a timed test.)"""
    cookie = _login(seeded.url, TOKEN)

    def get(query: str) -> dict:
        status, body = http_request("GET", f"{seeded.url}/ui/api/tasks?{query}", headers={"Cookie": cookie})
        assert status == 200, body
        return json.loads(body)

    page = get("limit=50")
    ids = [t["taskId"] for t in page["tasks"]]
    assert ids == [f"{i:024x}" for i in range(9_999, 9_949, -1)]
    assert f"{5:024x}" not in ids
    older = get(f"limit=50&cursor={page['next']}")
    assert older["tasks"][0]["taskId"] == f"{9_949:024x}"
    proj = get("limit=20&project=proj3")
    assert {t["name"] for t in proj["tasks"]} == {"proj3"} and len(proj["tasks"]) == 20
    failed = get("limit=20&state=failed")
    assert {t["state"] for t in failed["tasks"]} == {"failed"} and len(failed["tasks"]) == 20
    last_page = None
    cursor, pages = "", 0
    while True:
        data = get(f"limit=200&cursor={cursor}")
        pages += 1
        if not data["next"]:
            last_page = data
            break
        cursor = data["next"]
    assert pages == 50 and last_page["tasks"][-1]["taskId"] == f"{0:024x}"
    assert "proj3" in page["projects"]

    t = Tab(browser, seeded.url).sign_in()
    try:
        t.page.wait_for_selector("tbody#tasks tr >> nth=49")
        shot(t.page, "dashboard-list.png")
        hostile = f"{9_990:024x}"
        row = t.page.locator(f"tr[data-task='{hostile}']")
        assert "<script>alert('name')</script>" in row.text_content()
        assert t.page.locator("#tasks script, #tasks img, #tasks b").count() == 0
        t.page.select_option("#filter-state", "failed")
        wait_for(lambda: t.page.evaluate(  # (wait_for_function's string eval is refused by the CSP)
            "document.querySelectorAll('#tasks tr').length === 50 && "
            "[...document.querySelectorAll('#tasks .st')].every(e => e.textContent === 'failed')"), 10, "the filter")
        t.page.goto(f"{seeded.url}/tasks/{hostile}")
        t.wait_final()
        assert t.page.text_content("#task-title .name") == "<script>alert('name')</script><img src=x onerror=alert(2)>"
        assert t.page.locator("#app img, #app script").count() == 0
        assert HOSTILE_LINE in t.log()
        assert not t.dialogs and not t.errors
    finally:
        t.close()


# -- a big log ----------------------------------------------------------------------------------------
def test_a_200000_line_log_is_shown_whole_through_a_virtual_list(tab, server, git_daemon):
    """Every line arrives, in order, and only the visible rows are in the DOM; scrolling to the
    end shows the last line. (Time to the first line, to the whole log, the scroll and the
    longest frame gap: benchmarks/bench_dashboard.py, against the CLI client in the same run.)"""
    files = slow_files()
    files["big.js"] = BIG_JS % (200_000, 4000)
    url = new_repo(git_daemon, files)
    with Client(server.url) as client:
        task_id = start(client, git_payload(url, cmd="big"))
        deadline = time.monotonic() + 60
        while not any(m["data"]["action"] == "build" for m in client.ordered(task_id)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tab.sign_in()
        tab.page.goto(f"{server.url}/tasks/{task_id}")
        tab.page.wait_for_selector("#log-rows .log-row")
        lines = tab.wait_log(lambda ls: "big line 200000" in ls, timeout=60, what="the 200,000th line")
        tab.page.evaluate("""async () => {
            const s = document.getElementById('log');
            s.scrollTop = 0; await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            s.scrollTop = s.scrollHeight;
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); }""")
        last_rows = tab.page.locator("#log-rows .log-row .tx").all_text_contents()
        rows_in_dom = tab.page.locator("#log-rows .log-row").count()
        tab.wait_final()
        client.wait(task_id)
    assert "big line 200000" in last_rows
    assert rows_in_dom < 300  # only what is visible is in the DOM
    assert sum(1 for line in lines if line.startswith("big line ")) == 200_000


# -- Redis mode -------------------------------------------------------------------------------------
def test_redis_mode_any_gateway_serves_the_dashboard_and_survives_a_killed_gateway(browser, tmp_path, git_daemon):
    from cloudbuild_redis_support import Cluster, RedisServer, kill

    if shutil.which("redis-server") is None:
        pytest.skip("Redis mode needs redis-server (.ci/run installs it)")
    redis = RedisServer(tmp_path / "redis").start()
    cluster = Cluster(tmp_path / "cluster", redis)
    try:
        gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
        worker = cluster.add("worker")
        status, _ = http_get(worker.url + "/")
        assert status == 404  # a worker serves no dashboard
        url = new_repo(git_daemon, slow_files(lines=60, interval_ms=80))
        with Client(gw_b.url) as client:
            task_id = start(client, git_payload(url))
            tab = Tab(browser, gw_a.url).sign_in()
            try:
                tab.page.goto(f"{gw_a.url}/tasks/{task_id}")
                tab.wait_log(lambda ls: "slow line 5" in ls, what="slow line 5 through gateway A")
                assert "Attempt" in tab.page.text_content("dl.meta")
                kill(gw_a)
                tab.page.wait_for_selector("#live:text('reconnecting')")
                # the session lives in Redis: gateway B knows it (cookies do not depend on the port)
                tab.page.goto(f"{gw_b.url}/tasks/{task_id}")
                lines = tab.wait_final()
                msgs = client.wait(task_id)
                assert strip_ansi(expected_lines(msgs)) == lines
                tab.page.goto(gw_b.url + "/")
                tab.page.wait_for_selector(f"tr[data-task='{task_id}']")
                shot(tab.page, "dashboard-list-redis.png")
                assert not tab.dialogs and not tab.errors
            finally:
                tab.close()
    finally:
        cluster.stop()
        redis.stop()


# -- the installed kit: assets packaged, `flow publish` names the page -------------------------------
def test_the_installed_kit_serves_the_dashboard_and_flow_publish_prints_its_url(browser, flow, tmp_path):
    """The kit installed from its wheel (as users get it): the assets are in the package, and
    `flow publish` prints the task's dashboard URL when the build starts."""
    import re

    from cloudbuild_publish_support import BuildServer, git, make_site
    from cloudbuild_publish_support import publish as flow_publish

    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path / "data").start()
    try:
        project = make_site(tmp_path / "site", name="dash-site")
        git(project, "init", "-q", "-b", "main")
        git(project, "add", ".")
        git(project, "commit", "-q", "-m", "first")
        result = flow_publish(flow, srv, project, "--build-cmd", "npm run build")
        assert result.returncode == 0, result.stderr
        found = re.search(r"dashboard: (\S+/tasks/([0-9a-f]+))", result.stderr)
        assert found and found.group(1) == f"{srv.url}/tasks/{found.group(2)}", result.stderr
        t = Tab(browser, srv.url).sign_in(srv.token)
        try:
            t.page.goto(found.group(1))
            lines = t.wait_final()
            assert "wrote dist/index.html" in lines
            assert t.page.locator("#artifacts ul.artifacts li a").first.text_content().endswith("index.html")
            shot(t.page, "dashboard-task-done.png")
        finally:
            t.close()
    finally:
        srv.stop()
