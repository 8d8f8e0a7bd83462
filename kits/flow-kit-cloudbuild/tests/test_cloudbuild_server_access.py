"""flow-cloudbuild-server access and quotas, against the real server on loopback: a refused token
closes the whole connection, failed attempts are limited per address (sockets and HTTP alike),
connections that never authenticate are dropped, guessable tokens are refused at start; per-token
build slots and upload quotas; uploads deleted when their task ends or expires; old tasks and
artifacts pruned while prod releases stay."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket
from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    ServerProc,
    final,
    http_get,
    http_request,
    logs,
    new_repo,
    npm_project,
    protocol,
    server_env,
    tar_gz,
    upload,
)

WS_PATH = "/socket.io/?EIO=4&transport=websocket"
BAD = "not-the-token-0123456789"


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def raw_socket(server: ServerProc, timeout: float = 15) -> websocket.WebSocket:
    """An Engine.IO websocket that has seen the server's open packet (no namespace yet)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}{WS_PATH}", timeout=timeout)
    opened = ws.recv()
    assert opened.startswith("0{"), opened
    return ws


def until_closed(ws: websocket.WebSocket) -> list[str]:
    """Every text frame until the server closes the websocket (raises on the recv timeout)."""
    frames = []
    while True:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            return frames
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return frames
        frames.append(data.decode())


def refusal(frames: list[str]) -> dict:
    """The {"code", "message", ...} of the CONNECT_ERROR among ``frames`` (its ``data``; its
    ``message`` is the same sentence)."""
    [error] = [f for f in frames if f.startswith("44")]
    packet = json.loads(error[2:])
    assert set(packet) == {"message", "data"} and packet["message"] == packet["data"]["message"], packet
    return packet["data"]


def connect_with(server: ServerProc, token: str) -> dict:
    """Try ``token`` on a fresh raw socket; the refusal, once the server closed the socket."""
    ws = raw_socket(server)
    try:
        ws.send("40" + json.dumps({"token": token}))
        return refusal(until_closed(ws))
    finally:
        ws.close()


def bearer(server: ServerProc, token: str, source: str = "127.0.0.1") -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", "/api/tasks/" + "0" * 24, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


# -- tokens ------------------------------------------------------------------------------------
def test_a_refused_token_closes_the_whole_connection(tmp_path):
    with ServerProc(tmp_path / "d") as s:
        ws = raw_socket(s)
        ws.send("40" + json.dumps({"token": BAD}))
        frames = until_closed(ws)  # the websocket itself ends: no second guess on it
        assert refusal(frames) == {"code": "auth",
                                   "message": 'missing or invalid token; connect with auth {"token": "<token>"}'}
        assert frames[-1].startswith("44")  # then the websocket's close: no engine.io CLOSE
        with pytest.raises((websocket.WebSocketConnectionClosedException, BrokenPipeError,
                            ConnectionResetError)):
            for _ in range(3):
                ws.send("40" + json.dumps({"token": TOKEN}))
                ws.recv()
        with Client(s.url, TOKEN) as c:  # a valid token still gets in
            assert c.sio.connected


def test_the_11th_failed_attempt_within_the_window_is_refused_with_retry_after(tmp_path):
    with ServerProc(tmp_path / "d", config={"auth-failures": 10, "auth-window": 8}) as s:
        for _ in range(5):  # sockets and bearer routes share one count per address
            assert connect_with(s, BAD)["code"] == "auth"
            assert bearer(s, BAD)[0] == 401
        limited = connect_with(s, BAD)
        assert limited["code"] == "refused" and 1 <= limited["retryAfter"] <= 8, limited
        assert "too many failed token attempts from 127.0.0.1" in limited["message"]
        assert "retry in" in limited["message"] and "valid token" in limited["message"]
        # while limited, the token is not even looked at: a right guess would not get through
        assert connect_with(s, TOKEN)["code"] == "refused"
        status, headers, body = bearer(s, TOKEN)
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 8
        assert body["error"]["code"] == "refused" and body["retryAfter"] == int(headers["retry-after"])
        # another address is not limited
        assert bearer(s, TOKEN, source="127.0.0.2")[0] == 404
        # the window passes: the address may try again
        wait_for(lambda: bearer(s, TOKEN)[0] == 404, 30, "the failure window to pass")
        with Client(s.url, TOKEN) as c:
            assert c.sio.connected


def _login_from(s: ServerProc, token: str, forwarded_for: str | None = None) -> int:
    """The status of a dashboard sign-in from 127.0.0.1, optionally claiming another client."""
    headers = {"Content-Type": "application/json", "Origin": s.url}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return http_request("POST", s.url + "/ui/api/login", body=json.dumps({"token": token}).encode(),
                        headers=headers)[0]


