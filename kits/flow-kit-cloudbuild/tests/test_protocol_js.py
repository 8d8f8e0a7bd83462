"""The Socket.IO protocol (docs/protocol.md) from the official JavaScript client.

tests/js/protocol_client.mjs drives `socket.io-client` (pinned in tests/js/package-lock.json,
installed with `npm ci` into tests/js/node_modules once per lock file) against a real
flow-cloudbuild-server on loopback: refusals readable as err.message + err.data, publish of a git
project with live log messages in seq order, drop + reconnect + attach with afterSeq (no gap, no
repeat), cancel, and the error codes of the events and HTTP routes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cloudbuild_server_support import TOKEN, ServerProc, new_repo, npm_project, protocol

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "protocol_client.mjs"
STAMP = JS_DIR / "node_modules" / ".flow-lock-sha256"
AUTH_SENTENCE = 'missing or invalid token; connect with auth {"token": "<token>"}'
UNKNOWN_ID = "0" * 24

# a build that prints a numbered line every 60 ms, so a client can drop out in the middle of it
TICKS = 30
TICKING_BUILD = (
    "const fs = require('fs');\n"
    "let i = 0;\n"
    "const timer = setInterval(() => {\n"
    "  i += 1;\n"
    "  console.log(`tick ${i}`);\n"
    f"  if (i === {TICKS}) {{\n"
    "    clearInterval(timer);\n"
    "    fs.mkdirSync('dist', {recursive: true});\n"
    "    fs.writeFileSync('dist/app.js', 'console.log(1);\\n');\n"
    "  }\n"
    "}, 60);\n")
# a build that says it started and then waits far longer than the test
WAITING_BUILD = "console.log('waiting for cancel');\nsetTimeout(() => {}, 600000);\n"


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((JS_DIR / name).read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def node() -> str:
    """node, with socket.io-client installed by `npm ci` (again only when the lock file changed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the JavaScript client tests need node and npm: install the Debian packages nodejs npm")
    digest = _lock_digest()
    lock = Path(tempfile.gettempdir()) / "flow-tests-js-npm-ci.lock"  # npm ci replaces node_modules
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (STAMP.exists() and STAMP.read_text().strip() == digest):
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR,
                                    capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                pytest.fail(f"npm ci in {JS_DIR} failed (the npm registry must be reachable once):\n"
                            f"{result.stdout}\n{result.stderr}")
            STAMP.write_text(digest + "\n")
    return node


def run_js(node: str, server: ServerProc, scenario: str, **args: Any) -> dict[str, Any]:
    args.setdefault("url", server.url)
    result = subprocess.run([node, str(SCRIPT), scenario, json.dumps(args)], cwd=JS_DIR,
                            capture_output=True, text=True, timeout=200)
    if result.returncode != 0:
        raise AssertionError(f"node {scenario} exited {result.returncode}:\n{result.stderr}\n"
                             f"server stderr:\n{server.stderr()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def git_payload(url: str, **extra: Any) -> dict[str, Any]:
    p = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
         "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 120}
    p.update(extra)
    return p


def seqs(received: list[dict]) -> list[int]:
    return [r["msg"]["meta"]["seq"] for r in received]


def check_shape(msg: dict, task_id: str) -> None:
    assert set(msg) == {"meta", "data"}, msg
    assert set(msg["meta"]) == {"timestamp", "taskId", "seq"}, msg
    assert msg["meta"]["taskId"] == task_id and isinstance(msg["meta"]["timestamp"], int)
    assert set(msg["data"]) == {"action", "payload"} and isinstance(msg["data"]["payload"]["message"], str)
    action = msg["data"]["action"]
    assert action in protocol.STEPS or action in protocol.FINAL or action == protocol.ACTION_LOG, action
    if action == protocol.ACTION_LOG:
        payload = msg["data"]["payload"]
        assert payload["stream"] in ("stdout", "stderr") and payload["step"] in protocol.STEPS
        assert payload["lines"] == len(payload["message"].split("\n"))


def build_ticks(received: list[dict]) -> list[str]:
    return [line for r in received if r["msg"]["data"]["action"] == protocol.ACTION_LOG
            and r["msg"]["data"]["payload"]["step"] == "build"
            for line in r["msg"]["data"]["payload"]["message"].split("\n") if line.startswith("tick ")]


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["not-the-token-0123456789", None])
def test_a_refused_connect_gives_a_sentence_and_json_data(node, server, token):
    args = {} if token is None else {"token": token}
    seen = run_js(node, server, "refusal", **args)
    assert seen == {"connected": False, "message": AUTH_SENTENCE,
                    "data": {"code": protocol.ERROR_AUTH, "message": AUTH_SENTENCE}}


def test_the_rate_limited_refusal_carries_retry_after(node, tmp_path):
    with ServerProc(tmp_path / "d", config={"auth-failures": 2, "auth-window": 30}) as s:
        for _ in range(2):
            assert run_js(node, s, "refusal", token="not-the-token-0123456789")["data"]["code"] == "auth"
        seen = run_js(node, s, "refusal", token=TOKEN)  # even the right token, while limited
    assert seen["connected"] is False
    data = seen["data"]
    assert set(data) == {"code", "message", "retryAfter"} and data["code"] == protocol.ERROR_REFUSED
    assert isinstance(data["retryAfter"], int) and 1 <= data["retryAfter"] <= 30
    assert seen["message"] == data["message"] and f"retry in {data['retryAfter']} s" in data["message"]


# -- publish and follow ------------------------------------------------------------------------
def test_publish_a_git_project_and_follow_its_live_log_in_seq_order(node, server, git_daemon):
    url = new_repo(git_daemon, npm_project(build_js=TICKING_BUILD))
    seen = run_js(node, server, "follow", token=TOKEN, publish=git_payload(url))
    task_id = seen["taskId"]
    assert seen["publishAck"] == {"ok": True, "taskId": task_id}
    received = seen["received"]
    assert seqs(received) == list(range(1, len(received) + 1))  # as sent: from 1, no gap, no repeat
    for r in received:
        check_shape(r["msg"], task_id)
    steps = [r["msg"]["data"]["action"] for r in received if r["msg"]["data"]["action"] != "log"]
    assert steps == ["queued", "prepare", "download", "install", "build", "publish", "done"]
    assert build_ticks(received) == [f"tick {i}" for i in range(1, TICKS + 1)]
    stamps = [r["msg"]["meta"]["timestamp"] for r in received]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= (TICKS - 1) * 60 * 0.8  # live, not at the end
    done = received[-1]["msg"]["data"]["payload"]
    assert [a["name"] for a in done["artifacts"]] == ["app.js"]
    assert done["artifactUrl"] == f"{server.url}/artifacts/{task_id}/"
    # the HTTP routes agree
    assert seen["task"]["status"] == 200
    record = seen["task"]["body"]
    assert set(record) == set(protocol.TASK_FIELDS) and record["state"] == "done"
    assert record["lastSeq"] == len(received)
    assert seen["artifacts"] == {"status": 200, "retryAfter": None, "body": done["artifacts"]}


def test_reconnect_and_attach_after_seq_gives_every_message_once(node, server, git_daemon):
    url = new_repo(git_daemon, npm_project(build_js=TICKING_BUILD))
    seen = run_js(node, server, "follow", token=TOKEN, publish=git_payload(url, noCache=True), dropAtLog="tick 5",
                  pauseMs=600)
    received, dropped = seen["received"], seen["droppedAt"]
    assert seqs(received) == list(range(1, len(received) + 1)), seqs(received)  # no gap, no repeat
    before = [r for r in received if r["phase"] == 1]
    after = [r for r in received if r["phase"] == 2]
    assert seqs(before)[-1] == dropped and seqs(after)[0] == dropped + 1
    attach = seen["attachAck"]
    assert attach["ok"] is True and attach["task"]["taskId"] == seen["taskId"]
    assert set(attach["task"]) == set(protocol.TASK_FIELDS)
    assert attach["task"]["lastSeq"] > dropped  # the build went on while the client was away
    assert build_ticks(received) == [f"tick {i}" for i in range(1, TICKS + 1)]
    assert received[-1]["msg"]["data"]["action"] == "done"


def test_cancel_a_running_build(node, server, git_daemon):
    url = new_repo(git_daemon, npm_project(build_js=WAITING_BUILD))
    seen = run_js(node, server, "cancel", token=TOKEN, publish=git_payload(url, timeout=300),
                  cancelAtLog="waiting for cancel")
    assert seen["cancelAck"] == {"ok": True}
    final = seen["final"]["data"]
    assert final["action"] == "cancelled" and final["payload"]["step"] == "build"
    assert "cancelled by request" in final["payload"]["message"]
    assert seen["againAck"] == {"ok": True, "state": "cancelled"}  # cancelling a finished task
    assert seqs(seen["received"]) == list(range(1, len(seen["received"]) + 1))


# -- errors ------------------------------------------------------------------------------------
def test_error_codes_of_events_and_http_routes(node, server):
    seen = run_js(node, server, "errors", token=TOKEN)
    acks = {name: (ack["ok"], ack["error"]["code"]) for name, ack in seen["acks"].items()}
    assert acks == {
        "attachUnknown": (False, "not-found"), "attachMalformedId": (False, "not-found"),
        "attachBadSeq": (False, "bad-request"), "attachExtraField": (False, "bad-request"),
        "cancelUnknown": (False, "not-found"), "publishMalformed": (False, "bad-request"),
        "publishTooLarge": (False, "bad-request"), "unknownEvent": (False, "bad-request"),
    }
    for ack in seen["acks"].values():
        assert set(ack) == {"ok", "error"} and set(ack["error"]) == {"code", "message"}
    assert UNKNOWN_ID in seen["acks"]["attachUnknown"]["error"]["message"]
    http = {name: (r["status"], r["body"].get("error", {}).get("code") if isinstance(r["body"], dict) else None)
            for name, r in seen["http"].items()}
    assert http == {"health": (200, None), "healthPost": (405, "bad-request"), "taskUnknown": (404, "not-found"),
                    "taskNoToken": (401, "auth"), "artifactsUnknown": (404, "not-found"),
                    "noRoute": (404, "not-found")}
    assert seen["http"]["health"]["body"]["ok"] is True
