"""``flow publish`` end to end: the real CLI, the real flow-cloudbuild-server, real git.

The kit is installed once per module with ``flow buildkit add kits/flow-kit-cloudbuild
--no-index`` into a temporary FLOW_HOME; the server is the ``flow-cloudbuild-server`` script
that install put into the managed environment. Git sources come from a ``git daemon`` on
loopback. Nothing reaches the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from cloudbuild_publish_support import (
    assert_protocol_shape,
    error_lines,
    free_port,
    git,
    git_project,
    is_deployment_url,
    json_lines,
    make_site,
    needs_node,
    open_deployment,
    publish,
)


@pytest.fixture(scope="module")
def server(publish_server):
    """The publish tests' build server (cloudbuild_publish_support), not the server tests' one."""
    return publish_server


pytestmark = needs_node

# -- success ---------------------------------------------------------------------------------


def test_upload_without_git_host_succeeds_and_prints_artifact_url_last(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="upload-site")
    git(project, "init", "-q", "-b", "main")  # a repository without any remote
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "first")
    (project / "untracked-notes.txt").write_text("not tracked, uploaded all the same\n")

    result = publish(flow, server, project, "--build-cmd", "npm run build")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    url = lines[-1]  # the deployment, at its own origin, printed last
    assert is_deployment_url(url, server.port), lines[-5:]
    assert any(line.startswith("==> build") for line in lines)
    assert "build | wrote dist/index.html" in lines
    assert open_deployment(url)[2] == b"<h1>1.0.0</h1>\n"
    assert error_lines(result.stderr) == []


LIST_JS = """
const fs = require("fs"), path = require("path");
const out = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== "node_modules") walk(p); } else out.push(path.relative(".", p));
  }
})(".");
fs.mkdirSync("dist", {recursive: true});
fs.writeFileSync("dist/files.json", JSON.stringify(out.sort()));
"""


def test_upload_sends_what_the_user_sees_even_untracked_inside_a_parent_repo(flow, server, tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    git(parent, "init", "-q", "-b", "main")
    (parent / ".gitignore").write_text("/site/\n")  # the parent keeps the project out of its tree
    git(parent, "add", ".gitignore")
    git(parent, "commit", "-q", "-m", "parent")
    project = make_site(parent / "site", name="seen-site")
    package = json.loads((project / "package.json").read_text())
    package["scripts"]["list"] = "node list.js"
    (project / "package.json").write_text(json.dumps(package))
    (project / "list.js").write_text(LIST_JS)
    (project / "notes.log").write_text("kept by git, not needed by the server\n")
    (project / ".flowignore").write_text("*.log\n")
    (project / "src").mkdir()
    (project / "src" / "page.html").write_text("<p>untracked, sent</p>\n")
    (project / "src" / ".gitignore").write_text("local.html\n")
    (project / "src" / "local.html").write_text("<p>ignored below src/</p>\n")
    (project / "node_modules").mkdir()
    (project / "node_modules" / "big.js").write_text("never sent\n")

    result = publish(flow, server, project, "--source", "upload", "--build-cmd", "npm run list")

    assert result.returncode == 0, result.stderr
    [files_url] = [w for w in result.stdout.split() if w.startswith(server.url + "/artifacts/")
                   and w.endswith("/files.json")]
    with urllib.request.urlopen(files_url, timeout=10) as r:
        sent = set(json.loads(r.read()))
    assert {"package.json", "list.js", "src/page.html", ".flowignore", ".gitignore"} <= sent, sent
    assert not sent & {"notes.log", "src/local.html", "node_modules/big.js"}, sent
    count = len([f for f in sent if not f.startswith("dist/")])
    assert f"uploading {count} files (" in result.stdout + result.stderr


def test_git_source_builds_the_pushed_branch(flow, server, git_host, tmp_path):
    project, _ = git_project(tmp_path / "clone", git_host, "git-site")

    result = publish(flow, server, project, "--build-cmd", "npm run build", "--json")

    assert result.returncode == 0, result.stderr
    messages = json_lines(result.stdout)
    assert_protocol_shape(messages)
    assert [m["meta"]["seq"] for m in messages] == list(range(1, len(messages) + 1))
    actions = [m["data"]["action"] for m in messages]
    assert actions[0] == "queued" and actions[-1] == "done"
    assert [a for a in actions if a != "log"] == [
        "queued", "prepare", "download", "install", "build", "publish", "done"]
    assert messages[-1]["data"]["payload"]["artifactUrl"].startswith(server.url)


def test_created_static_site_publishes_right_away(flow, server, tmp_path):
    """`flow create` with the kit's static-site template, then `flow publish`: nothing else."""
    created = flow("create", "my-site", "-k", "flow-kit-cloudbuild", "-t", "static-site",
                   "--defaults", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    project = tmp_path / "my-site"
    package = json.loads((project / "package.json").read_text())
    assert package["scripts"] == {"build": "node build.js"} and "dependencies" not in package
    assert (project / "package-lock.json").is_file()

    result = publish(flow, server, project, "--source", "upload")

    assert result.returncode == 0, result.stderr
    assert "build | my-site 0.1.0: 2 files in dist/" in result.stdout
    site_url = result.stdout.strip().splitlines()[-1]
    assert is_deployment_url(site_url, server.port)
    status, headers, body = open_deployment(site_url)  # the URL printed last opens the site
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<title>my-site</title>" in body
    assert "content-security-policy" not in headers  # its own origin: its scripts run
    files_url = f"{server.url}/artifacts/{site_url.split('//', 1)[1].split('.', 1)[0]}/"
    assert f"files: {files_url}" in result.stdout + result.stderr
    with urllib.request.urlopen(files_url, timeout=10) as response:
        assert {a["name"] for a in json.loads(response.read())} == {"index.html", "style.css"}


def test_create_lists_both_templates(flow, tmp_path):
    listed = flow("create", "--list", "-k", "flow-kit-cloudbuild", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "static-site" in listed.stdout and "python-package" in listed.stdout


# -- failures --------------------------------------------------------------------------------


def test_build_failure_exits_non_zero_naming_the_step(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="failing-site")

    result = publish(flow, server, project, "--source", "upload", "--build-cmd", "npm run fail")

    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "step 'build'" in errors[0]
    assert "fail | error: boom in fail.js" in result.stdout or \
        "build | error: boom in fail.js" in result.stdout
    assert "http://" not in result.stdout.strip().splitlines()[-1]


def test_connect_failure_names_the_server_url(flow, tmp_path):
    project = make_site(tmp_path / "site")
    closed = f"http://127.0.0.1:{free_port()}"

    result = flow("publish", "--server", closed, "--token", "x", "--source", "upload",
                  cwd=project)

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        error_lines(result.stderr)[0]] and closed in result.stderr
    assert "cannot connect to the build server" in result.stderr


def test_wrong_token_is_refused_with_a_fix(flow, server, tmp_path):
    project = make_site(tmp_path / "site")
    result = flow("publish", "--server", server.url, "--token", "wrong", "--source", "upload",
                  cwd=project)
    assert result.returncode == 1
    assert "refused the token" in result.stderr and "--token" in result.stderr


def test_token_is_never_read_from_the_project_file(flow, server, tmp_path):
    toml = ('[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n\n[tool.flow.cloudbuild]\n'
            f'token = "{server.token}"\nserver = "{server.url}"\nbuild-cmd = "npm run build"\n'
            'source = "upload"\n')
    project = make_site(tmp_path / "site", name="token-site", flow_toml=toml)

    refused = flow("publish", cwd=project)

    assert refused.returncode == 2
    assert "ignoring 'token' in [tool.flow.cloudbuild]" in refused.stderr
    assert "no token for the build server" in refused.stderr

    # from the environment, and from the global config: both work (project settings still
    # apply: server, build-cmd and source come from flow.toml)
    from_env = flow("publish", cwd=project, FLOW_CLOUDBUILD_TOKEN=server.token)
    assert from_env.returncode == 0, from_env.stderr
    setting = flow("config", "set", "cloudbuild.token", server.token, cwd=tmp_path)
    assert setting.returncode == 0, setting.stderr
    try:
        from_config = flow("publish", cwd=project)
        assert from_config.returncode == 0, from_config.stderr
        assert is_deployment_url(from_config.stdout.strip().splitlines()[-1], server.port)
    finally:
        flow("config", "set", "cloudbuild.token", "", cwd=tmp_path)


def test_uncommitted_and_unpushed_branches_say_how_to_fix_them(flow, server, git_host,
                                                                tmp_path):
    project, _ = git_project(tmp_path / "clone", git_host, "dirty-site")

    (project / "build.js").write_text("// edited\n" + (project / "build.js").read_text())
    dirty = publish(flow, server, project)
    assert dirty.returncode == 2
    assert "uncommitted changes" in dirty.stderr
    assert 'git commit -am' in dirty.stderr

    git(project, "commit", "-q", "-am", "edit")
    unpushed = publish(flow, server, project)
    assert unpushed.returncode == 2
    assert "branch main is not pushed" in unpushed.stderr
    assert "git push origin main" in unpushed.stderr

    git(project, "switch", "-q", "-c", "feature")
    new_branch = publish(flow, server, project)
    assert new_branch.returncode == 2
    assert "branch feature is not pushed: git push -u origin feature" in new_branch.stderr

    # the same working tree publishes fine as an upload
    uploaded = publish(flow, server, project, "--source", "upload", "--build-cmd",
                       "npm run build")
    assert uploaded.returncode == 0, uploaded.stderr


def test_prod_release_of_same_version_needs_force(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="prod-site", version="2.0.0")
    args = ("--source", "upload", "--build-cmd", "npm run build", "--prod")

    first = publish(flow, server, project, *args)
    assert first.returncode == 0, first.stderr

    again = publish(flow, server, project, *args)
    assert again.returncode == 2
    assert "prod-site 2.0.0 is already released on prod" in again.stderr
    assert "--force" in again.stderr

    forced = publish(flow, server, project, *args, "--force")
    assert forced.returncode == 0, forced.stderr


def test_help_never_imports_socketio(flow, tmp_path):
    for args in (("--help",), ("publish", "--help")):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "flowcore", *args], cwd=tmp_path,
            env=flow.env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "socketio" not in imported, args
        assert "publish" in result.stdout


def test_flow_starts_the_server_of_the_installed_kit(flow, tmp_path):
    """`flow cloudbuild-server` runs the server from flow's managed environment (not on PATH)."""
    help_result = flow("cloudbuild-server", "--help", cwd=tmp_path)
    assert help_result.returncode == 0, help_result.stderr
    assert "--concurrency" in help_result.stdout and "--redis-url" in help_result.stdout
    proc = flow.popen("cloudbuild-server", "--port", "0", "--data-dir", str(tmp_path / "data"), cwd=tmp_path,
                      FLOW_CLOUDBUILD_TOKENS="a-token-of-16-chars-or-more")
    try:
        first = proc.stdout.readline()
        assert first.startswith("flow-cloudbuild-server listening on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].strip()
        deadline = time.monotonic() + 20
        while True:  # the port is bound before uvicorn accepts on it
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                    assert json.loads(response.read())["ok"] is True
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "the server never answered /healthz"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = flow("cloudbuild-server", "--concurrency", "0", cwd=tmp_path)
    assert bad.returncode == 2
