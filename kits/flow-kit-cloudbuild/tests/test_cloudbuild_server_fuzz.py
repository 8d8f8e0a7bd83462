"""Malformed, oversized and unknown requests against the real flow-cloudbuild-server: every one
gets an error reply (never a crash, never a 500), and a build running meanwhile is not disturbed."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import quote

import pytest
from cloudbuild_server_support import TOKEN, Client, final, http_get, logs, new_repo, npm_project, protocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**62, max_value=2**62) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
publish_keys = st.sampled_from(["name", "version", "source", "repo", "ref", "uploadId", "buildCmd", "prod",
                                "force", "timeout", "taskId", "afterSeq", "extra"])
publishish = st.dictionaries(publish_keys, json_values, max_size=8)
events = st.sampled_from(["publish", "attach", "cancel"]) | st.text(min_size=1, max_size=30).filter(
    lambda e: e not in ("connect", "disconnect", "connect_error"))


@pytest.fixture(scope="module")
def long_build(server, git_daemon):
    """A build that is running while the fuzzing happens."""
    url = new_repo(git_daemon, npm_project(build_js=(
        "let i = 0; const t = setInterval(() => { console.log('tick ' + (++i)); if (i === 150) {"
        " clearInterval(t); require('fs').mkdirSync('dist'); require('fs').writeFileSync('dist/a', 'a'); } }, 20);")))
    c = Client(server.url)
    ack = c.publish(name="demo", version="1.0.0", source="git", repo=url, ref="main",
                    buildCmd=["npm", "run", "build"], timeout=120)
    assert ack["ok"]
    yield c, ack["taskId"]
    c.close()


@pytest.fixture(scope="module")
def fuzz_client(server):
    with Client(server.url) as c:
        yield c


def _check_ack(ack) -> None:
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if not ack["ok"]:
        assert ack["error"]["code"] in protocol.ERROR_CODES and ack["error"]["code"] != "internal", ack
        assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]


@FUZZ
@given(event=events, data=json_values | publishish)
def test_fuzzed_socket_events_get_an_error_reply(long_build, fuzz_client, event, data):
    ack = fuzz_client.call(event, data, timeout=10)
    _check_ack(ack)
    if event == "cancel" and ack["ok"]:  # only a real task of this token could be cancelled
        pytest.fail(f"cancel succeeded for {data!r}")


@FUZZ
@given(event=st.sampled_from(["publish", "attach", "cancel", "nope"]), args=st.lists(json_values, max_size=4))
def test_wrong_argument_counts_get_an_error_reply(long_build, fuzz_client, event, args):
    ack = fuzz_client.call(event, tuple(args) if len(args) != 1 else args[0], timeout=10)
    _check_ack(ack)


def test_oversized_events_are_refused_and_a_huge_one_only_drops_its_own_socket(server, long_build):
    with Client(server.url) as c:
        ack = c.call("publish", {"name": "x" * 200_000}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "bad-request"
        ack = c.call("attach", {"taskId": "a" * 24, "afterSeq": 0, "pad": ["y" * 1000] * 100}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "bad-request"
    c = Client(server.url)
    try:  # larger than the transport's buffer: the server drops this one connection
        c.sio.emit("publish", {"name": "z" * 3_000_000})
        deadline = time.monotonic() + 15
        while c.sio.connected:
            assert time.monotonic() < deadline, "the server kept a connection that sent 3 MB at once"
            time.sleep(0.02)
    finally:
        c.close()
    assert http_get(server.url + "/healthz")[0] == 200


methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
paths = st.one_of(
    st.sampled_from(["/healthz", "/api/uploads", "/api/tasks/", "/artifacts/", "/artifacts/x/", "/"]),
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["/api/tasks/", "/artifacts/", "/api/uploads/", "/", "/socket.io/"]),
              st.text(max_size=60)))


@FUZZ
@given(method=methods, path=paths, body=st.binary(max_size=2000),
       auth=st.sampled_from([None, f"Bearer {TOKEN}", "Bearer nope", "Basic abc", "Bearer "]),
       ctype=st.sampled_from([None, "application/json", "application/gzip", "text/plain"]))
def test_fuzzed_http_requests_get_a_json_error_reply(long_build, server, method, path, body, auth, ctype):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if ctype:
        headers["Content-Type"] = ctype
    try:
        conn.request(method, quote(path, safe="/%?=&"), body=body if method not in ("GET", "HEAD") else None,
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (resp.status, data[:200])
    if path.startswith("/socket.io/"):
        return
    if method != "HEAD" and resp.status >= 400:
        reply = json.loads(data)
        assert reply["ok"] is False and reply["error"]["code"] in protocol.ERROR_CODES


def test_the_build_running_during_the_fuzzing_was_not_disturbed(long_build, server):
    c, task_id = long_build
    msgs = c.wait(task_id, timeout=120)
    assert final(msgs)["action"] == "done"
    assert [x for x in logs(msgs) if x.startswith("tick")] == [f"tick {i}" for i in range(1, 151)]
    assert not c.duplicates
