"""Redis mode: the access and retention rules of the embedded server, across processes — build
slots per token held by every worker (and freed when a worker dies), the upload of a task
cancelled while queued, the retention sweep (one process at a time, under a Redis lock), and
replays of a long log paced to the reading socket. Real redis-server, real server processes."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from cloudbuild_redis_support import Cluster, kill, needs_redis, wait_for, worker_pid
from cloudbuild_server_support import OTHER_TOKEN, TOKEN, Client, final, http_get, http_request, logs, npm_project
from test_cloudbuild_redis import _wait_line, assert_complete, publish, slow_project, tar_gz, upload

pytestmark = [needs_redis, pytest.mark.skipif(shutil.which("npm") is None, reason="builds npm projects")]

HEARTBEAT = 2.0


def _cluster(tmp_path, redis_server, name: str = "c", **config) -> Cluster:
    return Cluster(tmp_path / name, redis_server, heartbeat=HEARTBEAT,
                   config={"checks": [], "freeze-windows": [], **config})


def publish_as(client: Client, gateway, token: str, name: str, files: dict[str, str], cmd: str = "slow") -> str:
    status, raw = http_request("POST", gateway.url + "/api/uploads", body=tar_gz(files), token=token,
                               headers={"Content-Type": "application/gzip"})
    assert status == 201, raw
    ack = client.publish(name=name, version="1.0.0", source="upload", uploadId=json.loads(raw)["uploadId"],
                         buildCmd=["npm", "run", cmd])
    assert ack["ok"], ack
    return ack["taskId"]


def _state(gateway, task_id: str, token: str = TOKEN) -> str:
    status, raw = http_get(f"{gateway.url}/api/tasks/{task_id}", token=token)
    assert status == 200, raw
    return json.loads(raw)["state"]


# -- build slots per token ----------------------------------------------------------------------
def test_a_token_at_its_limit_waits_on_every_worker_and_a_dead_workers_slot_is_freed(tmp_path, redis_server):
    # two workers of two builds each (four slots), one build per token: a token's second task must
    # wait although three slots are free, on either worker, while another token's task runs
    cluster = _cluster(tmp_path, redis_server, **{"max-builds-per-token": 1})
    cluster.max_attempts = 1  # the dead worker's task fails at once instead of holding the slot
    try:
        gateway = cluster.add("gateway")
        workers = {p.proc.pid: p for p in (cluster.add("worker", 2), cluster.add("worker", 2))}
        with Client(gateway.url) as a, Client(gateway.url, OTHER_TOKEN) as b:
            first = publish(a, gateway, "first", slow_project("first", 600, 100), "slow")
            [runner] = worker_pid(_wait_line(a, first, "slow line 2"))
            second = publish(a, gateway, "second", slow_project("second", 2, 10), "slow")
            other = publish_as(b, gateway, OTHER_TOKEN, "other", slow_project("other", 2, 10))
            assert final(b.wait(other, timeout=60))["action"] == "done"  # another token's build ran
            assert _state(gateway, second) == "queued"
            assert not worker_pid(a.ordered(second))  # no worker started it
            # the worker running the first build dies: its slot goes with its heartbeat
            kill(workers[runner])
            msgs = a.wait(first, timeout=HEARTBEAT * 4 + 30)
            assert final(msgs)["action"] == "failed"
            assert "gave up after 1 attempt(s)" in final(msgs)["payload"]["message"]
            msgs = a.wait(second, timeout=60)
            assert_complete(msgs)
            assert final(msgs)["action"] == "done"
            [survivor] = [pid for pid in workers if pid != runner]
            assert worker_pid(msgs) == [survivor]
            assert [line for line in logs(msgs) if line.startswith("slow line")] == ["slow line 1", "slow line 2"]
        r = redis_server.client()
        assert r.zcard("flowcb:parked") == 0
        # every slot is given back (just after the final message: the worker sends it first)
        wait_for(lambda: not r.keys("flowcb:slots:*"), 10, "the build slots to be released")
    finally:
        cluster.stop()


def test_the_default_limit_is_every_workers_slots_but_one(tmp_path, redis_server):
    # no max-builds-per-token: two workers of one build each let one token run one build at once
    cluster = _cluster(tmp_path, redis_server)
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")
        cluster.add("worker")
        with Client(gateway.url) as a, Client(gateway.url, OTHER_TOKEN) as b:
            first = publish(a, gateway, "first", slow_project("first", 600, 100), "slow")
            _wait_line(a, first, "slow line 2")
            second = publish(a, gateway, "second", slow_project("second", 2, 10), "slow")
            other = publish_as(b, gateway, OTHER_TOKEN, "other", slow_project("other", 2, 10))
            assert final(b.wait(other, timeout=60))["action"] == "done"
            assert _state(gateway, second) == "queued"
            assert a.call("cancel", {"taskId": first})["ok"]
            assert final(a.wait(first, timeout=30))["action"] == "cancelled"
            assert final(a.wait(second, timeout=60))["action"] == "done"  # the freed slot
    finally:
        cluster.stop()


# -- uploads ------------------------------------------------------------------------------------
def test_a_task_cancelled_while_queued_loses_its_upload(tmp_path, redis_server):
    cluster = _cluster(tmp_path, redis_server)
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")  # one build at a time: the second task waits in the queue
        uploads = cluster.shared / "uploads"
        with Client(gateway.url) as a:
            running = publish(a, gateway, "long", slow_project("long", 600, 100), "slow")
            _wait_line(a, running, "slow line 2")
            queued = publish(a, gateway, "waiting", slow_project("waiting", 2, 10), "slow")
            [upload_id] = {p.name.split(".")[0] for p in uploads.glob("*.task")
                           if p.read_text() == queued}
            assert sorted(p.name for p in uploads.glob(f"{upload_id}.*")) == [
                f"{upload_id}.json", f"{upload_id}.tar.gz", f"{upload_id}.task"]
            assert a.call("cancel", {"taskId": queued})["ok"]
            msgs = a.wait(queued, timeout=20)
            assert final(msgs)["action"] == "cancelled" and final(msgs)["payload"]["step"] == "queued"
            assert sorted(p.name for p in uploads.glob(f"{upload_id}.*")) == [  # at once, not at
                f"{upload_id}.json", f"{upload_id}.task"]  # the next sweep; its record stays
            assert a.call("cancel", {"taskId": running})["ok"]
            assert final(a.wait(running, timeout=20))["action"] == "cancelled"
            assert not list(uploads.glob("*.tar.gz"))
    finally:
        cluster.stop()


# -- retention ----------------------------------------------------------------------------------
LOCK = "flowcb:lock:housekeeping"


def test_retention_sweeps_redis_records_and_shared_files_one_process_at_a_time(tmp_path, redis_server):
    # the sweep runs every second (half the upload retention of 1.8 s) in every process
    cluster = _cluster(tmp_path, redis_server, **{"retention-days": 1, "upload-retention-hours": 0.0005})
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")
        r = redis_server.client()
        artifacts = cluster.shared / "artifacts"
        with Client(gateway.url) as c:
            old = publish(c, gateway, "site", npm_project(name="site"))
            release = publish(c, gateway, "site", npm_project(name="site", version="2.0.0"), prod=True)
            recent = publish(c, gateway, "site", npm_project(name="site"))
            for task_id in (old, release, recent):
                assert final(c.wait(task_id, timeout=60))["action"] == "done"
            [art] = final(c.wait(release))["payload"]["artifacts"]
        # another process holds the sweep's lock (as if it were sweeping): nobody else sweeps.
        # A real process may hold it this very moment (each sweeps every second), so wait for
        # a free moment rather than fail on that one
        wait_for(lambda: r.set(LOCK, "test:holder", nx=True, px=4000), 10, "the sweep's lock")
        for task_id in (old, release):  # finished two days ago
            finished = json.loads(r.hget(f"flowcb:task:{task_id}", "finishedAt"))
            r.hset(f"flowcb:task:{task_id}", "finishedAt", json.dumps(finished - 2 * 86400 * 1000))
        unused = upload(gateway, npm_project(name="unused"))
        uploads = cluster.shared / "uploads"
        while r.pttl(LOCK) > 0:  # 4 s: about four rounds of each process, all skipped
            assert r.exists(f"flowcb:task:{old}") and (artifacts / old).is_dir()
            assert (uploads / f"{unused}.tar.gz").exists()
            time.sleep(0.05)  # polling the lock's expiry
        # the lock is gone: the next round deletes the old preview, its log and artifacts
        wait_for(lambda: not r.exists(f"flowcb:task:{old}"), 30, "the old preview's record to go")
        assert not r.exists(f"flowcb:task:{old}:log") and not r.exists(f"flowcb:task:{old}:seq")
        assert not (artifacts / old).exists()
        assert http_get(f"{gateway.url}/api/tasks/{old}", token=TOKEN)[0] == 404
        wait_for(lambda: not list(uploads.glob(f"{unused}.*")), 30, "the unused upload to expire")
        # the prod release stays, with no expiry while it is the release; the recent task ages
        assert (artifacts / release).is_dir() and (artifacts / recent).is_dir()
        assert r.ttl(f"flowcb:task:{release}") == -1 and r.ttl(f"flowcb:task:{release}:log") == -1
        assert 86400 < r.ttl(f"flowcb:task:{recent}") <= 2 * 86400
        assert _state(gateway, release) == "done" and _state(gateway, recent) == "done"
        assert http_get(art["url"])[0] == 200
    finally:
        cluster.stop()


# -- bounded replay -----------------------------------------------------------------------------
def test_repeated_attaches_of_a_long_log_on_a_gateway_are_paced_and_do_not_multiply(tmp_path, redis_server):
    from test_cloudbuild_server_bounds import attach_flood_growth_mb

    lines = 280_000  # about 18 MB of log, under the default 20 MB cap
    build_js = ("const fs = require('fs');\n"
                f"for (let i = 0; i < {lines}; i++) console.log('line ' + i + ' ' + 'y'.repeat(50));\n"
                "fs.mkdirSync('dist'); fs.writeFileSync('dist/a', 'a');\n")
    cluster = _cluster(tmp_path, redis_server)
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")
        with Client(gateway.url) as c:
            task_id = publish(c, gateway, "loud", npm_project(name="loud", build_js=build_js))
            full = c.wait(task_id, timeout=300)
        assert final(full)["action"] == "done", final(full)
        assert redis_server.client().xlen(f"flowcb:task:{task_id}:log") == len(full)
        growth = attach_flood_growth_mb(gateway.url, gateway.proc.pid, task_id)
        assert growth < 100, f"gateway RSS grew by {growth:.0f} MB"
        with Client(gateway.url) as late:  # a normal client still gets the whole log, once, in order
            assert late.call("attach", {"taskId": task_id, "afterSeq": 0})["ok"]
            replayed = late.wait(task_id, timeout=120)
            assert not late.duplicates
        assert_complete(replayed)
        assert replayed == full
        assert [x for x in logs(replayed) if x.startswith("line ")][-1].startswith(f"line {lines - 1} ")
    finally:
        cluster.stop()
