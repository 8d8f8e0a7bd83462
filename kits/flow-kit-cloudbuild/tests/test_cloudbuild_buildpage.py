"""The build page users know from hosted builders (issue 19 item 5), in Chromium through
Playwright against the real server on loopback: build numbers, relative times with the date on
hover, the failure and its step in the list, the log grouped by step (folded but the failed
step, linked from the timeline), jump to the first error, the running log in view at 900 px,
retry (owner only, CSRF-checked), promote, neutral colours for prod and cancelled, a 375 px
screen, and token names shown as who published (never the token)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from cloudbuild_server_support import (
    OTHER_TOKEN,
    REPO,
    TOKEN,
    Client,
    ServerProc,
    commit_tree,
    http_request,
    new_repo,
    protocol,
)
from test_cloudbuild_dashboard import (  # the same browser set-up and helpers
    Tab,
    _login,
    git_payload,
    pytestmark,  # noqa: F401  (the same skips: playwright, chromium, npm)
    slow_files,
    start,
    wait_for,
)

# pauses between the parts: stdout and stderr are separate pipes, read in whatever order they fill
FAIL_JS = """for (let i = 1; i <= 300; i++) console.log('before ' + i);
setTimeout(() => {
  console.error('Error: boom in step build');
  setTimeout(() => {
    for (let i = 1; i <= 300; i++) console.log('after ' + i);
    setTimeout(() => process.exit(1), 300);
  }, 300);
}, 300);
"""
IMAGES = REPO / "docs" / "images"
RED = "rgb(198, 40, 40)"  # app.css --bad: failures only


def site_files(name: str) -> dict[str, str]:
    files = slow_files(name=name, lines=3, interval_ms=10)
    files["fail.js"] = FAIL_JS
    pkg = json.loads(files["package.json"])
    pkg["scripts"]["fail"] = "node fail.js"
    files["package.json"] = json.dumps(pkg)
    return files


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """A server whose tokens file names TOKEN ``alice`` (``name:token``); OTHER_TOKEN unnamed."""
    base = tmp_path_factory.mktemp("named")
    tokens = base / "tokens"
    tokens.write_text(f"# who publishes\nalice:{TOKEN}\n{OTHER_TOKEN}\n")
    s = ServerProc(base / "data", "--concurrency", "4", "--tokens-file", str(tokens), tokens=(),
                   config={"checks": [], "freeze-windows": []}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def builds(named, git_daemon):
    """Builds of TOKEN on ``named``: numsite #1 (done, prod), #2 (failed), othersite #1 (done),
    numsite #3 (cancelled); the repository's path for a later commit."""
    url = new_repo(git_daemon, site_files("numsite"))
    other_url = new_repo(git_daemon, site_files("othersite"))
    out = {"url": url}
    with Client(named.url) as client:
        out["ok"] = start(client, git_payload(url, cmd="slow", name="numsite", prod=True))
        client.wait(out["ok"])
        out["failed"] = start(client, git_payload(url, cmd="fail", name="numsite"))
        client.wait(out["failed"])
        out["other"] = start(client, git_payload(other_url, cmd="slow", name="othersite"))
        client.wait(out["other"])
        slow = new_repo(git_daemon, slow_files(name="numsite", lines=2000, interval_ms=50))
        out["cancelled"] = start(client, git_payload(slow, name="numsite"))
        deadline = time.monotonic() + 60
        while not any(m["data"]["action"] == "build" for m in client.ordered(out["cancelled"])):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.call(protocol.EVENT_CANCEL, {"taskId": out["cancelled"]})
        client.wait(out["cancelled"])
    return out


def tab_for(browser, server, token=TOKEN, width=1280, height=900) -> Tab:
    t = Tab(browser, server.url)
    t.ctx.close()
    t.ctx = browser.new_context(viewport={"width": width, "height": height})
    t.page = t.ctx.new_page()
    t.page.on("dialog", lambda d: (t.dialogs.append(d.message), d.dismiss()))
    t.page.on("pageerror", lambda e: t.errors.append(str(e)))
    return t.sign_in(token)


def row(tab: Tab, task_id: str):
    return tab.page.locator(f"tr[data-task='{task_id}']")


