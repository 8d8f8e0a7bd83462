"""Redis mode when the deployment is incomplete: no worker alive (the clients of waiting tasks
are told once, and the tasks fail after --queue-timeout), and processes that do not see one
shared dir (the one started later refuses before it listens). Real redis-server, real server
processes, the real `flow publish` or a socketio client."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time

import pytest
from cloudbuild_publish_support import make_site, needs_node
from cloudbuild_redis_support import Cluster, kill, needs_redis, secret_file, wait_for
from cloudbuild_server_support import TOKEN, Client, ServerProc, final, http_get, logs, npm_project
from test_cloudbuild_redis import publish, slow_project

pytestmark = [needs_redis, needs_node]

HEARTBEAT = 2.0
QUEUE_TIMEOUT = 3.0
NO_WORKER = "no worker is running"


def _cluster(tmp_path, redis_server, name: str) -> Cluster:
    return Cluster(tmp_path / name, redis_server, heartbeat=HEARTBEAT,
                   extra=("--queue-timeout", str(QUEUE_TIMEOUT)))


def _notices(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m["data"]["action"] == "log"
            and "(--queue-timeout)" in m["data"]["payload"]["message"]]


def test_only_worker_killed_flow_publish_is_told_once_and_fails_after_the_queue_timeout(flow, tmp_path,
                                                                                       redis_server):
    cluster = _cluster(tmp_path, redis_server, "c")
    proc = None
    try:
        gateway = cluster.add("gateway")
        worker = cluster.add("worker")
        project = make_site(tmp_path / "site", name="orphan-site", slow_lines=600, slow_interval_ms=100)
        proc = flow.popen("publish", "--server", gateway.url, "--token", TOKEN, "--source", "upload",
                          "--build-cmd", "npm run slow", "--json", cwd=project)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(json.loads(ln)) for ln in proc.stdout], daemon=True).start()
        received: list[dict] = []
        killed_at = None
        deadline = time.monotonic() + 90
        while proc.poll() is None or not lines.empty():
            assert time.monotonic() < deadline, f"flow publish still running: {received[-3:]}"
            try:
                received.append(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            text = received[-1]["data"]["payload"]["message"]
            if killed_at is None and "slow line 3" in text.split("\n"):
                assert not _notices(received)  # a live worker: nobody is told anything
                kill(worker)
                killed_at = time.time()
        stderr = proc.stderr.read()
        assert killed_at is not None, received
        assert proc.returncode == 1, stderr
        assert [m["meta"]["seq"] for m in received] == list(range(1, len(received) + 1))
        [notice] = _notices(received)  # once, not every second
        text = notice["data"]["payload"]["message"]
        assert text.startswith("the worker running this task stopped responding during build and no other "
                               "worker is running"), text
        assert f"waits up to {QUEUE_TIMEOUT:g} s" in text and "--role worker" in text
        told_after = notice["meta"]["timestamp"] / 1000 - killed_at
        assert told_after < 2 * HEARTBEAT, told_after
        last = received[-1]
        assert last["data"]["action"] == "failed" and last["data"]["payload"]["step"] == "build"
        assert "no worker ran this task" in last["data"]["payload"]["message"]
        waited = (last["meta"]["timestamp"] - notice["meta"]["timestamp"]) / 1000
        assert QUEUE_TIMEOUT - 0.1 <= waited < QUEUE_TIMEOUT + 3, waited
        assert "no worker ran this task" in stderr.strip().splitlines()[-1]
        status, raw = http_get(f"{gateway.url}/api/tasks/{last['meta']['taskId']}", token=TOKEN)
        assert status == 200 and json.loads(raw)["state"] == "failed"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.stop()


def test_task_queued_while_no_worker_was_ever_started_two_gateways_one_notice_one_failure(tmp_path,
                                                                                         redis_server):
    # the queue timeout from the server config file this time
    cluster = Cluster(tmp_path / "c", redis_server, heartbeat=HEARTBEAT,
                      config={"checks": [], "freeze-windows": [], "queue-timeout": int(QUEUE_TIMEOUT)})
    try:
        gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
        with Client(gw_a.url) as ca, Client(gw_b.url) as cb:
            published = time.time()
            task_id = publish(ca, gw_a, "nobody", npm_project(name="nobody"))
            assert cb.call("attach", {"taskId": task_id, "afterSeq": 0})["ok"]
            msgs = ca.wait(task_id, timeout=2 * HEARTBEAT + QUEUE_TIMEOUT + 20)
            assert cb.wait(task_id, timeout=10) == msgs
            assert not ca.duplicates and not cb.duplicates
            # queued, told once, failed once: both gateways watch, one acts
            assert [m["data"]["action"] for m in msgs] == ["queued", "log", "failed"], msgs
            [notice] = _notices(msgs)
            assert notice["data"]["payload"]["message"].startswith(NO_WORKER)
            assert notice["meta"]["timestamp"] / 1000 - published < 2 * HEARTBEAT
            assert final(msgs)["payload"]["step"] == "queued"
            waited = (msgs[-1]["meta"]["timestamp"] - notice["meta"]["timestamp"]) / 1000
            assert QUEUE_TIMEOUT - 0.1 <= waited < QUEUE_TIMEOUT + 3, waited
            # a worker started now skips the failed task and builds the next one
            cluster.add("worker")
            nxt = publish(ca, gw_a, "somebody", npm_project(name="somebody"))
            after = ca.wait(nxt, timeout=60)
            assert final(after)["action"] == "done", final(after)
            assert not _notices(after)
            assert ca.ordered(task_id) == msgs  # nothing was added to the failed task
    finally:
        cluster.stop()


def test_a_worker_started_within_the_queue_timeout_runs_the_waiting_task(tmp_path, redis_server):
    cluster = Cluster(tmp_path / "c", redis_server, heartbeat=HEARTBEAT, extra=("--queue-timeout", "60"))
    try:
        gateway = cluster.add("gateway")
        with Client(gateway.url) as client:
            task_id = publish(client, gateway, "late", slow_project("late", 3, 10), "slow")
            wait_for(lambda: _notices(client.ordered(task_id)), 2 * HEARTBEAT + 5, "the no-worker notice")
            cluster.add("worker")
            msgs = client.wait(task_id, timeout=60)
            assert final(msgs)["action"] == "done", final(msgs)
            assert len(_notices(msgs)) == 1
            assert [ln for ln in logs(msgs) if ln.startswith("slow line")] == ["slow line 1", "slow line 2",
                                                                             "slow line 3"]
    finally:
        cluster.stop()


def test_a_paused_worker_whose_task_was_failed_meanwhile_stops_it_quietly(tmp_path, redis_server):
    cluster = _cluster(tmp_path, redis_server, "c")
    try:
        gateway = cluster.add("gateway")
        worker = cluster.add("worker")
        with Client(gateway.url) as client:
            task_id = publish(client, gateway, "paused", slow_project("paused", 600, 100), "slow")
            wait_for(lambda: "slow line 3" in logs(client.ordered(task_id)), 60, "slow line 3")
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                msgs = client.wait(task_id, timeout=2 * HEARTBEAT + QUEUE_TIMEOUT + 20)
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            assert final(msgs)["action"] == "failed" and len(_notices(msgs)) == 1
            wait_for(lambda: "was failed by a gateway while no worker was seen" in worker.stderr(), 20,
                     "the resumed worker to stop the task")
            r = redis_server.client()
            assert json.loads(r.hget(f"flowcb:task:{task_id}", "state")) == "failed"
            stored = [json.loads(f[b"m"])["data"]["action"] for _id, f in r.xrange(f"flowcb:task:{task_id}:log")]
            assert [a for a in stored if a in ("done", "failed", "cancelled", "timed-out")] == ["failed"]
    finally:
        cluster.stop()


# -- the shared dir ------------------------------------------------------------------------------

def _role(tmp_path, redis_server, name: str, role: str, *extra: str) -> ServerProc:
    return ServerProc(tmp_path / name / "data", "--redis-url", redis_server.url, "--role", role,
                      "--heartbeat-timeout", str(HEARTBEAT), "--secret-file", str(secret_file(tmp_path)), *extra,
                      config={"checks": [], "freeze-windows": []})


def _refused(proc: ServerProc) -> str:
    try:
        with pytest.raises(RuntimeError, match="server did not start"):
            proc.start()
    finally:
        proc.stop()  # when it did start after all
    assert proc.proc.returncode == 2
    return proc.stderr()


@pytest.mark.parametrize("first,second", [("gateway", "worker"), ("worker", "gateway")])
def test_processes_that_do_not_share_a_dir_the_later_one_refuses_to_start(tmp_path, redis_server, first,
                                                                           second):
    started = _role(tmp_path, redis_server, "one", first).start()
    try:
        later = _role(tmp_path, redis_server, "two", second)
        err = _refused(later)
        [line] = [ln for ln in err.splitlines() if ln.strip()]
        mine, theirs = (tmp_path / "two" / "data").resolve(), (tmp_path / "one" / "data").resolve()
        assert line.startswith(f"flow-cloudbuild-server: error: this {second}'s shared dir {mine} is not the "
                               f"directory that {first} "), line
        assert f"uses ({theirs})" in line and "Pass the same --shared-dir" in line
        # it left again: a process that does share the dir starts, whatever the refused one said
        ok = _role(tmp_path, redis_server, "three", second, "--shared-dir", str(theirs)).start()
        ok.stop()
    finally:
        started.stop()


def test_gateway_and_worker_with_separate_data_dirs_and_one_shared_dir_build_an_upload(tmp_path,
                                                                                      redis_server):
    shared = tmp_path / "shared"
    gateway = _role(tmp_path, redis_server, "gw", "gateway", "--shared-dir", str(shared)).start()
    worker = _role(tmp_path, redis_server, "wk", "worker", "--shared-dir", str(shared)).start()
    try:
        with Client(gateway.url) as client:
            task_id = publish(client, gateway, "shared", npm_project(name="shared"))
            msgs = client.wait(task_id, timeout=60)
            assert final(msgs)["action"] == "done", final(msgs)
            assert http_get(final(msgs)["payload"]["artifacts"][0]["url"])[0] == 200
    finally:
        worker.stop()
        gateway.stop()
