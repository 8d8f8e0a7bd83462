"""Deployments at their own origins and the stable URLs, end to end: ``flow publish`` (the kit
installed by flow) against the real server on loopback, pages opened in Chromium through
Playwright at ``http://<deployment>.localhost:<port>/`` and ``http://<project>.localhost:<port>/``.

A Vite-like site (``index.html`` loading root-relative ``/assets/index-<hash>.js``, which writes
into the page, and ``/assets/app-<hash>.css``) renders with its script run and its CSS applied
at the deployment URL and the prod alias; a second prod release switches the alias; ``flow
promote`` restores the first; a branch alias follows its branch; the deployment's origin can
neither read the dashboard's cookie nor call the API with credentials; another token cannot take
the name. The responses (content types, ETag/304, Cache-Control, gzip/brotli, 404.html, the SPA
fallback) are checked over HTTP with the deployment's Host header.
"""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import time
from pathlib import Path

import pytest
from cloudbuild_publish_support import BuildServer, free_port, git, make_site, needs_node, publish
from cloudbuild_server_support import CHROMIUM

try:
    import playwright.sync_api as pw
except ImportError:  # pragma: no cover - .ci/run installs it
    pw = None

pytestmark = [
    needs_node,
    pytest.mark.skipif(pw is None, reason="the deployment tests need playwright (pip install playwright)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="the deployment tests need /usr/bin/chromium"),
]
OTHER = "deploy-tests-other-token-98765"
# a Vite-like build: content-hashed assets under /assets/, loaded by root-relative paths
VITE_BUILD_JS = """\
const fs = require("fs");
const v = require("./package.json").version;
fs.mkdirSync("dist/assets", { recursive: true });
fs.writeFileSync("dist/index.html", '<!doctype html><html><head><meta charset="utf-8"><title>site</title>' +
  '<link rel="stylesheet" href="/assets/app-Bx3k9a1Q.css">' +
  '<script type="module" src="/assets/index-4f2a9c1b.js"></script></head>' +
  '<body><div id="app">not rendered</div></body></html>');
fs.writeFileSync("dist/assets/index-4f2a9c1b.js",
  "document.getElementById('app').textContent = 'rendered ' + " + JSON.stringify(v) + ";\\n" +
  "// " + "padding ".repeat(300) + "\\n");
fs.writeFileSync("dist/assets/app-Bx3k9a1Q.css", "#app { color: rgb(1, 2, 3); }\\n");
fs.writeFileSync("dist/404.html", "<!doctype html><h1 id=nf>custom not found</h1>");
fs.mkdirSync("dist/docs", { recursive: true });
fs.writeFileSync("dist/docs/index.html", "<!doctype html><h1>docs</h1>");
fs.writeFileSync("dist/a b.txt", "spaced");
console.log("built " + v);
"""


def vite_site(root: Path, name: str, version: str, spa: bool = False) -> Path:
    toml = '[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n'
    if spa:
        toml += "\n[tool.flow.cloudbuild]\nspa = true\n"
    make_site(root, name=name, version=version, flow_toml=toml)
    (root / "build.js").write_text(VITE_BUILD_JS)
    return root


def set_version(root: Path, version: str) -> None:
    for file in ("package.json", "package-lock.json"):
        data = json.loads((root / file).read_text())
        data["version"] = version
        if "packages" in data:
            data["packages"][""]["version"] = version
        (root / file).write_text(json.dumps(data, indent=2) + "\n")


ARGS = ("--source", "upload", "--build-cmd", "npm run build")


def published(result) -> tuple[str, dict[str, str]]:
    """(the deployment URL: stdout's last line, {"prod"|"branch": alias URL})."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    aliases = dict(line.split(": ", 1) for line in lines[:-1] if line.startswith(("prod: ", "branch: ")))
    return lines[-1], aliases


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A request to ``url`` (``http://<label>.localhost:<port>/...``) sent to 127.0.0.1 with the
    deployment's Host header, as a browser sends it (the test's resolver need not know *.localhost)."""
    rest = url.split("://", 1)[1]
    host, _, path = rest.partition("/")
    conn = http.client.HTTPConnection("127.0.0.1", int(host.rsplit(":", 1)[1]), timeout=10)
    conn.request(method, "/" + path, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture(scope="module")
def deploy_server(flow, tmp_path_factory):
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    port = free_port()
    srv = BuildServer(executable, tmp_path_factory.mktemp("deploy") / "data", port=port,
                      extra=("--token", OTHER, "--public-url", f"http://localhost:{port}")).start()
    yield srv
    srv.stop()


def rendered(browser, url: str) -> tuple[str, str]:
    """The page's #app text once its script ran, and #app's computed colour (the CSS)."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('app').textContent.startsWith('rendered')",
                               timeout=10_000)
        return (page.text_content("#app") or "",
                page.evaluate("getComputedStyle(document.getElementById('app')).color"))
    finally:
        ctx.close()


def test_deployments_aliases_promote_and_ownership(flow, deploy_server, browser, tmp_path):
    site = vite_site(tmp_path / "site", "Vite_Site", "1.0.0")
    first, aliases = published(publish(flow, deploy_server, site, *ARGS, "--prod"))
    task1 = first.split("//", 1)[1].split(".", 1)[0]
    port = deploy_server.port
    assert first == f"http://{task1}.localhost:{port}/"
    prod = f"http://vite-site.localhost:{port}/"  # the name as a DNS label
    assert aliases == {"prod": prod}
    # the deployment and the prod alias: script run, CSS applied, root-relative assets found
    assert rendered(browser, first) == ("rendered 1.0.0", "rgb(1, 2, 3)")
    assert rendered(browser, prod) == ("rendered 1.0.0", "rgb(1, 2, 3)")

    # a second prod release switches the alias; the first deployment stays as it was
    set_version(site, "2.0.0")
    second, aliases = published(publish(flow, deploy_server, site, *ARGS, "--prod"))
    task2 = second.split("//", 1)[1].split(".", 1)[0]
    assert aliases == {"prod": prod} and task2 != task1
    assert rendered(browser, prod)[0] == "rendered 2.0.0"
    assert rendered(browser, first)[0] == "rendered 1.0.0"

    # flow promote restores the first, atomically; flow releases lists both
    result = flow("promote", task1, "--server", deploy_server.url, "--token", deploy_server.token, cwd=site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == prod
    assert f"was {task2}" in result.stderr
    assert rendered(browser, prod)[0] == "rendered 1.0.0"
    listed = flow("releases", "--json", "--server", deploy_server.url, "--token", deploy_server.token, cwd=site)
    assert listed.returncode == 0, listed.stderr
    releases = json.loads(listed.stdout)
    assert releases["prod"] == task1 and releases["url"] == prod
    assert [(e["taskId"], e["action"]) for e in releases["history"]] == [
        (task1, "promote"), (task2, "release"), (task1, "release")]
    text = flow("releases", "Vite_Site", "--server", deploy_server.url, "--token", deploy_server.token, cwd=tmp_path)
    assert text.returncode == 0 and prod in text.stdout and task2 in text.stdout

    # another token cannot take the name: its prod release is refused with the reason, the
    # alias still serves the owner's release; nor can it promote, nor list the releases
    thief = vite_site(tmp_path / "thief", "vite.site", "9.9.9")  # same label, other spelling
    stolen = publish(flow, deploy_server, thief, *ARGS, "--prod", "--token", OTHER)
    assert stolen.returncode != 0
    assert "belongs to another token" in stolen.stderr, stolen.stderr
    assert rendered(browser, prod)[0] == "rendered 1.0.0"
    promoted = flow("promote", task2, "--server", deploy_server.url, "--token", OTHER, cwd=tmp_path)
    assert promoted.returncode != 0 and "404" in promoted.stderr
    assert flow("releases", "Vite_Site", "--server", deploy_server.url, "--token", OTHER,
                cwd=tmp_path).returncode != 0

    # a branch alias follows its branch
    git(site, "init", "-q", "-b", "feature/login")
    set_version(site, "3.0.0")
    git(site, "add", ".")
    git(site, "commit", "-q", "-m", "site")
    third, aliases = published(publish(flow, deploy_server, site, *ARGS))
    branch = f"http://vite-site--feature-login.localhost:{port}/"
    assert aliases == {"branch": branch}
    assert rendered(browser, branch)[0] == "rendered 3.0.0"
    set_version(site, "3.1.0")
    git(site, "commit", "-qam", "3.1.0")
    published(publish(flow, deploy_server, site, *ARGS))
    assert rendered(browser, branch)[0] == "rendered 3.1.0"
    assert rendered(browser, prod)[0] == "rendered 1.0.0"  # previews never move prod
    assert rendered(browser, third)[0] == "rendered 3.0.0"


def test_deployment_origin_cannot_use_the_dashboard_session(deploy_server, flow, browser, tmp_path):
    """Signed in to the dashboard at localhost:PORT, a deployment at <id>.localhost:PORT (same
    site, other origin) reads no cookie of it and gets nothing from the API or the dashboard's
    routes with credentials: the browser refuses every cross-origin read (no CORS headers)."""
    site = vite_site(tmp_path / "site", "cookie-site", "1.0.0")
    url, _ = published(publish(flow, deploy_server, site, *ARGS))
    task = url.split("//", 1)[1].split(".", 1)[0]
    dashboard = f"http://localhost:{deploy_server.port}"
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(dashboard + "/")
        page.fill("#token", deploy_server.token)
        page.click("#signin")
        page.wait_for_selector("#tasks")
        assert ctx.cookies(dashboard), "the dashboard set no session cookie"
        assert page.evaluate("fetch('/ui/api/tasks', {credentials: 'include'}).then(r => r.status)") == 200
        page.goto(url)
        page.wait_for_function("document.getElementById('app').textContent.startsWith('rendered')")
        assert page.evaluate("document.cookie") == ""
        probe = """async (u) => { try { const r = await fetch(u, {credentials: 'include'});
                       return 'read ' + r.status + ' ' + (await r.text()).slice(0, 80); }
                   catch (e) { return 'blocked'; } }"""
        for target in (f"{dashboard}/ui/api/tasks", f"{dashboard}/api/tasks/{task}",
                       f"{dashboard}/artifacts/{task}/"):
            assert page.evaluate(probe, target) == "blocked", target
        # a simple cross-origin POST (no preflight) reaches no promote without the token
        status = page.evaluate("""async (u) => { try { const r = await fetch(u, {method: 'POST',
                                      credentials: 'include', mode: 'no-cors'}); return r.type; }
                                  catch (e) { return 'blocked'; } }""", f"{dashboard}/api/tasks/{task}/promote")
        assert status in ("opaque", "blocked")
        assert json.loads(flow("releases", "cookie-site", "--json", "--server", deploy_server.url, "--token",
                               deploy_server.token, cwd=tmp_path).stdout or "{}").get("prod") is None
    finally:
        ctx.close()


def test_deployment_responses(deploy_server, flow, tmp_path):
    site = vite_site(tmp_path / "site", "resp-site", "1.0.0")
    url, _ = published(publish(flow, deploy_server, site, *ARGS))
    status, headers, body = fetch(url)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "content-security-policy" not in headers  # scripts run: the origin is the boundary
    assert headers["cache-control"] == "no-cache" and headers["x-content-type-options"] == "nosniff"
    status, headers, body = fetch(url + "assets/index-4f2a9c1b.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = headers["etag"]
    status, _, body304 = fetch(url + "assets/index-4f2a9c1b.js", {"If-None-Match": etag})
    assert status == 304 and body304 == b""
    assert fetch(url + "assets/app-Bx3k9a1Q.css")[1]["content-type"] == "text/css; charset=utf-8"
    status, headers, zipped = fetch(url + "assets/index-4f2a9c1b.js", {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == body
    assert len(zipped) < len(body) and headers["etag"] != etag
    brotli = pytest.importorskip("brotli")
    status, headers, squeezed = fetch(url + "assets/index-4f2a9c1b.js", {"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] == "br" and brotli.decompress(squeezed) == body
    status, headers, _ = fetch(url + "assets/index-4f2a9c1b.js", {"Accept-Encoding": "br;q=0"})
    assert "content-encoding" not in headers
    # 404.html for a missing path; HEAD; no other method; a directory without its slash
    status, headers, body = fetch(url + "no/such/page")
    assert status == 404 and b"custom not found" in body
    assert fetch(url + "assets/index-4f2a9c1b.js", method="HEAD")[2] == b""
    assert fetch(url, method="POST")[0] == 405
    assert fetch(url + "assets")[0] == 404  # no index.html there: not a page
    status, headers, _ = fetch(url + "docs?x=1")  # a directory without its slash
    assert status == 301 and headers["location"] == "/docs/?x=1"
    assert fetch(url + "docs/")[2] == b"<!doctype html><h1>docs</h1>"
    assert fetch(url + "a%20b.txt")[2] == b"spaced"
    assert fetch(url + "a%2520b.txt")[0] == 404  # decoded once, as the URL says
    # unknown deployments and aliases
    port = deploy_server.port
    for bad in (f"http://{'0' * 24}.localhost:{port}/", f"http://no-such-project.localhost:{port}/",
                f"http://a.b.localhost:{port}/", f"http://resp-site--nobranch.localhost:{port}/"):
        assert fetch(bad)[0] == 404, bad
    # traversal through the path stays inside the deployment
    for path in ("..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "assets/../../x"):
        status, _, body = fetch(url + path)
        assert status == 404 and b"root:" not in body


def test_spa_fallback_is_opt_in(deploy_server, flow, tmp_path):
    spa = vite_site(tmp_path / "spa", "spa-site", "1.0.0", spa=True)
    url, _ = published(publish(flow, deploy_server, spa, *ARGS))
    status, headers, body = fetch(url + "users/42/profile")
    assert status == 200 and b'<div id="app">' in body
    assert fetch(url + "assets/missing.js")[0] == 404  # a file path is never answered with the page


def test_build_end_to_url_answering_is_fast(deploy_server, flow, tmp_path):
    """The deployment URL answers as soon as the task is done (no cache to warm, no copy)."""
    site = vite_site(tmp_path / "fast", "fast-site", "1.0.0")
    url, _ = published(publish(flow, deploy_server, site, *ARGS))
    started = time.monotonic()
    assert fetch(url)[0] == 200
    assert time.monotonic() - started < 1.0
    shutil.rmtree(tmp_path / "fast")


def test_names_and_hosts_cannot_be_hijacked(deploy_server, flow, browser, tmp_path):
    """Another token's preview of an owned name deploys but cannot be promoted onto its alias;
    a failed build cannot be promoted; a deployment cannot toss a cookie to the dashboard or to
    another deployment (Domain=localhost is refused by the browser); Host names that only look
    like the deploy domain reach the dashboard's app, never a deployment."""
    owner_site = vite_site(tmp_path / "owner", "owned-site", "1.0.0")
    owned, _ = published(publish(flow, deploy_server, owner_site, *ARGS, "--prod"))
    prod = f"http://owned-site.localhost:{deploy_server.port}/"
    thief = vite_site(tmp_path / "thief", "owned_site", "6.6.6")
    preview, aliases = published(publish(flow, deploy_server, thief, *ARGS, "--token", OTHER))
    assert aliases == {}  # a preview without a branch moves no alias
    task = preview.split("//", 1)[1].split(".", 1)[0]
    took = flow("promote", task, "--server", deploy_server.url, "--token", OTHER, cwd=tmp_path)
    assert took.returncode != 0 and "belongs to another token" in took.stderr, took.stderr
    assert fetch(prod)[2].find(b'id="app"') > 0 and rendered(browser, prod)[0] == "rendered 1.0.0"
    # a failed build is no release
    (owner_site / "build.js").write_text("process.exit(3);\n")
    failed = publish(flow, deploy_server, owner_site, *ARGS, "--detach")
    failed_id = failed.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while deploy_server.get(f"/api/tasks/{failed_id}")["state"] != "failed":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    refused = flow("promote", failed_id, "--server", deploy_server.url, "--token", deploy_server.token, cwd=tmp_path)
    assert refused.returncode != 0 and "not done" in refused.stderr, refused.stderr
    # cookie tossing from a deployment
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(owned)
        page.evaluate("document.cookie = 'flowcb_session=tossed; Domain=localhost; Path=/'")
        page.evaluate("document.cookie = 'mine=1; Path=/'")
        assert {c["domain"] for c in ctx.cookies()} == {owned.split("//", 1)[1].split(":", 1)[0]}
    finally:
        ctx.close()
    # hosts that are not under the deploy domain go to the server's own app (JSON 404 there)
    port = deploy_server.port
    for host in (f"{task}.localhost.evil.example:{port}", f"{task}localhost:{port}", f"evil.example:{port}"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/index.html", headers={"Host": host})
        reply = conn.getresponse()
        assert reply.status == 404 and reply.getheader("content-type") == "application/json", host
        conn.close()
    assert fetch(f"http://{task.upper()}.LOCALHOST:{port}/")[0] == 200  # host names are case-blind


def test_deploy_domain_option(tmp_path, git_daemon):
    """``--deploy-domain``: deployments under the given wildcard domain (and its scheme), the
    default ``*.localhost`` then no deployment host; a value that is no domain is refused."""
    from cloudbuild_server_support import Client, ServerProc, final, new_repo, npm_project

    js = "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/index.html', 'hello');\n"
    with ServerProc(tmp_path / "data", "--deploy-domain", "https://Preview.Example.test") as srv, \
            Client(srv.url) as client:
        ack = client.publish(name="dd-site", version="1.0.0", source="git", prod=True, ref="main",
                             repo=new_repo(git_daemon, npm_project("dd-site", "1.0.0", js)),
                             buildCmd=["npm", "run", "build"])
        done = final(client.wait(ack["taskId"]))
        assert done["payload"]["deploymentUrl"] == f"https://{ack['taskId']}.preview.example.test/"
        assert {"kind": "prod", "url": "https://dd-site.preview.example.test/"} in done["payload"]["aliases"]
        for host in (f"{ack['taskId']}.preview.example.test", "dd-site.preview.example.test:443"):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("GET", "/", headers={"Host": host})
            assert conn.getresponse().read() == b"hello", host
            conn.close()
        assert fetch(f"http://{ack['taskId']}.localhost:{srv.port}/")[2] != b"hello"  # the server's own app
    bad = ServerProc(tmp_path / "bad", "--deploy-domain", "not a domain")
    with pytest.raises(RuntimeError, match="is not a domain name"):
        bad.start()