def test_the_list_shows_numbers_who_relative_times_and_the_failure(browser, named, builds):
    t = tab_for(browser, named)
    try:
        for key in ("ok", "failed", "other", "cancelled"):
            t.page.wait_for_selector(f"tr[data-task='{builds[key]}']")
        assert row(t, builds["ok"]).locator(".num").text_content() == "#1"
        assert row(t, builds["failed"]).locator(".num").text_content() == "#2"
        assert row(t, builds["other"]).locator(".num").text_content() == "#1"  # per project
        assert row(t, builds["cancelled"]).locator(".num").text_content() == "#3"
        # the failure and its step, in the list
        failed = row(t, builds["failed"])
        assert failed.locator(".st").text_content() == "failed"
        assert failed.locator(".fail-step").text_content() == "at build"
        assert "exit" in failed.locator(".fail-reason").text_content()
        # relative times; the date on hover
        created = failed.locator("time.rel")
        assert re.fullmatch(r"just now|\d+ s ago|\d+ min ago", created.text_content())
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created.get_attribute("title"))
        # who published: the token's name, never the token
        assert failed.locator("td.who-cell").text_content() == "alice"
        assert t.page.text_content("#who") == "signed in as alice"
        assert TOKEN not in t.page.content()
        # prod and cancelled in neutral colours, failed in red
        bad = failed.locator(".st").evaluate("e => getComputedStyle(e).color")
        assert bad == RED
        prod = row(t, builds["ok"]).locator(".chan")
        assert prod.text_content() == "prod"
        for prop in ("color", "borderTopColor"):
            assert prod.evaluate(f"e => getComputedStyle(e).{prop}") != RED
        cancelled = row(t, builds["cancelled"]).locator(".st")
        assert cancelled.text_content() == "cancelled"
        assert cancelled.evaluate("e => getComputedStyle(e).color") != RED
        assert row(t, builds["cancelled"]).locator(".fail-step").evaluate("e => getComputedStyle(e).color") != RED
        assert not t.dialogs and not t.errors
    finally:
        t.close()


def test_a_failed_build_opens_at_its_failed_step_grouped_and_jumps_to_the_first_error(browser, named, builds):
    t = tab_for(browser, named)
    try:
        t.page.goto(f"{named.url}/tasks/{builds['failed']}")
        t.wait_final()
        assert t.page.text_content("#task-number") == "#2"
        assert t.page.text_content("[data-meta='Failed step'] dd") == "build"
        # grouped by step: a heading per step; all folded but the failed one
        heads = t.page.evaluate("""() => window.__flowLog.sections.map(s => [s.name, s.collapsed])""")
        assert [n for n, _ in heads] == ["queued", "prepare", "download", "install", "build"]
        assert [c for _, c in heads] == [True, True, True, True, False]
        assert "after 300" in t.page.locator("#log-rows .tx").all_text_contents()  # the end, in view
        t.page.click("#timeline li[data-step='build'] a.tl-name")
        wait_for(lambda: _in_view(t, "#log-rows .log-row.step[data-step='build']"), 10, "the build heading")
        assert t.page.get_attribute("#log-rows .log-row.step[data-step='build']", "aria-expanded") == "true"
        assert t.page.get_attribute("#log-rows .log-row.step[data-step='install']", "aria-expanded") == "false"
        assert "checked out commit" not in " ".join(t.page.locator("#log-rows .tx").all_text_contents())
        # the timeline links to a step's part: it opens and is in view
        t.page.click("#timeline li[data-step='download'] a.tl-name")
        wait_for(lambda: t.page.locator("#log-rows .tx", has_text="checked out commit").count() == 1, 10,
                 "the download step's lines")
        assert _in_view(t, "#log-rows .log-row.step[data-step='download']")
        # a heading folds its step again
        t.page.click("#log-rows .log-row.step[data-step='download']")
        wait_for(lambda: t.page.locator("#log-rows .tx", has_text="checked out commit").count() == 0, 10, "folded")
        # jump to the first error: line 'Error: boom' (301st of the build's 601) comes into view
        assert "Error: boom in step build" not in t.page.locator("#log-rows .tx").all_text_contents()
        assert t.page.locator("#log-rows .log-row.hit").count() == 0
        t.page.click("#jump-error")
        wait_for(lambda: _in_view(t, "#log-rows .log-row.hit"), 10, "the first error in view")
        assert "Error: boom in step build" in t.page.text_content("#log-rows .log-row.hit")
        assert not t.dialogs and not t.errors
    finally:
        t.close()