def _bearer_from(s: ServerProc, token: str, source: str, forwarded_for: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", "/api/tasks/" + "0" * 24,
                     headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded_for})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_x_forwarded_for_from_an_untrusted_peer_neither_escapes_nor_redirects_the_limit(tmp_path):
    """A build can reach the server's port from loopback; by default no peer is a trusted proxy,
    so its X-Forwarded-For is ignored: its failures count against its own address (one per
    guess, whatever address it claims), and a real client elsewhere is not locked out."""
    with ServerProc(tmp_path / "d", config={"auth-failures": 4, "auth-window": 60}) as s:
        victim = "127.0.0.2"
        for _ in range(2):  # bearer routes and the dashboard sign-in, each claiming the victim's address
            assert _bearer_from(s, BAD, "127.0.0.1", victim) == 401
            assert _login_from(s, BAD, forwarded_for=victim) == 401
        # the spoofer is now limited, whatever it claims to be
        assert _bearer_from(s, BAD, "127.0.0.1", "198.51.100.8") == 429
        assert _login_from(s, TOKEN, forwarded_for="198.51.100.99") == 429
        ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}{WS_PATH}", timeout=15,
                                         header=["X-Forwarded-For: 203.0.113.50"])
        try:
            assert ws.recv().startswith("0{")
            ws.send("40" + json.dumps({"token": TOKEN}))
            assert refusal(until_closed(ws))["code"] == "refused"
        finally:
            ws.close()
        # the real client at the address the spoofer named still gets through with a valid token
        assert bearer(s, TOKEN, source=victim)[0] == 404
        assert _bearer_from(s, TOKEN, victim, victim) == 404


def test_forwarded_allow_ips_names_the_proxy_whose_x_forwarded_for_is_honoured(tmp_path):
    with ServerProc(tmp_path / "d", "--forwarded-allow-ips", "127.0.0.1",
                    config={"auth-failures": 3, "auth-window": 60}) as s:
        for _ in range(3):  # through the proxy on 127.0.0.1: the client it names is counted
            assert _bearer_from(s, BAD, "127.0.0.1", "203.0.113.7") == 401
        assert _bearer_from(s, TOKEN, "127.0.0.1", "203.0.113.7") == 429
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=15)
        try:
            conn.request("GET", "/api/tasks/" + "0" * 24,
                         headers={"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": "203.0.113.7"})
            resp = conn.getresponse()
            status, body = resp.status, json.loads(resp.read())
        finally:
            conn.close()
        assert status == 429 and "from 203.0.113.7" in body["error"]["message"]
        # other clients behind the proxy, and the proxy's own address, are not limited
        assert _bearer_from(s, TOKEN, "127.0.0.1", "203.0.113.8") == 404
        assert bearer(s, TOKEN)[0] == 404
        # a peer that is not the proxy is its own address, whatever it claims
        for _ in range(3):
            assert _bearer_from(s, BAD, "127.0.0.3", "203.0.113.9") == 401
        assert _bearer_from(s, TOKEN, "127.0.0.1", "203.0.113.9") == 404
        assert _bearer_from(s, TOKEN, "127.0.0.3", "203.0.113.10") == 429


def test_a_connection_that_never_authenticates_is_dropped_after_the_deadline(tmp_path):
    with ServerProc(tmp_path / "d", config={"auth-timeout": 1}) as s, Client(s.url, TOKEN) as c:
        ws = raw_socket(s)
        started = time.monotonic()
        frames = until_closed(ws)  # recv times out after 15 s: the server must close first
        waited = time.monotonic() - started
        assert frames == ["1"] and 0.8 <= waited < 10, (frames, waited)
        # an authenticated socket older than the deadline stays
        assert c.sio.connected
        ack = c.call("attach", {"taskId": "0" * 24, "afterSeq": 0})
        assert ack["ok"] is False and ack["error"]["code"] == "not-found"


def test_unauthenticated_connections_per_address_are_capped(tmp_path):
    with ServerProc(tmp_path / "d", config={"auth-timeout": 60}) as s:
        held = [raw_socket(s) for _ in range(16)]
        try:
            with pytest.raises(websocket.WebSocketBadStatusException):
                raw_socket(s)
            held.pop().close()
            held.append(wait_for(lambda: _try_raw(s), 10, "a slot to free up"))
        finally:
            for ws in held:
                ws.close()


def _try_raw(s: ServerProc) -> websocket.WebSocket | None:
    try:
        return raw_socket(s)
    except websocket.WebSocketBadStatusException:
        return None


def run_server(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir",
                           str(tmp_path / "d"), *args], capture_output=True, text=True, timeout=60,
                          env=server_env(**env))


