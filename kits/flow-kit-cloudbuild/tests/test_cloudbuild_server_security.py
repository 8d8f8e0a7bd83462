"""flow-cloudbuild-server security rules, each against the real server on loopback: tokens,
ownership, repository and ref policy, the build command allowlist, git's empty configuration,
submodules, safe unpacking, artifact collection, the build's environment, process groups,
log caps, release gates, and restarts."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    ServerProc,
    actions,
    final,
    git,
    http_get,
    http_request,
    logs,
    new_repo,
    npm_project,
    protocol,
)


def payload(url: str, **extra) -> dict:
    p = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
         "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 120}
    p.update(extra)
    return p


def task_count(server: ServerProc) -> int:
    d = server.data_dir / "tasks"
    return len(list(d.iterdir())) if d.exists() else 0


# -- auth and ownership -----------------------------------------------------------------------
@pytest.mark.parametrize("auth", [None, {}, {"token": "wrong"}, {"token": ""}, {"token": 5}, "x"])
def test_connect_with_a_bad_token_is_refused(server, auth):
    import socketio

    sio = socketio.Client(reconnection=False)
    errors = []
    sio.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=5)
    # the CONNECT_ERROR packet's data: a sentence, and the structured refusal as plain JSON
    [error] = errors
    sentence = 'missing or invalid token; connect with auth {"token": "<token>"}'
    assert error == {"message": sentence, "data": {"code": "auth", "message": sentence}}


def test_only_the_creating_token_may_watch_cancel_or_read_a_task(server, git_daemon):
    url = new_repo(git_daemon, npm_project())
    with Client(server.url, TOKEN) as owner, Client(server.url, OTHER_TOKEN) as other:
        task_id = owner.publish(**payload(url))["taskId"]
        for event, data in (("attach", {"taskId": task_id, "afterSeq": 0}), ("cancel", {"taskId": task_id})):
            ack = other.call(event, data)
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        assert http_get(f"{server.url}/api/tasks/{task_id}", token=OTHER_TOKEN)[0] == 404  # as if missing
        assert http_get(f"{server.url}/api/tasks/{task_id}", token="nope")[0] == 401
        assert final(owner.wait(task_id))["action"] == "done"
        assert task_id not in other.messages
    assert http_get(f"{server.url}/api/tasks/{task_id}", token=TOKEN)[0] == 200


# -- repository, ref and build command policy (refused before any work) ------------------------
@pytest.mark.parametrize("repo", [
    "file:///etc", "/srv/git/repo", "./repo", "../repo", "repo", "ext::sh -c touch% /tmp/pwned",
    "-uupload-pack=touch /tmp/pwned", "--upload-pack=touch /tmp/pwned", "http://example.com/r.git",
    "ssh://example.com/r.git", "git@example.com:r.git", "https://user:secret@example.com/r.git",
    "fd::17", "https://", "git://-oProxyCommand=x/r", "https://exa mple.com/r.git", "ftp://example.com/r",
])
def test_repository_urls_outside_the_policy_are_refused_at_submit(client, server, repo):
    before = task_count(server)
    ack = client.publish(**payload(repo))
    assert ack["ok"] is False and ack["error"]["code"] in ("refused", "bad-request"), ack
    assert task_count(server) == before


def test_another_tokens_task_is_404_on_the_api_and_the_dashboard_alike(server, git_daemon):
    """One error rule on every HTTP route: another token's task answers exactly like a task id
    that does not exist (404 ``not-found``), on the bearer API and on the dashboard's API."""
    url = new_repo(git_daemon, npm_project())
    with Client(server.url, TOKEN) as owner:
        task_id = owner.publish(**payload(url))["taskId"]
        missing = "0" * 24
        replies = {}
        for tid in (task_id, missing):
            replies[tid, "api"] = http_get(f"{server.url}/api/tasks/{tid}", token=OTHER_TOKEN)
            cookie = _login_cookie(server.url, OTHER_TOKEN)
            for path in ("", "/events", "/log"):
                replies[tid, "ui" + path] = http_request("GET", f"{server.url}/ui/api/tasks/{tid}{path}",
                                                         headers={"Cookie": cookie})
        for (tid, where), (status, body) in replies.items():
            assert status == 404, (where, status, body)
            error = json.loads(body)["error"]
            assert error["code"] == protocol.ERROR_NOT_FOUND, (where, error)
            # worded as for the missing id: nothing tells the two apart but the id itself
            other = replies[missing if tid == task_id else task_id, where][1]
            assert body.replace(tid.encode(), b"<id>") == other.replace((missing if tid == task_id else task_id)
                                                                          .encode(), b"<id>"), where
        assert http_get(f"{server.url}/api/tasks/{task_id}", token=TOKEN)[0] == 200
        final(owner.wait(task_id))


