"""Redis mode when someone who should not be trusted can reach Redis (a build's install step, a
tenant's script): Redis with a password and an ACL user, credentials never printed, a wrong
password is one line; and the server secret (--secret-file) signs what gateways and workers
trust from Redis, so a write into Redis mints no dashboard session, runs no job and cancels no
build. A real redis-server with ``requirepass`` and an ACL user, real server processes."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import time

import pytest
from cloudbuild_redis_support import Cluster, RedisServer, needs_redis, secret_file, wait_for, worker_pid
from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    final,
    http_get,
    http_request,
    logs,
    npm_project,
    protocol,
    server_env,
    tar_gz,
    upload,
)

pytestmark = [needs_redis, pytest.mark.skipif(shutil.which("npm") is None, reason="builds npm projects")]

PASSWORD = "default-user-password-0123"
USER, USER_PASSWORD = "flowcb", "acl-user-password-4567"
WRONG = "not-the-password-98765"
SESSION = "flowcb:dash:session:"
SLOW_JS = ("const fs = require('fs');\nlet i = 0;\n"
           "const t = setInterval(() => { i += 1; console.log('slow line ' + i);\n"
           "  if (i >= %d) { clearInterval(t); fs.mkdirSync('dist', {recursive: true});\n"
           "    fs.writeFileSync('dist/slow.txt', 'done\\n'); } }, %d);\n")


@pytest.fixture(scope="module")
def redis_auth(tmp_path_factory):
    r = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD, users=((USER, USER_PASSWORD),))
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, redis_auth):
    """A gateway that signs in as the default user (``redis://:PASSWORD@``) and a worker as the
    ACL user (``redis://USER:PASSWORD@``), their URLs in the environment, not on the command line."""
    cluster = Cluster(tmp_path_factory.mktemp("deployment"), redis_auth)
    try:
        gateway = cluster.add("gateway", url=redis_auth.url)
        worker = cluster.add("worker", url=redis_auth.url_for(USER, USER_PASSWORD))
        yield cluster, gateway, worker
    finally:
        cluster.stop()


def publish(client: Client, gateway, name: str, files: dict[str, str], cmd: str = "build") -> str:
    status, body = upload(gateway, tar_gz(files))
    assert status == 201, body
    ack = client.publish(name=name, version="1.0.0", source="upload", uploadId=body["uploadId"],
                         buildCmd=["npm", "run", cmd], prod=False, force=False)
    assert ack["ok"], ack
    return ack["taskId"]


def server_argv(tmp_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir", str(tmp_path / "d"),
            *args]


# -- AUTH ------------------------------------------------------------------------------------------
def test_a_redis_with_a_password_and_an_acl_user_runs_builds_and_no_password_is_printed(deployment):
    cluster, gateway, worker = deployment
    with Client(gateway.url) as client:
        task_id = publish(client, gateway, "authed", npm_project(name="authed"))
        msgs = client.wait(task_id, timeout=90)
    assert final(msgs)["action"] == "done", final(msgs)
    assert worker_pid(msgs) == [worker.proc.pid]   # built by the worker that signs in as the ACL user
    for proc in (gateway, worker):
        assert PASSWORD not in proc.stderr() and USER_PASSWORD not in proc.stderr()


def test_the_password_may_come_from_a_file_and_the_url_is_shown_without_it(tmp_path, redis_auth, deployment):
    """A gateway as the ACL user, its password from --redis-password-file: it serves the
    dashboard and a build (the deployment's worker runs it), and prints the URL with ``***``."""
    cluster, _, _ = deployment
    password_file = tmp_path / "redis-password"
    password_file.write_text(USER_PASSWORD + "\n")
    proc = subprocess.Popen(
        server_argv(tmp_path, "--redis-url", redis_auth.url_for(USER, None), "--redis-password-file",
                    str(password_file), "--role", "gateway", "--shared-dir", str(cluster.shared),
                    "--secret-file", str(cluster.secret)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=server_env(**{protocol.TOKENS_ENV: f"{TOKEN},{OTHER_TOKEN}"}))
    try:
        out: list[str] = []
        while not any(line.startswith("redis: ") for line in out):
            line = proc.stdout.readline()
            assert line, f"the server stopped: {out} {proc.stderr.read() if proc.poll() is not None else ''}"
            out.append(line)
        [shown] = [line for line in out if line.startswith("redis: ")]
        assert shown.startswith(f"redis: redis://{USER}:***@127.0.0.1:{redis_auth.port}/0 "), shown
        url = out[0].rsplit(" ", 1)[1].strip()
        wait_for(lambda: _healthy(url), 20, "the gateway to listen")

        class Gateway:  # what upload() needs of a server
            pass

        gateway = Gateway()
        gateway.url = url  # type: ignore[attr-defined]
        assert _session(url, _sign_in(url, TOKEN))[0] == 200
        with Client(url) as client:
            task_id = publish(client, gateway, "acl", npm_project(name="acl"))
            assert final(client.wait(task_id, timeout=90))["action"] == "done"
    finally:
        proc.terminate()
        rest, err = proc.communicate(timeout=20)
    assert USER_PASSWORD not in "".join(out) + rest + err


@pytest.mark.parametrize("user, password", [(None, WRONG), (USER, WRONG), (None, None)],
                         ids=["wrong-password", "wrong-acl-password", "no-password"])
def test_a_wrong_or_missing_password_is_one_line_with_the_cause_and_the_fix(tmp_path, redis_auth, user, password):
    url = redis_auth.url_for(user, password)
    result = subprocess.run(server_argv(tmp_path, "--role", "gateway", "--secret-file", str(secret_file(tmp_path))),
                            capture_output=True, text=True, timeout=60,
                            env=server_env(**{protocol.TOKENS_ENV: TOKEN, "FLOW_CLOUDBUILD_REDIS_URL": url}))
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"flow-cloudbuild-server: error: Redis at redis://{user or ''}"), line
    assert f"127.0.0.1:{redis_auth.port}/0 " in line and "password" in line, line
    assert "FLOW_CLOUDBUILD_REDIS_URL" in line and "--redis-password-file" in line, line
    assert WRONG not in result.stderr + result.stdout


def test_redis_mode_without_a_secret_file_is_refused_in_one_line(tmp_path, redis_auth):
    result = subprocess.run(server_argv(tmp_path, "--role", "gateway"), capture_output=True, text=True, timeout=60,
                            env=server_env(**{protocol.TOKENS_ENV: TOKEN,
                                              "FLOW_CLOUDBUILD_REDIS_URL": redis_auth.url}))
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("flow-cloudbuild-server: error: ") and "--secret-file" in line, line


# -- what a write into Redis cannot do -------------------------------------------------------------
def _healthy(url: str) -> bool:
    try:
        return http_get(url + "/healthz")[0] == 200
    except OSError:
        return False


def _sign_in(base: str, token: str) -> str:
    """The session cookie's value after a real sign-in."""
    import urllib.request

    req = urllib.request.Request(base + "/ui/api/login", data=json.dumps({"token": token}).encode(),
                                 method="POST", headers={"Content-Type": "application/json", "Origin": base})
    with urllib.request.urlopen(req, timeout=10) as resp:
        cookie = resp.headers["Set-Cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


def _session(base: str, value: str) -> tuple[int, dict]:
    status, raw = http_request("GET", base + "/ui/api/session", headers={"Cookie": f"flowcb_session={value}"})
    return status, json.loads(raw)


def _key(value: str) -> str:
    return SESSION + hashlib.sha256(value.encode()).hexdigest()


def test_a_session_written_into_redis_is_not_a_sign_in(deployment, redis_auth):
    _, gateway, _ = deployment
    r = redis_auth.client()
    real = _sign_in(gateway.url, TOKEN)
    assert _session(gateway.url, real)[0] == 200
    # a record of the attacker's own making, for TOKEN, under a cookie value the attacker chose
    chosen = "attacker-chosen-cookie-value-0001"
    r.set(_key(chosen), json.dumps({"th": protocol.token_hash(TOKEN), "csrf": "x", "exp": time.time() + 3600}),
          ex=3600)
    assert _session(gateway.url, chosen)[0] == 401
    # a real session's record copied under the attacker's cookie value
    r.set(_key(chosen), r.get(_key(real)), ex=3600)
    assert _session(gateway.url, chosen)[0] == 401
    # a real session's record pointed at another token
    record = json.loads(r.get(_key(real)))
    r.set(_key(real), json.dumps({**record, "th": protocol.token_hash(OTHER_TOKEN)}), ex=3600)
    status, body = _session(gateway.url, real)
    assert status == 401, body


def test_a_job_written_into_redis_is_not_run(deployment, redis_auth):
    _, gateway, worker = deployment
    r = redis_auth.client()
    with Client(gateway.url) as client:
        first = publish(client, gateway, "legit", npm_project(name="legit"))
        assert final(client.wait(first, timeout=90))["action"] == "done"
        # the attacker copies a real record under a new id, as queued, and puts a job for it on the queue
        forged = secrets.token_hex(12)
        fields = {k: v for k, v in r.hgetall(f"flowcb:task:{first}").items() if k != b"runner"}
        fields.update({b"taskId": json.dumps(forged), b"state": b'"queued"', b"step": b'"queued"',
                       b"finishedAt": b"null", b"artifacts": b"[]"})
        r.hset(f"flowcb:task:{forged}", mapping=fields)
        r.xadd("flowcb:jobs", {"task": forged, "group": protocol.token_hash(TOKEN)})
        # a job published after it runs: the worker has looked at the forged one by then
        after = publish(client, gateway, "after", npm_project(name="after"))
        assert final(client.wait(after, timeout=90))["action"] == "done"
    assert json.loads(r.hget(f"flowcb:task:{forged}", "state")) == "queued"
    assert r.xlen(f"flowcb:task:{forged}:log") == 0
    wait_for(lambda: "no valid signature" in worker.stderr(), 10, "the worker to say why it dropped the job")


def test_a_cancel_written_into_redis_does_not_stop_a_build(deployment, redis_auth):
    _, gateway, _ = deployment
    r = redis_auth.client()
    files = npm_project(name="slow", scripts={"build": "node build.js", "slow": "node slow.js"})
    files["slow.js"] = SLOW_JS % (30, 100)
    with Client(gateway.url) as client:
        task_id = publish(client, gateway, "slow", files, cmd="slow")
        wait_for(lambda: "slow line 1" in logs(client.ordered(task_id)), 90, "the build to run")
        r.set(f"flowcb:task:{task_id}:cancel", "1", ex=600)   # as a gateway would, but unsigned
        msgs = client.wait(task_id, timeout=90)
    assert final(msgs)["action"] == "done", final(msgs)
    assert "slow line 30" in logs(msgs)