@pytest.mark.parametrize("where", ["env", "file", "argv"])
def test_a_short_token_is_refused_at_start_with_how_to_make_one(tmp_path, where):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# ours\n{TOKEN}\nshort-token\n")
    args, env = {"env": ((), {protocol.TOKENS_ENV: f"{TOKEN},fifteen-chars-x"}),
                 "file": (("--tokens-file", str(tokens_file)), {}),
                 "argv": (("--token", "s3cret"), {})}[where]
    result = run_server(tmp_path, *args, **env)
    assert result.returncode == 2, result
    [line] = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert line.startswith("flow-cloudbuild-server: error: 1 token(s) are shorter than 16 characters")
    assert 'python -c "import secrets; print(secrets.token_urlsafe())"' in line
    assert "short-token" not in result.stderr and "s3cret" not in result.stderr


def test_a_token_on_the_command_line_works_but_warns(tmp_path):
    s = ServerProc(tmp_path / "d", "--token", TOKEN, tokens=())
    with s:
        with Client(s.url, TOKEN) as c:
            assert c.sio.connected
        [warning] = [ln for ln in s.stderr().splitlines() if "--token" in ln]
        assert warning.startswith("flow-cloudbuild-server: warning: ") and "ps" in warning
        assert "FLOW_CLOUDBUILD_TOKENS" in warning and "--tokens-file" in warning
        assert TOKEN not in s.stderr()
    with ServerProc(tmp_path / "e") as quiet:  # tokens from the environment: no warning
        assert "--token" not in quiet.stderr()


# -- build slots per token ----------------------------------------------------------------------
def payload(url: str, **extra) -> dict:
    p = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
         "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 300}
    p.update(extra)
    return p


SLEEPER = npm_project(build_js="console.log('sleeping'); setInterval(() => {}, 1000);\n")


def test_a_token_at_its_build_limit_waits_while_another_tokens_build_runs(tmp_path, git_daemon):
    # concurrency 2 and the default limit (concurrency - 1): one token gets one build slot
    sleeper, quick = new_repo(git_daemon, SLEEPER), new_repo(git_daemon, npm_project())
    with ServerProc(tmp_path / "d", "--concurrency", "2") as s, \
            Client(s.url, TOKEN) as a, Client(s.url, OTHER_TOKEN) as b:
        first = a.publish(**payload(sleeper))["taskId"]
        wait_for(lambda: "sleeping" in logs(a.ordered(first)), 120, "the first build to run")
        second = a.publish(**payload(quick))["taskId"]
        other = b.publish(**payload(quick))["taskId"]
        assert final(b.wait(other))["action"] == "done"  # the other token's build ran meanwhile
        status, raw = http_get(f"{s.url}/api/tasks/{second}", token=TOKEN)
        assert status == 200 and json.loads(raw)["state"] == "queued"
        assert [m["data"]["action"] for m in a.ordered(second)] == ["queued"]
        assert a.call("cancel", {"taskId": first})["ok"] is True
        assert final(a.wait(first))["action"] == "cancelled"
        assert final(a.wait(second))["action"] == "done"  # the freed slot goes to the waiting task


# -- uploads ------------------------------------------------------------------------------------
def upload_files(s: ServerProc, upload_id: str) -> list[str]:
    return sorted(p.name for p in (s.data_dir / "uploads").iterdir() if upload_id in p.name)