def _in_view(t: Tab, selector: str) -> bool:
    """Whether ``selector``'s first match is inside the log's visible box (and the window's)."""
    return bool(t.page.evaluate("""(sel) => {
        const e = document.querySelector(sel); if (!e) return false;
        const r = e.getBoundingClientRect(), box = document.getElementById('log').getBoundingClientRect();
        return r.top >= box.top && r.bottom <= box.bottom && r.bottom <= innerHeight && r.height > 0; }""", selector))


def test_retry_builds_the_same_commit_as_a_new_task_owner_only_and_csrf_checked(browser, named, builds, git_daemon):
    # the branch moved on since: a retry still builds the commit the failed build checked out
    first = _checked_out(named, builds["failed"])
    repo = Path(git_daemon.base) / builds["url"].rstrip("/").rsplit("/", 1)[1]
    moved = commit_tree(repo, {"later.txt": "later"}, "later")
    assert moved != first
    cookie = _login(named.url, OTHER_TOKEN)
    status, body = http_request("GET", named.url + "/ui/api/session", headers={"Cookie": cookie})
    csrf = json.loads(body)["csrf"]
    retry = f"{named.url}/ui/api/tasks/{builds['failed']}/retry"
    good = {"Cookie": cookie, "Origin": named.url, "Content-Type": "application/json", "X-CSRF-Token": csrf}
    assert http_request("POST", retry, body=b"{}", headers=good)[0] == 404  # another token's task
    mine = _login(named.url, TOKEN)
    _, body = http_request("GET", named.url + "/ui/api/session", headers={"Cookie": mine})
    own = {**good, "Cookie": mine, "X-CSRF-Token": json.loads(body)["csrf"]}
    for bad in ({"X-CSRF-Token": "guess"}, {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert http_request("POST", retry, body=b"{}", headers={**own, **bad})[0] == 403, bad

    t = tab_for(browser, named)
    try:
        t.page.goto(f"{named.url}/tasks/{builds['failed']}")
        t.wait_final()
        t.page.click("#retry")
        t.page.wait_for_url(re.compile(r".*/tasks/(?!" + builds["failed"] + r")[0-9a-f]{24}$"))
        new_id = t.page.url.rsplit("/", 1)[1]
        t.wait_final()
        assert t.page.text_content("#task-number") == "#4"
        assert t.page.text_content("#retry-of") == builds["failed"][:8]
        assert f"checked out commit {first}" in t.log()
        assert "Error: boom in step build" in t.log()
        assert not t.dialogs and not t.errors
    finally:
        t.close()
    record = json.loads((named.data_dir / "tasks" / new_id / "task.json").read_text())
    assert record["retryOf"] == builds["failed"] and record["request"]["ref"] == first


def _checked_out(server: ServerProc, task_id: str) -> str:
    for line in (server.data_dir / "tasks" / task_id / "messages.jsonl").read_text().splitlines():
        commit = json.loads(line)["data"]["payload"].get("commit")
        if commit:
            return commit
    raise AssertionError("no checked-out commit in the log")


def test_promote_from_the_page(browser, named, builds):
    t = tab_for(browser, named)
    try:
        t.page.goto(f"{named.url}/tasks/{builds['other']}")
        t.wait_final()
        assert t.page.text_content("#promote") == "Promote to prod"
        t.page.goto(f"{named.url}/tasks/{builds['ok']}")
        t.wait_final()
        assert t.page.text_content("#promote") == "Roll back prod to this build"
        t.page.click("#promote")
        t.page.wait_for_selector("#action-note.ok, #action-note.error")
        note = t.page.text_content("#action-note")
        from flow_kit_cloudbuild.server.tasks.service import TaskService

        if hasattr(TaskService, "promote"):
            assert note == "prod now serves this build", note
        else:  # until the releases index lands (issue 19 D1), the route says so
            assert "cannot promote builds yet" in note, note
        # the failed build offers no promotion
        t.page.goto(f"{named.url}/tasks/{builds['failed']}")
        t.wait_final()
        assert t.page.locator("#promote").count() == 0 and t.page.locator("#retry").count() == 1
    finally:
        t.close()


def test_a_running_builds_log_is_in_view_at_900_px(browser, named, git_daemon):
    url = new_repo(git_daemon, slow_files(name="viewsite", lines=200, interval_ms=40))
    with Client(named.url) as client:
        task_id = start(client, git_payload(url, name="viewsite"))
        t = tab_for(browser, named, width=1280, height=900)
        try:
            t.page.goto(f"{named.url}/tasks/{task_id}")
            t.wait_log(lambda ls: "slow line 40" in ls, what="slow line 40")
            box = t.page.locator("#log").bounding_box()
            assert box["y"] + box["height"] <= 900, box  # the whole log box above the fold
            assert box["height"] >= 25 * 18, box         # at least 25 lines of it
            assert t.page.locator("#artifacts-card").is_hidden()
            assert _in_view(t, "#log-rows .log-row:last-child")
            if os.environ.get("FLOW_UPDATE_SCREENSHOTS") == "1":
                t.page.screenshot(path=str(IMAGES / "dashboard-task-running-fold.png"))
        finally:
            t.close()
        client.call(protocol.EVENT_CANCEL, {"taskId": task_id})
        client.wait(task_id)


def test_a_375_px_screen_cuts_no_column(browser, named, builds):
    t = tab_for(browser, named, width=375, height=800)
    try:
        t.page.wait_for_selector(f"tr[data-task='{builds['failed']}']")
        assert t.page.evaluate("document.documentElement.scrollWidth") <= 375
        cells = t.page.evaluate(f"""() => [...document.querySelectorAll("tr[data-task='{builds['failed']}'] td")]
            .map(td => [td.dataset.label, td.getBoundingClientRect().left, td.getBoundingClientRect().right,
                        td.getBoundingClientRect().height])""")
        assert [c[0] for c in cells] == ["Build", "Channel", "Source", "State", "Who", "Created", "Duration"]
        assert all(c[1] >= 0 and c[2] <= 375 and c[3] > 0 for c in cells), cells
        state = row(t, builds["failed"]).locator("td.state .st")
        assert state.is_visible() and state.bounding_box()["x"] + state.bounding_box()["width"] <= 375
        t.page.goto(f"{named.url}/tasks/{builds['failed']}")
        t.wait_final()
        wide = t.page.evaluate("""() => [...document.querySelectorAll('#app *')]
            .filter(e => e.getBoundingClientRect().right > 375 && !e.closest('#log'))
            .map(e => e.tagName + '#' + e.id + '.' + e.className)""")
        assert t.page.evaluate("document.documentElement.scrollWidth") <= 375, wide
        assert t.page.locator("#retry").bounding_box()["x"] + t.page.locator("#retry").bounding_box()["width"] <= 375
    finally:
        t.close()


def test_a_token_label_names_a_token_kept_elsewhere(tmp_path):
    prefix = protocol.token_hash(OTHER_TOKEN)[:8]
    with ServerProc(tmp_path / "data", "--token-label", f"{prefix}=ci bot") as s:
        cookie = _login(s.url, OTHER_TOKEN)
        _, body = http_request("GET", s.url + "/ui/api/session", headers={"Cookie": cookie})
        assert json.loads(body)["who"] == "ci bot"
        cookie = _login(s.url, TOKEN)
        _, body = http_request("GET", s.url + "/ui/api/session", headers={"Cookie": cookie})
        assert json.loads(body)["who"] == f"token {protocol.token_hash(TOKEN)[:8]}"
    with pytest.raises(RuntimeError, match="--token-label 00000000: no token"):
        ServerProc(tmp_path / "bad", "--token-label", "00000000=nobody").start()


def test_the_preview_url_is_the_deployment_and_the_prod_build_is_marked_after_promotes(browser, named, git_daemon):
    """Issue 19: "Preview URL" opens the deployment (not the JSON file list), the aliases show,
    and the build prod serves now is marked "prod" in the list and on its page, following a
    promote and a promote back to the earlier build."""
    url = new_repo(git_daemon, site_files("marksite"))
    with Client(named.url) as client:
        first = start(client, git_payload(url, name="marksite", prod=True))
        client.wait(first)
        second = start(client, git_payload(url, name="marksite", version="2.0.0", branch="main"))
        client.wait(second)
    rec = {i: json.loads((named.data_dir / "tasks" / i / "task.json").read_text()) for i in (first, second)}
    assert rec[second]["deploymentUrl"].startswith(f"http://{second}.localhost:")

    def marked_in_list(t: Tab, task_id: str) -> bool:
        return row(t, task_id).locator(".prod-now").count() == 1

    t = tab_for(browser, named)
    try:
        t.page.goto(f"{named.url}/tasks/{second}")
        t.wait_final()
        assert "Preview URL" in t.page.text_content("#artifacts")
        assert t.page.get_attribute("#site-url", "href") == rec[second]["deploymentUrl"]
        aliases = t.page.locator("#aliases a.alias")
        assert [(aliases.nth(i).get_attribute("data-kind"), aliases.nth(i).get_attribute("href"))
                for i in range(aliases.count())] == [(a["kind"], a["url"]) for a in rec[second]["aliases"]]
        assert [a["kind"] for a in rec[second]["aliases"]] == ["branch"]
        assert t.page.locator("#task-prod").is_hidden()
        t.page.goto(f"{named.url}/tasks/{first}")
        t.wait_final()
        assert t.page.get_attribute("#site-url", "href") == rec[first]["deploymentUrl"]
        assert t.page.get_attribute("#aliases a.alias[data-kind='prod']", "href") == rec[first]["aliases"][0]["url"]
        assert t.page.text_content("#task-prod") == "prod" and t.page.locator("#task-prod").is_visible()
        t.page.goto(named.url + "/")
        t.page.wait_for_selector(f"tr[data-task='{second}']")
        assert marked_in_list(t, first) and not marked_in_list(t, second)
        # promote the preview: the mark moves, on its page and in the list
        t.page.goto(f"{named.url}/tasks/{second}")
        t.wait_final()
        t.page.click("#promote")
        t.page.wait_for_selector("#action-note.ok")
        assert t.page.locator("#task-prod").is_visible()
        t.page.reload()
        t.wait_final()
        assert t.page.locator("#task-prod").is_visible()  # from the server, not the click
        t.page.goto(named.url + "/")
        t.page.wait_for_selector(f"tr[data-task='{second}']")
        assert marked_in_list(t, second) and not marked_in_list(t, first)
        # and back to the earlier build: the list follows (its 2 s refresh) and the page says so
        t.page.goto(f"{named.url}/tasks/{first}")
        t.wait_final()
        assert t.page.locator("#task-prod").is_hidden()
        t.page.click("#promote")
        t.page.wait_for_selector("#action-note.ok")
        t.page.reload()
        t.wait_final()
        assert t.page.locator("#task-prod").is_visible()
        t.page.goto(named.url + "/")
        t.page.wait_for_selector(f"tr[data-task='{first}']")
        wait_for(lambda: marked_in_list(t, first) and not marked_in_list(t, second), 10, "prod marked on the first")
        # one prod per project: exactly one of marksite's rows is marked
        assert t.page.locator("tr[data-task] td.build", has_text="marksite").locator(".prod-now").count() == 1
        assert not t.dialogs and not t.errors
    finally:
        t.close()


def test_a_build_cache_hit_says_from_cache_with_its_build_and_links_the_provenance(browser, named, git_daemon):
    """Issue 23: the same source published again is a build-cache hit; its page says "from cache:
    #N" linking the build that made the files, and links the deployment's signed provenance."""
    url = new_repo(git_daemon, site_files("cachesite"))
    with Client(named.url) as client:
        first = start(client, git_payload(url, name="cachesite"))
        client.wait(first)
        second = start(client, git_payload(url, name="cachesite"))
        client.wait(second)
    rec = {i: json.loads((named.data_dir / "tasks" / i / "task.json").read_text()) for i in (first, second)}
    assert rec[second]["cachedFrom"] == {"taskId": first, "number": rec[first]["number"]}
    assert "cachedFrom" not in rec[first] or rec[first]["cachedFrom"] is None
    t = tab_for(browser, named)
    try:
        t.page.goto(f"{named.url}/tasks/{second}")
        t.wait_final()
        assert t.page.text_content("#cached-from").startswith(f"from cache: #{rec[first]['number']}")
        assert t.page.get_attribute("#cached-from a", "href") == f"/tasks/{first}"
        assert t.page.get_attribute("#provenance a", "href") == rec[second]["provenanceUrl"]
        assert rec[second]["provenanceUrl"] == rec[second]["deploymentUrl"] + ".well-known/flow/provenance.json"
        t.page.goto(f"{named.url}/tasks/{first}")  # the build that ran: provenance, no "from cache"
        t.wait_final()
        assert t.page.locator("#cached-from").count() == 0 and t.page.locator("#provenance").count() == 1
        assert not t.dialogs and not t.errors
    finally:
        t.close()
