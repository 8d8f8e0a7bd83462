"""Deployments and the release index in Redis mode (``backends/redis/releases.py``): a build run
by the worker is served by either gateway at its own origin and at the prod alias; releases,
promotes and ownership are one signed record per project changed atomically (two promotes at
once through two gateways: both in the history, one of them prod); a record written into Redis
without the server secret neither points an alias at a task nor claims a name."""

from __future__ import annotations

import json
import threading

from cloudbuild_publish_support import needs_node, open_deployment
from cloudbuild_redis_support import Cluster, RedisServer, needs_redis
from cloudbuild_server_support import OTHER_TOKEN, TOKEN, Client, final, http_request, new_repo, npm_project, protocol

pytestmark = [needs_redis, needs_node]
SITE_JS = ("const fs = require('fs'); fs.mkdirSync('dist', {recursive: true});\n"
           "fs.writeFileSync('dist/index.html', '<h1>' + require('./package.json').version + '</h1>');\n")


def publish(client: Client, repo: str, version: str, *, prod: bool = True, name: str = "redis-site") -> dict:
    ack = client.publish(name=name, version=version, source="git", repo=repo, ref="main", prod=prod,
                         buildCmd=["npm", "run", "build"])
    assert ack["ok"], ack
    return final(client.wait(ack["taskId"]))


def page(port: int, label: str) -> tuple[int, bytes]:
    status, _, body = open_deployment(f"http://{label}.localhost:{port}/")
    return status, body


def test_redis_gateways_serve_deployments_and_aliases(tmp_path, git_daemon):
    redis = RedisServer(tmp_path / "redis").start()
    cluster = Cluster(tmp_path / "cluster", redis)
    try:
        gw_a, gw_b = cluster.add("gateway"), cluster.add("gateway")
        cluster.add("worker", concurrency=2)
        with Client(gw_a.url) as client, Client(gw_b.url, OTHER_TOKEN) as other:
            v1 = publish(client, new_repo(git_daemon, {**npm_project("redis-site", "1.0.0", SITE_JS)}), "1.0.0")
            assert v1["action"] == "done", v1
            task1 = v1["payload"]["deploymentUrl"].split("//", 1)[1].split(".", 1)[0]
            # (a worker writes the URLs: without --public-url or --deploy-domain, with its own port)
            assert [a["url"].split(":")[1] for a in v1["payload"]["aliases"]] == [
                "//redis-site.localhost", "//redis-site--main.localhost"]
            for gw in (gw_a, gw_b):  # every gateway serves it, from the shared store
                assert page(gw.port, task1) == (200, b"<h1>1.0.0</h1>")
                assert page(gw.port, "redis-site") == (200, b"<h1>1.0.0</h1>")
                assert page(gw.port, "redis-site--main") == (200, b"<h1>1.0.0</h1>")
            v2 = publish(client, new_repo(git_daemon, {**npm_project("redis-site", "2.0.0", SITE_JS)}), "2.0.0")
            task2 = v2["payload"]["deploymentUrl"].split("//", 1)[1].split(".", 1)[0]
            assert page(gw_b.port, "redis-site") == (200, b"<h1>2.0.0</h1>")

            # another token: its prod release of the name is refused before it builds
            ack = other.publish(name="Redis.Site", version="9.0.0", source="git", prod=True,
                                repo=new_repo(git_daemon, npm_project("Redis.Site", "9.0.0", SITE_JS)),
                                ref="main", buildCmd=["npm", "run", "build"])
            assert ack["ok"] is False and ack["error"]["code"] == protocol.ERROR_NAME_TAKEN, ack
            assert "belongs to another token" in ack["error"]["message"]

            # two promotes at once, through both gateways: both recorded, prod is one of them
            answers: list[tuple[int, bytes]] = []

            def promote(gw, task_id):
                answers.append(http_request("POST", f"{gw.url}{protocol.PATH_TASKS}{task_id}/promote",
                                            b"", token=TOKEN))
            threads = [threading.Thread(target=promote, args=(gw_a, task1)),
                       threading.Thread(target=promote, args=(gw_b, task2))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(status for status, _ in answers) == [200, 200], answers
            status, body = http_request("GET", f"{gw_b.url}{protocol.PATH_PROJECTS}redis-site/releases", token=TOKEN)
            releases = json.loads(body)
            assert status == 200 and releases["prod"] in (task1, task2)
            assert sorted(e["action"] for e in releases["history"][:2]) == ["promote", "promote"]
            assert len(releases["history"]) == 4
            served = b"<h1>1.0.0</h1>" if releases["prod"] == task1 else b"<h1>2.0.0</h1>"
            assert page(gw_a.port, "redis-site") == (200, served)
            # a promote of the other token's name, a list by it: as if the project did not exist
            assert http_request("POST", f"{gw_a.url}{protocol.PATH_TASKS}{task1}/promote", b"",
                                token=OTHER_TOKEN)[0] == 404
            assert http_request("GET", f"{gw_a.url}{protocol.PATH_PROJECTS}redis-site/releases",
                                token=OTHER_TOKEN)[0] == 404

        # a record written into Redis without the secret: no alias, no owner
        r = redis.client()
        forged = {"name": "forged", "owner": protocol.token_hash(OTHER_TOKEN), "prod": task1,
                  "branches": {}, "versions": {}, "history": []}
        r.set("flowcb:project:forged", json.dumps({"data": forged, "sig": "0" * 64}))
        r.set("flowcb:project:redis-site", json.dumps({"data": {**forged, "name": "redis-site"}, "sig": "0" * 64}))
        assert page(gw_a.port, "forged")[0] == 404
        with Client(gw_a.url, OTHER_TOKEN) as other:  # the forged owner is nobody: the name is free
            done = publish(other, new_repo(git_daemon, npm_project("redis-site", "5.0.0", SITE_JS)), "5.0.0")
            assert done["action"] == "done", done
        assert page(gw_b.port, "redis-site") == (200, b"<h1>5.0.0</h1>")
    finally:
        cluster.stop()
        redis.stop()