def upload_payload(upload_id: str, **extra) -> dict:
    p = {"name": "demo", "version": "1.0.0", "source": "upload", "uploadId": upload_id,
         "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 300}
    p.update(extra)
    return p


def test_pending_uploads_per_token_are_capped_by_count_and_bytes(tmp_path):
    blob = tar_gz({"noise": os.urandom(1000)})  # does not compress: about 1.2 kB
    project = tar_gz({k: v.encode() for k, v in npm_project().items()})
    with ServerProc(tmp_path / "d", config={"max-pending-uploads": 2,
                                            "max-pending-upload-bytes": 3 * len(blob)}) as s, \
            Client(s.url, TOKEN) as c:
        assert upload(s, project)[0] == 201 and upload(s, blob)[0] == 201
        status, body = upload(s, blob)
        assert status == 429 and body["error"]["code"] == "refused"
        assert "already holds 2 uploads no task used yet" in body["error"]["message"]
        assert "\n" not in body["error"]["message"]
        # a task uses one: it no longer counts, and no second task may use it
        used = next(p.name.split(".")[0] for p in (s.data_dir / "uploads").glob("*.json")
                    if json.loads(p.read_text())["size"] == len(project))
        task_id = c.publish(**upload_payload(used))["taskId"]
        again = c.publish(**upload_payload(used))
        assert again["ok"] is False and again["error"]["code"] == "refused"
        assert f"already used by task {task_id}" in again["error"]["message"]
        assert upload(s, blob)[0] == 201
        c.wait(task_id)
        # bytes: another token holds one blob; a second upload of 2.2 blobs passes the count, not the bytes
        assert upload(s, blob, OTHER_TOKEN)[0] == 201
        big = tar_gz({"noise": os.urandom(int(2.2 * len(blob)))})
        status, body = upload(s, big, OTHER_TOKEN)
        assert status == 429 and f"would exceed {3 * len(blob)} bytes" in body["error"]["message"]
        assert upload(s, blob, OTHER_TOKEN)[0] == 201  # what fits is still taken


@pytest.mark.parametrize("build_js, state", [
    (None, "done"),
    ("console.error('broken'); process.exit(3);\n", "failed"),
])
def test_an_upload_is_deleted_when_its_task_ends(tmp_path, build_js, state):
    """Its sources go at once; the record that the task used it (a few bytes) stays, so that a
    reuse is told which task used it (test_cloudbuild_server_bounds.py)."""
    project = tar_gz({k: v.encode() for k, v in npm_project(build_js=build_js).items()})
    with ServerProc(tmp_path / "d") as s, Client(s.url, TOKEN) as c:
        status, body = upload(s, project)
        assert status == 201
        upload_id = body["uploadId"]
        assert upload_files(s, upload_id) == [f"{upload_id}.json", f"{upload_id}.tar.gz"]
        task_id = c.publish(**upload_payload(upload_id))["taskId"]
        assert final(c.wait(task_id))["action"] == state
        assert upload_files(s, upload_id) == [f"{upload_id}.json", f"{upload_id}.task"]


def test_an_upload_no_task_used_expires(tmp_path):
    with ServerProc(tmp_path / "d", config={"upload-retention-hours": 0.0005}) as s:  # 1.8 s
        keep = tar_gz({"a": b"b"})
        upload_id = upload(s, keep)[1]["uploadId"]
        assert upload_files(s, upload_id)
        wait_for(lambda: upload_files(s, upload_id) == [], 30, "the unused upload to be deleted")


# -- retention ----------------------------------------------------------------------------------
def backdate(s: ServerProc, task_id: str, days: float) -> None:
    path = s.data_dir / "tasks" / task_id / "task.json"
    record = json.loads(path.read_text())
    record["finishedAt"] -= int(days * 86400 * 1000)
    path.write_text(json.dumps(record))


def test_retention_prunes_old_preview_tasks_and_artifacts_but_keeps_prod_releases(tmp_path, git_daemon):
    url = new_repo(git_daemon, npm_project())
    s = ServerProc(tmp_path / "d", config={"retention-days": 1})
    with s, Client(s.url, TOKEN) as c:
        old_preview = c.publish(**payload(url))["taskId"]
        release = c.publish(**payload(url, prod=True))["taskId"]
        recent = c.publish(**payload(url, version="1.0.1"))["taskId"]
        for task_id in (old_preview, release, recent):
            assert final(c.wait(task_id))["action"] == "done"
        [art] = final(c.ordered(release))["payload"]["artifacts"]
    for task_id in (old_preview, release, recent):
        assert (s.data_dir / "tasks" / task_id).is_dir() and (s.data_dir / "artifacts" / task_id).is_dir()
    backdate(s, old_preview, 2)
    backdate(s, release, 2)
    with s:  # the sweep runs at start
        wait_for(lambda: not (s.data_dir / "tasks" / old_preview).exists(), 30, "the old preview to go")
        assert not (s.data_dir / "artifacts" / old_preview).exists()
        assert http_get(f"{s.url}/api/tasks/{old_preview}", token=TOKEN)[0] == 404
        for task_id in (release, recent):
            assert (s.data_dir / "tasks" / task_id).is_dir() and (s.data_dir / "artifacts" / task_id).is_dir()
        local_url = art["url"].replace(art["url"].split("/artifacts/")[0], s.url)
        assert http_get(local_url) == (200, b'console.log("built");\n')


@pytest.mark.parametrize("config, needle", [
    ({"auth-timeout": 0}, "auth-timeout must be a number of seconds > 0"),
    ({"auth-failures": 0}, "auth-failures must be an integer >= 1"),
    ({"max-builds-per-token": "2"}, "max-builds-per-token must be an integer >= 1"),
    ({"max-pending-upload-bytes": "lots"}, "max-pending-upload-bytes must be a size"),
    ({"upload-retention-hours": 0}, "upload-retention-hours must be a number of hours > 0"),
    ({"retention-days": -1}, "retention-days must be a number of days >= 0"),
])
def test_bad_access_settings_are_one_line_errors(tmp_path, config, needle):
    cfg = tmp_path / "server.json"
    cfg.write_text(json.dumps(config))
    result = run_server(tmp_path, "--config", str(cfg), **{protocol.TOKENS_ENV: TOKEN})
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("flow-cloudbuild-server: error: ") and needle in line
