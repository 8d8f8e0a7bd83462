"""Cloud build server in Redis mode: gateways and workers as separate real processes sharing a
real redis-server. Workers are killed with SIGKILL, gateways too, and Redis is restarted
mid-run; the client must always reach a final message, with every seq once and in order."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cloudbuild_redis_support import Cluster, RedisServer, kill, needs_redis, wait_for, worker_pid
from cloudbuild_server_support import TOKEN, Client, final, http_get, http_request, logs, npm_project

pytestmark = [needs_redis, pytest.mark.skipif(shutil.which("npm") is None, reason="builds npm projects")]

SLOW_JS = ("const fs = require('fs');\nlet i = 0;\n"
           "const t = setInterval(() => { i += 1; console.log('slow line ' + i);\n"
           "  if (i >= %d) { clearInterval(t); fs.mkdirSync('dist', {recursive: true});\n"
           "    fs.writeFileSync('dist/slow.txt', 'done\\n'); } }, %d);\n")


def tar_gz(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


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
def redis_server(tmp_path):
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


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
            assert [line for line in logs(msgs) if line.startswith("slow line")] == [f"slow line {i}" for i in range(1, 5)]
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
    with pytest.raises(Exception):
        Client(worker.url)
