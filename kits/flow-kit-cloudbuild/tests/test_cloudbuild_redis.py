"""Cloud build server in Redis mode: gateways and workers as separate real processes sharing a
real redis-server. Workers are killed with SIGKILL, gateways too, and Redis is restarted
mid-run; the client must always reach a final message, with every seq once and in order."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import socketio
from cloudbuild_redis_support import Cluster, kill, needs_redis, wait_for, worker_pid
from cloudbuild_server_support import TOKEN, Client, final, http_get, http_request, logs, npm_project, tar_gz

pytestmark = [needs_redis, pytest.mark.skipif(shutil.which("npm") is None, reason="builds npm projects")]

SLOW_JS = ("const fs = require('fs');\nlet i = 0;\n"
           "const t = setInterval(() => { i += 1; console.log('slow line ' + i);\n"
           "  if (i >= %d) { clearInterval(t); fs.mkdirSync('dist', {recursive: true});\n"
           "    fs.writeFileSync('dist/slow.txt', 'done\\n'); } }, %d);\n")


def upload(gateway, files: dict[str, str]) -> str:
    status, raw = http_request("POST", gateway.url + "/api/uploads", body=tar_gz(files), token=TOKEN,
                               headers={"Content-Type": "application/gzip"})
    assert status == 201, raw
    return json.loads(raw)["uploadId"]


def slow_project(name: str, lines: int, interval_ms: int) -> dict[str, str]:
    files = npm_project(name=name, scripts={"build": "node build.js", "slow": "node slow.js"})
    files["slow.js"] = SLOW_JS % (lines, interval_ms)
    return files


def publish(client: Client, gateway, name: str, files: dict[str, str], cmd: str = "build", **extra) -> str:
    ack = client.publish(name=name, version="1.0.0", source="upload", uploadId=upload(gateway, files),
                         buildCmd=["npm", "run", cmd], prod=extra.pop("prod", False),
                         force=extra.pop("force", False), **extra)
    assert ack["ok"], ack
    return ack["taskId"]


def assert_complete(msgs: list[dict]) -> None:
    assert [m["meta"]["seq"] for m in msgs] == list(range(1, len(msgs) + 1))


@pytest.fixture
def cluster(tmp_path, redis_server):
    c = Cluster(tmp_path / "cluster", redis_server)
    yield c
    c.stop()


def test_two_gateways_two_workers_share_ten_concurrent_publishes(cluster):
    gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
    w1, w2 = cluster.add("worker"), cluster.add("worker")
    with Client(gw_a.url) as ca, Client(gw_b.url) as cb:
        tasks = []
        for i in range(10):
            client, gw = (ca, gw_a) if i % 2 == 0 else (cb, gw_b)
            tasks.append((client, publish(client, gw, f"site{i}", slow_project(f"site{i}", 4, 50), "slow")))
        runners = set()
        for client, task_id in tasks:
            msgs = client.wait(task_id, timeout=90)
            assert_complete(msgs)
            assert final(msgs)["action"] == "done", final(msgs)
            slow = [line for line in logs(msgs) if line.startswith("slow line")]
            assert slow == [f"slow line {i}" for i in range(1, 5)]
            runners.update(worker_pid(msgs))
            assert not client.duplicates
        assert runners == {w1.proc.pid, w2.proc.pid}  # both workers built
        # any gateway serves any task's record and the full log on reattach
        task_id = tasks[0][1]
        status, raw = http_get(f"{gw_b.url}/api/tasks/{task_id}", token=TOKEN)
        assert status == 200 and json.loads(raw)["state"] == "done"
        with Client(gw_b.url) as again:
            assert again.call("attach", {"taskId": task_id, "afterSeq": 0})["ok"]
            assert again.wait(task_id, timeout=20) == ca.wait(task_id)
        artifact = final(ca.wait(task_id))["payload"]["artifacts"][0]["url"]
        assert http_get(artifact)[0] == 200


def test_worker_refuses_socketio_clients(cluster):
    worker = cluster.add("worker")
    with pytest.raises(socketio.exceptions.ConnectionError):
        Client(worker.url)


def _wait_line(client: Client, task_id: str, text: str, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (msgs := client.ordered(task_id)) and any(text == line for line in logs(msgs)) and msgs,
                    timeout, f"{text!r} in the log of {task_id}")


def test_worker_killed_mid_build_the_task_completes_on_the_other_worker(cluster):
    gateway = cluster.add("gateway")
    workers = {p.proc.pid: p for p in (cluster.add("worker"), cluster.add("worker"))}
    with Client(gateway.url) as client:
        task_id = publish(client, gateway, "victim", slow_project("victim", 30, 100), "slow")
        msgs = _wait_line(client, task_id, "slow line 3")
        [first] = worker_pid(msgs)
        kill(workers[first])
        started = time.monotonic()
        msgs = client.wait(task_id, timeout=cluster.heartbeat + 30)
        assert_complete(msgs)
        assert final(msgs)["action"] == "done", final(msgs)
        retried = [m for m in msgs if "stopped responding" in m["data"]["payload"]["message"]]
        assert retried and "attempt 2 of 3" in retried[0]["data"]["payload"]["message"]
        assert worker_pid(msgs) == [first, next(pid for pid in workers if pid != first)]
        # the retry began within the heartbeat timeout (plus one poll of the queue)
        retry_at = retried[0]["meta"]["timestamp"] / 1000
        assert retry_at - (time.time() - (time.monotonic() - started)) < cluster.heartbeat + 3
        # the second attempt started from scratch: the whole build's output is there again
        tail = logs(msgs)[logs(msgs).index(retried[0]["data"]["payload"]["message"]):]
        assert [line for line in tail if line.startswith("slow line")] == [f"slow line {i}" for i in range(1, 31)]


def test_worker_killed_past_the_retry_limit_fails_with_the_reason(tmp_path, redis_server):
    cluster = Cluster(tmp_path / "c1", redis_server, max_attempts=1)
    try:
        gateway = cluster.add("gateway")
        workers = {p.proc.pid: p for p in (cluster.add("worker"), cluster.add("worker"))}
        with Client(gateway.url) as client:
            task_id = publish(client, gateway, "doomed", slow_project("doomed", 200, 100), "slow")
            [first] = worker_pid(_wait_line(client, task_id, "slow line 2"))
            kill(workers[first])
            msgs = client.wait(task_id, timeout=cluster.heartbeat + 30)
            assert_complete(msgs)
            assert final(msgs)["action"] == "failed"
            assert "gave up after 1 attempt(s): the worker running this task stopped responding" in \
                final(msgs)["payload"]["message"]
            assert final(msgs)["payload"]["step"] == "build"
    finally:
        cluster.stop()


def test_gateway_killed_the_client_resumes_on_the_other_after_its_last_seq(cluster):
    gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
    cluster.add("worker")
    first = Client(gw_a.url)
    task_id = publish(first, gw_a, "hop", slow_project("hop", 40, 50), "slow")
    _wait_line(first, task_id, "slow line 5")
    kill(gw_a)
    wait_for(lambda: not first.sio.connected, 10, "the client to see its gateway gone")
    seen = first.ordered(task_id)  # nothing more can arrive
    first.close()
    last = 0
    for m in seen:  # the contiguous prefix the client printed
        if m["meta"]["seq"] != last + 1:
            break
        last = m["meta"]["seq"]
    with Client(gw_b.url) as second:
        second.messages[task_id] = {m["meta"]["seq"]: m for m in seen[:last]}
        ack = second.call("attach", {"taskId": task_id, "afterSeq": last})
        assert ack["ok"], ack
        msgs = second.wait(task_id, timeout=60)
        assert not second.duplicates  # nothing at or before afterSeq was sent again
        assert_complete(msgs)
        assert final(msgs)["action"] == "done"
        assert [line for line in logs(msgs) if line.startswith("slow line")] == [f"slow line {i}" for i in range(1, 41)]


def test_redis_restarted_mid_run_servers_reconnect_and_nothing_hangs(cluster, redis_server):
    gateway = cluster.add("gateway")
    cluster.add("worker")
    with Client(gateway.url) as client:
        task_id = publish(client, gateway, "storm", slow_project("storm", 40, 100), "slow")
        _wait_line(client, task_id, "slow line 3")
        redis_server.stop()
        time.sleep(1)  # on purpose: Redis stays away a while, so the servers' calls fail meanwhile
        redis_server.start()
        msgs = client.wait(task_id, timeout=60)  # resumed (done) or failed with a reason: never hangs
        assert_complete(msgs)
        assert final(msgs)["action"] in ("done", "failed"), final(msgs)
        assert final(msgs)["payload"]["message"]
        # the servers reconnected: a new publish goes through the restarted Redis
        again = publish(client, gateway, "after", slow_project("after", 2, 10), "slow")
        after = client.wait(again, timeout=60)
        assert final(after)["action"] == "done", final(after)


def test_cancel_reaches_the_worker_running_the_task_and_queued_ones(cluster):
    gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
    cluster.add("worker")
    with Client(gw_a.url) as ca, Client(gw_b.url) as cb:
        running = publish(ca, gw_a, "long", slow_project("long", 600, 50), "slow")
        _wait_line(ca, running, "slow line 2")
        queued = publish(ca, gw_a, "waiting", slow_project("waiting", 2, 10), "slow")
        assert cb.call("cancel", {"taskId": queued})["ok"]
        assert final(ca.wait(queued, timeout=20))["action"] == "cancelled"
        assert cb.call("cancel", {"taskId": running})["ok"]  # through the other gateway
        msgs = ca.wait(running, timeout=20)
        assert final(msgs)["action"] == "cancelled" and final(msgs)["payload"]["step"] == "build"
        # the worker is free again and never ran the cancelled queued task
        nxt = publish(ca, gw_a, "next", slow_project("next", 2, 10), "slow")
        assert final(ca.wait(nxt, timeout=60))["action"] == "done"
        assert not [m for m in ca.ordered(queued) if m["data"]["action"] == "prepare"]


def test_prod_publishes_of_one_version_are_serialised_by_an_expiring_lock(cluster, redis_server):
    gateway = cluster.add("gateway")
    cluster.add("worker")
    cluster.add("worker")
    r = redis_server.client()
    # a holder that died while publishing: its lock expires, and then the publish goes on
    r.set("flowcb:lock:publish:locked\n1.0.0\nprod", "task dead on gone:1:x:abcd", px=3000)
    with Client(gateway.url) as client:
        held = publish(client, gateway, "locked", npm_project(name="locked"), prod=True)
        msgs = client.wait(held, timeout=60)
        assert final(msgs)["action"] == "done"
        assert any("waiting for another publish of locked 1.0.0 (prod)" in line for line in logs(msgs))
        # two prod publishes of one new version at once: exactly one is released
        both = [publish(client, gateway, "twin", npm_project(name="twin"), prod=True) for _ in range(2)]
        finals = sorted(final(client.wait(t, timeout=60))["action"] for t in both)
        assert finals == ["done", "failed"]
        failed = next(final(client.wait(t)) for t in both if final(client.wait(t))["action"] == "failed")
        assert "released to prod while this task ran" in failed["payload"]["message"]


def test_worker_stopped_with_sigterm_leaves_its_task_to_another_worker(cluster):
    gateway = cluster.add("gateway")
    workers = {p.proc.pid: p for p in (cluster.add("worker"), cluster.add("worker"))}
    with Client(gateway.url) as client:
        task_id = publish(client, gateway, "handover", slow_project("handover", 20, 100), "slow")
        [first] = worker_pid(_wait_line(client, task_id, "slow line 2"))
        workers[first].stop()  # SIGTERM: a clean stop
        msgs = client.wait(task_id, timeout=cluster.heartbeat + 30)
        assert_complete(msgs)
        assert final(msgs)["action"] == "done"
        assert any("is stopping during build; another worker will retry this task" in line for line in logs(msgs))
        assert worker_pid(msgs)[-1] != first