def _login_cookie(url: str, token: str) -> str:
    """A dashboard session's cookie (``name=value``) for ``token``."""
    import urllib.request

    req = urllib.request.Request(url + "/ui/api/login", data=json.dumps({"token": token}).encode(), method="POST",
                                 headers={"Origin": url, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["Set-Cookie"].split(";", 1)[0]


def test_a_file_url_cannot_stand_in_for_the_git_daemon(client, server, git_daemon):
    url = new_repo(git_daemon, npm_project())
    local = git_daemon.base / url.rsplit("/", 1)[1]
    for repo in (f"file://{local}", str(local)):
        ack = client.publish(**payload(repo))
        assert ack["ok"] is False and ack["error"]["code"] == "refused"


@pytest.mark.parametrize("ref", ["-b", "--upload-pack=x", "main..other", "a b", "", "refs/../x", "x.lock"])
def test_bad_refs_are_refused(client, git_daemon, ref):
    ack = client.publish(**payload(git_daemon.url("whatever"), ref=ref))
    assert ack["ok"] is False and ack["error"]["code"] in ("refused", "bad-request")


@pytest.mark.parametrize("cmd", [
    ["sh", "-c", "npm run build"], ["bash"], ["npm", "run", "build", "&&", "rm", "-rf", "/"],
    ["npm", "run", "build; rm -rf /"], ["npm", "run", "-build"], ["npm", "install", "evil"],
    ["node", "build.js"], ["python", "-c", "print(1)"], ["npm", "run"], [], ["npm", 3], "npm run build",
])
def test_build_commands_outside_the_allowlist_are_refused_at_submit(client, server, git_daemon, cmd):
    before = task_count(server)
    ack = client.publish(**payload(git_daemon.url("whatever"), buildCmd=cmd))
    assert ack["ok"] is False and ack["error"]["code"] in ("refused", "bad-request"), ack
    assert task_count(server) == before


@pytest.mark.parametrize("name", ["../../etc", "/abs", "a/b/c", "", "x" * 300, ".hidden", "a\nb"])
def test_names_that_look_like_paths_are_refused(client, git_daemon, name):
    ack = client.publish(**payload(git_daemon.url("x"), name=name))
    assert ack["ok"] is False and ack["error"]["code"] == "bad-request"


def test_allowed_hosts_restrict_repositories(tmp_path, git_daemon):
    url = new_repo(git_daemon, npm_project())
    with ServerProc(tmp_path / "d1", config={"allowed-hosts": ["git.example.com"]}) as s, Client(s.url) as c:
        ack = c.publish(**payload(url))
        assert ack["ok"] is False and "127.0.0.1" in ack["error"]["message"]
    with ServerProc(tmp_path / "d2", config={"allowed-hosts": ["127.0.0.1"], "allowed-protocols": ["git"]}) as s, \
            Client(s.url) as c:
        assert final(c.wait(c.publish(**payload(url))["taskId"]))["action"] == "done"


# -- git runs with an empty config, no submodules --------------------------------------------
def test_git_ignores_the_server_users_config_and_fetches_no_submodules(tmp_path, git_daemon):
    sub_url = new_repo(git_daemon, {"secret.txt": "from the submodule"})
    files = npm_project(build_js=(
        "const fs = require('fs'); fs.mkdirSync('dist');\n"
        "const has = fs.existsSync('sub/secret.txt');\n"
        "fs.writeFileSync('dist/result.txt', has ? 'submodule fetched' : 'no submodule');\n"))
    url = new_repo(git_daemon, files)
    repo = git_daemon.base / url.rsplit("/", 1)[1]
    git(repo, "-c", "protocol.allow=always", "submodule", "add", "-q", sub_url, "sub")
    git(repo, "commit", "-q", "-m", "add submodule")
    evil = tmp_path / "evil.gitconfig"  # would redirect every clone of the daemon to a dead port
    evil.write_text(f'[url "git://127.0.0.1:1/"]\n\tinsteadOf = git://127.0.0.1:{git_daemon.port}/\n'
                    "[core]\n\thooksPath = /nonexistent\n")
    # The config reaches git from the server's environment and from the operator's build-env
    # (which every command of a task gets): git must ignore all of it.
    (tmp_path / ".gitconfig").write_text(evil.read_text())
    redirect = {"GIT_CONFIG_GLOBAL": str(evil), "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "url.git://127.0.0.1:1/.insteadOf",
                "GIT_CONFIG_VALUE_0": f"git://127.0.0.1:{git_daemon.port}/"}
    with ServerProc(tmp_path / "d", env={**redirect, "HOME": str(tmp_path)},
                    config={"build-env": redirect}) as s, Client(s.url) as c:
        msgs = c.wait(c.publish(**payload(url))["taskId"])
        assert final(msgs)["action"] == "done", logs(msgs)
        [art] = final(msgs)["payload"]["artifacts"]
        assert http_get(art["url"])[1] == b"no submodule"


# -- the build's environment, process groups, timeouts, cancel, log caps ------------------------
def test_the_build_gets_a_minimal_environment(client, server, git_daemon):
    files = npm_project(build_js=(
        "const fs = require('fs'); fs.mkdirSync('dist');\n"
        "fs.writeFileSync('dist/env.json', JSON.stringify(process.env));\n"))
    msgs = client.wait(client.publish(**payload(new_repo(git_daemon, files)))["taskId"])
    [art] = final(msgs)["payload"]["artifacts"]
    env = json.loads(http_get(art["url"])[1])
    text = json.dumps(env)
    assert "SERVER_SECRET" not in env and "do-not-leak-me" not in text
    assert TOKEN not in text and OTHER_TOKEN not in text and "FLOW_CLOUDBUILD_TOKENS" not in env
    assert env["HOME"].startswith(str(server.data_dir / "work"))
    assert env["LANG"] and env["PATH"]


def _sleeper(pid_dir: Path) -> dict[str, str]:
    """A build that starts a child and a grandchild, records their pids, then waits forever."""
    return npm_project(build_js=(
        "const fs = require('fs'); const cp = require('child_process');\n"
        f"const c = cp.spawn('sh', ['-c', 'sleep 300 & echo $! > {pid_dir}/grandchild; wait'], {{stdio: 'ignore'}});\n"
        f"fs.writeFileSync('{pid_dir}/child', String(c.pid));\n"
        f"fs.writeFileSync('{pid_dir}/node', String(process.pid));\n"
        "console.log('sleeping'); setInterval(() => {}, 1000);\n"))


def _pids(pid_dir: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while len(list(pid_dir.iterdir())) < 3 or any(not p.read_text().strip() for p in pid_dir.iterdir()):
        assert time.monotonic() < deadline, "the build never started its processes"
        time.sleep(0.05)
    return [int(p.read_text()) for p in pid_dir.iterdir()]


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its reaper counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def _all_dead(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_dead(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


# The process-group tests below run with --no-sandbox: they pin what the fallback for trusted
# setups still does. With the sandbox (the default) nothing outlives a build at all:
# test_cloudbuild_sandbox.py holds those tests (setsid, double fork, env -i, server crash).
@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    s = ServerProc(tmp_path_factory.mktemp("unsandboxed") / "data", "--no-sandbox").start()
    with Client(s.url) as c:
        yield c
    s.stop()


def test_timeout_kills_the_whole_process_group(unsandboxed, git_daemon, tmp_path):
    client = unsandboxed
    url = new_repo(git_daemon, _sleeper(tmp_path))
    ack = client.publish(**payload(url, timeout=4))
    pids = _pids(tmp_path)
    msgs = client.wait(ack["taskId"], timeout=60)
    end = final(msgs)
    assert end["action"] == "timed-out" and end["payload"]["step"] == "build"
    assert "timeout of 4 s" in end["payload"]["message"]
    assert _all_dead(pids), [p for p in pids if not _dead(p)]


def test_cancel_kills_the_whole_process_group(unsandboxed, git_daemon, tmp_path):
    client = unsandboxed
    url = new_repo(git_daemon, _sleeper(tmp_path))
    ack = client.publish(**payload(url))
    pids = _pids(tmp_path)
    assert client.call("cancel", {"taskId": ack["taskId"]}) == {"ok": True}
    end = final(client.wait(ack["taskId"], timeout=30))
    assert end["action"] == "cancelled" and end["payload"]["step"] == "build"
    assert _all_dead(pids)
    assert client.call("cancel", {"taskId": ack["taskId"]})["ok"] is True  # already over: harmless


def test_long_lines_are_truncated_with_a_marker(client, git_daemon):
    files = npm_project(build_js="console.log('x'.repeat(100000)); console.log('after');"
                                 "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a');")
    msgs = client.wait(client.publish(**payload(new_repo(git_daemon, files)))["taskId"])
    long = [line for line in logs(msgs) if line.startswith("xxxx")]
    assert len(long) == 1 and long[0].endswith(protocol.TRUNCATED_MARKER)
    assert len(long[0].encode()) <= protocol.MAX_LOG_LINE + len(protocol.TRUNCATED_MARKER.encode())
    assert "after" in logs(msgs) and final(msgs)["action"] == "done"


def test_total_log_volume_is_capped(tmp_path, git_daemon):
    files = npm_project(build_js="for (let i = 0; i < 100000; i++) console.log('line ' + i + ' ' + 'y'.repeat(50));"
                                 "require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a');")
    url = new_repo(git_daemon, files)
    with ServerProc(tmp_path / "d", config={"max-log-bytes": 200_000}) as s, Client(s.url) as c:
        msgs = c.wait(c.publish(**payload(url))["taskId"])
    end = final(msgs)
    assert end["action"] == "failed" and end["payload"]["step"] == "build"
    assert "output" in end["payload"]["message"]
    assert sum(len(x) for x in logs(msgs)) < 300_000


# -- uploads: safe unpacking -----------------------------------------------------------------
def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tf.addfile(e)
            else:
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tf.addfile(info, io.BytesIO(e[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _upload(server: ServerProc, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    status, raw = http_request("POST", server.url + "/api/uploads", body=body, token=token)
    return status, json.loads(raw)


@pytest.mark.parametrize("entries", [
    [("../escaped.txt", b"x")],
    [("/tmp/flow-abs-escape.txt", b"x")],
    [("ok/../../escaped.txt", b"x")],
    [_link("link", "/etc"), ("link/escaped.txt", b"x")],
    [_link("link", "../.."), ("link/escaped.txt", b"x")],
    [_link("hard", "/etc/passwd", tarfile.LNKTYPE)],
    [_link("dev", "", tarfile.CHRTYPE)],
], ids=["dotdot", "absolute", "inner-dotdot", "symlink-abs", "symlink-up", "hardlink-out", "device"])
def test_unsafe_archives_fail_in_download_and_write_nothing_outside(client, server, entries, tmp_path):
    files = [(k, v.encode()) for k, v in npm_project().items()]
    status, body = _upload(server, _tar(files + entries))
    assert status == 201
    ack = client.publish(name="demo", version="1.0.0", source="upload", uploadId=body["uploadId"],
                         buildCmd=["npm", "run", "build"])
    msgs = client.wait(ack["taskId"])
    assert final(msgs)["action"] == "failed" and final(msgs)["payload"]["step"] == "download"
    assert "install" not in actions(msgs)
    assert not (server.data_dir / "work" / "escaped.txt").exists()
    # os.walk, not rglob: the task's work dir may be removed meanwhile (after its final message)
    assert not [d for d, _, names in os.walk(server.data_dir) if "escaped.txt" in names]
    assert not Path("/tmp/flow-abs-escape.txt").exists() and not Path("/etc/escaped.txt").exists()


def test_uploads_need_a_token_a_gzip_body_and_a_bounded_size(tmp_path):
    with ServerProc(tmp_path / "d", "--max-upload-bytes", "2000") as s:
        assert _upload(s, b"\x1f\x8b" + b"0" * 10, token=None)[0] == 401
        status, body = _upload(s, b"PK not a tar")
        assert status == 400 and body["error"]["code"] == "bad-request"
        status, body = _upload(s, b"\x1f\x8b" + os.urandom(5000))
        assert status == 413 and "2000" in body["error"]["message"]
        assert not [p for p in (s.data_dir / "uploads").iterdir() if p.suffix != ".json" and ".part" in p.name]
        with Client(s.url) as c:  # an unknown upload id
            ack = c.publish(name="demo", version="1.0.0", source="upload", uploadId="0" * 24, buildCmd=None)
            assert ack["error"]["code"] == "not-found"


# -- artifacts: no symlinks out of the output dir ----------------------------------------------
def test_artifacts_do_not_follow_symlinks(client, server, git_daemon):
    files = npm_project(build_js=(
        "const fs = require('fs'); fs.mkdirSync('dist/sub', {recursive: true});\n"
        "fs.writeFileSync('dist/real.txt', 'real');\n"
        "fs.symlinkSync('/etc/passwd', 'dist/passwd');\n"
        "fs.symlinkSync('/etc', 'dist/etcdir');\n"
        "fs.symlinkSync('../package.json', 'dist/sub/pkg');\n"))
    msgs = client.wait(client.publish(**payload(new_repo(git_daemon, files)))["taskId"])
    task_id = msgs[0]["meta"]["taskId"]
    assert [a["name"] for a in final(msgs)["payload"]["artifacts"]] == ["real.txt"]
    skipped = [line for line in logs(msgs) if "skipped " in line]  # one summary line
    assert len(skipped) == 1 and "skipped 3 file(s)" in skipped[0] and "passwd" in skipped[0], skipped
    for name in ("passwd", "etcdir/passwd", "sub/pkg", "../../tasks", "%2e%2e/x"):
        assert http_get(f"{server.url}/artifacts/{task_id}/{name}")[0] == 404


# -- release gates ---------------------------------------------------------------------------
def test_freeze_window_refuses_prod_and_pre_build_checks_must_pass(tmp_path, git_daemon):
    now = datetime.now(UTC)
    config = {"freeze-windows": [{"name": "year-end freeze", "start": (now - timedelta(hours=1)).isoformat(),
                                  "end": (now + timedelta(hours=1)).isoformat()},
                                 {"name": "past", "start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}],
              "checks": [{"name": "no-todo", "argv": ["node", "-e",
                                                      "process.exit(require('fs').existsSync('TODO') ? 1 : 0)"]}]}
    ok_url = new_repo(git_daemon, npm_project())
    bad_files = npm_project()
    bad_files["TODO"] = "not done"
    bad_url = new_repo(git_daemon, bad_files)
    with ServerProc(tmp_path / "d", config=config) as s, Client(s.url) as c:
        ack = c.publish(**payload(ok_url, prod=True))
        assert ack["ok"] is False and ack["error"]["code"] == "refused"
        assert "year-end freeze" in ack["error"]["message"]
        msgs = c.wait(c.publish(**payload(ok_url))["taskId"])  # not prod: allowed
        assert final(msgs)["action"] == "done" and "pre-build check 'no-todo'" in logs(msgs)
        msgs = c.wait(c.publish(**payload(bad_url))["taskId"])
        end = final(msgs)
        assert end["action"] == "failed" and end["payload"]["step"] == "build"
        assert "no-todo" in end["payload"]["message"]
        assert "$ npm run build" not in logs(msgs)


# -- restarts keep history; a running task ends as failed --------------------------------------
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_a_restart_keeps_history_and_fails_the_running_task(tmp_path, git_daemon, how):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    url = new_repo(git_daemon, _sleeper(pid_dir))
    done_url = new_repo(git_daemon, npm_project())
    s = ServerProc(tmp_path / "d", "--no-sandbox").start()  # the unsandboxed fallback's reaping
    try:
        with Client(s.url) as c:
            finished = c.publish(**payload(done_url))["taskId"]
            before = c.wait(finished)
            running = c.publish(**payload(url))["taskId"]
            pids = _pids(pid_dir)
            seen = len(c.ordered(running))
        s.stop(how)
        if how == signal.SIGKILL:  # a crash cannot take the build's group down with it...
            assert not any(_dead(p) for p in pids)
            s.start()
            assert _all_dead(pids)  # ...the next start does
        else:
            assert _all_dead(pids)
            s.start()
        with Client(s.url) as c:
            assert c.call("attach", {"taskId": finished, "afterSeq": 0})["ok"]
            assert c.wait(finished) == before
            ack = c.call("attach", {"taskId": running, "afterSeq": 0})
            assert ack["ok"] and ack["task"]["state"] == "failed"
            msgs = c.wait(running)
        assert len(msgs) > seen and final(msgs)["payload"]["step"] == "build"
        assert ("restarted" if how == signal.SIGKILL else "stopped") in final(msgs)["payload"]["message"]
        assert [m["meta"]["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
    finally:
        s.stop()


def test_flow_reads_refusals_as_data_and_never_evaluates_them():
    from flow_kit_cloudbuild.client.session import _refusal

    sentence = "too many failed token attempts; retry in 5 s"
    assert _refusal({"message": sentence, "data": {"code": "refused", "message": sentence, "retryAfter": 5}}) \
        == {"code": "refused", "message": sentence, "retryAfter": 5}
    # a server before the structured form sent the dict's repr; its code and message still count
    assert _refusal({"message": "{'code': 'auth', 'message': 'invalid token'}"}) == \
        {"code": "auth", "message": "invalid token"}
    evil = "{'code': 'auth', 'message': __import__('os').system('false')}"
    assert _refusal({"message": evil}) == {"code": "auth", "message": evil}
    assert _refusal({"message": "Connection rejected by server"}) == {"message": "Connection rejected by server"}
    assert _refusal(None) is None and _refusal("x") is None
