"""`flow publish` (the real CLI) against Redis-mode gateways behind a failover proxy: the
gateway it talks to is killed mid-build, and it resumes on the other one after its last seq."""

from __future__ import annotations

import json

from cloudbuild_publish_support import make_site, needs_node
from cloudbuild_redis_support import Cluster, RedisServer, kill, needs_redis
from cloudbuild_server_support import TOKEN
from tcp_proxy import TcpProxy

pytestmark = [needs_redis, needs_node]


def test_flow_publish_resumes_on_another_gateway_after_its_gateway_died(flow, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    cluster = Cluster(tmp_path / "cluster", redis)
    try:
        gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
        cluster.add("worker")
        proxy = TcpProxy(gw_a.port, gw_b.port)
        project = make_site(tmp_path / "site", name="failover-site", slow_lines=40, slow_interval_ms=50)
        proc = flow.popen("publish", "--server", f"http://127.0.0.1:{proxy.port}", "--token", TOKEN,
                          "--source", "upload", "--build-cmd", "npm run slow", "--json", cwd=project)
        received = []
        for line in proc.stdout:
            received.append(json.loads(line))
            if "slow line 3" in received[-1]["data"]["payload"]["message"].split("\n") and gw_a.proc.poll() is None:
                kill(gw_a)
        code = proc.wait(timeout=120)
        stderr = proc.stderr.read()
        assert code == 0, stderr
        assert "reconnected; resuming after message" in stderr
        assert [m["meta"]["seq"] for m in received] == list(range(1, len(received) + 1))
        assert received[-1]["data"]["action"] == "done"
        slow = [ln for m in received if m["data"]["action"] == "log"
                for ln in m["data"]["payload"]["message"].split("\n") if ln.startswith("slow line")]
        assert slow == [f"slow line {i}" for i in range(1, 41)]
        proxy.close()
    finally:
        cluster.stop()
        redis.stop()
