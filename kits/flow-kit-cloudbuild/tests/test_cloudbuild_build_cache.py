"""The build cache and signed provenance (issue 23), through the real ``flow publish`` and
``flow verify`` against the real server (installed by ``flow buildkit add``), real npm builds:

* the same source twice: the second comes from the cache (install and build skipped, the CLI and
  the record say "from cache: #1"), its files byte-identical, its signed provenance's digests
  those of the served files (``flow verify`` of the deployment URL passes);
* one byte changed: built again; ``--no-cache``: built; another token: built (no cross-owner
  hit), unless the operator made the server's tokens one team (``--cache-scope team``);
* a tampered artifact or statement: ``flow verify`` fails naming it;
* an entry the server did not sign (one who can write the store but has not the key points a build
  key at other files, copies a signed entry to another key or tenant, or leaves an unsigned one):
  refused, deleted, built over; the rebuilt entry hits again;
* the server killed while it stores a build's artifacts (before the cache entry): no entry, the
  next publish builds; in Redis mode a worker killed there leaves no entry either, and the
  retry on another worker builds from scratch and writes a whole one;
* Redis mode with S3: a gateway and a worker on separate data dirs hit the cache in the bucket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from cloudbuild_publish_support import TOKEN, BuildServer, make_site, needs_node, open_deployment
from cloudbuild_redis_support import Cluster, kill, needs_redis, wait_for
from cloudbuild_server_support import TOKEN as CLUSTER_TOKEN

pytestmark = needs_node

OTHER_TOKEN = "publish-tests-other-token-987654321"
MANY_JS = ("const fs = require('fs'); fs.mkdirSync('dist/many', {recursive: true});\n"
           "for (let i = 0; i < %d; i++) fs.writeFileSync('dist/many/f' + i + '.txt', 'x'.repeat(4096) + i);\n"
           "fs.writeFileSync('dist/index.html', '<h1>many</h1>');\n")
PROVENANCE = "/.well-known/flow/provenance.json"


@pytest.fixture(scope="module")
def cache_server(flow, tmp_path_factory: pytest.TempPathFactory):
    """A server of its own (two tokens), so other modules' publishes never share its cache."""
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path_factory.mktemp("cache-server") / "data",
                      extra=("--token", OTHER_TOKEN)).start()
    yield srv
    srv.stop()


def _publish(flow, server: BuildServer, project: Path, *args: str, token: str = TOKEN) -> tuple[dict, str]:
    """``flow publish --source upload --json``: (the final message, the whole log text)."""
    done = flow("publish", "--server", server.url, "--token", token, "--source", "upload", "--json", *args,
                cwd=project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    text = "\n".join(m["data"]["payload"].get("message", "") for m in messages)
    return messages[-1], text


def _deployment(final: dict) -> str:
    return final["data"]["payload"]["deploymentUrl"]


def _key_file(server: BuildServer, where: Path) -> Path:
    with urllib.request.urlopen(server.url + "/.well-known/flow/build-key.pub", timeout=10) as reply:
        pem = reply.read()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----"), pem[:80]
    where.write_bytes(pem)
    return where


def _statement(url: str) -> dict:
    status, _, body = open_deployment(url, PROVENANCE.lstrip("/"))
    assert status == 200, body[:300]
    envelope = json.loads(body)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    return json.loads(base64.b64decode(envelope["payload"]))


def test_the_same_source_twice_is_cached_byte_identical_with_matching_provenance(flow, cache_server, tmp_path):
    site = make_site(tmp_path / "site", name="cached-site")
    first, first_log = _publish(flow, cache_server, site)
    assert "$ npm ci" in first_log and "build cache: no earlier build" in first_log, first_log
    second, second_log = _publish(flow, cache_server, site)
    payload = second["data"]["payload"]
    # install and build never ran; the CLI says where the files came from
    assert "$ npm ci" not in second_log and "$ npm run build" not in second_log, second_log
    assert "install and build skipped" in second_log and payload["message"].endswith("(from cache: #1)"), payload
    one, two = _deployment(first), _deployment(second)
    assert one != two  # a deployment of its own, a task of its own
    a, b = open_deployment(one, "index.html"), open_deployment(two, "index.html")
    assert a[0] == b[0] == 200 and a[2] == b[2] == b"<h1>1.0.0</h1>\n"
    # its own provenance, naming the build it reused, whose digests are those of the served files
    statement = _statement(two)
    served = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert served == {n: hashlib.sha256(open_deployment(two, n)[2]).hexdigest() for n in served}
    assert set(served) == {"index.html"}
    byproducts = statement["predicate"]["runDetails"].get("byproducts") or []
    assert {"name": "build-cache", "annotations": {"reusedFrom": first["meta"]["taskId"]}} in byproducts
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == second["meta"]["taskId"]
    # the task record and the dashboard's detail say it too
    record = cache_server.get(f"/api/tasks/{second['meta']['taskId']}")
    assert record["cachedFrom"] == {"taskId": first["meta"]["taskId"], "number": 1}, record
    assert record["provenanceUrl"] == two.rstrip("/") + PROVENANCE
    # flow verify checks both deployments offline against the server's key
    key = _key_file(cache_server, tmp_path / "server.pub")
    for url in (one, two):
        verified = flow("verify", url, "--key", str(key), cwd=site)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    # one byte changed: built again (and the old source is still cached)
    (site / "build.js").write_text((site / "build.js").read_text() + " ")
    third, third_log = _publish(flow, cache_server, site)
    assert "$ npm run build" in third_log and "from cache" not in third["data"]["payload"]["message"], third_log
    # --no-cache: built, even though the cache has it
    fourth, fourth_log = _publish(flow, cache_server, site, "--no-cache")
    assert "not read (--no-cache)" in fourth_log and "$ npm run build" in fourth_log, fourth_log
    # the same source from another token: built (no tenant reads another's cache)
    fifth, fifth_log = _publish(flow, cache_server, site, token=OTHER_TOKEN)
    assert "$ npm run build" in fifth_log and "from cache" not in fifth_log, fifth_log


def test_a_tampered_artifact_or_statement_fails_flow_verify_naming_it(flow, cache_server, tmp_path):
    site = make_site(tmp_path / "site", name="tamper-site")
    final, _ = _publish(flow, cache_server, site, "--no-cache")
    task, url = final["meta"]["taskId"], _deployment(final)
    key = _key_file(cache_server, tmp_path / "server.pub")
    stored = cache_server.data_dir / "artifacts" / task
    assert flow("verify", url, "--key", str(key), cwd=site).returncode == 0

    # an artifact changed where it is stored: the deployment serves it, verify names it
    app = stored / "files" / "index.html"
    original = app.read_bytes()
    app.write_bytes(original.replace(b"1.0.0", b"6.6.6"))
    bad = flow("verify", url, "--key", str(key), cwd=site)
    assert bad.returncode == 1 and "index.html" in bad.stderr, bad.stdout + bad.stderr
    app.write_bytes(original)

    # the statement changed (a digest rewritten to match a planted file), its signature kept
    envelope_path = stored / "provenance.json"
    envelope = json.loads(envelope_path.read_bytes())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    envelope_path.write_text(json.dumps(envelope))
    bad = flow("verify", url, "--key", str(key), cwd=site)
    assert bad.returncode == 1 and "signature" in bad.stderr, bad.stdout + bad.stderr


def test_an_entry_the_server_did_not_sign_is_refused_deleted_and_built_over(flow, tmp_path):
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    data = tmp_path / "data"
    srv = BuildServer(executable, data, extra=("--token", OTHER_TOKEN)).start()
    site_a = make_site(tmp_path / "a", name="site-a", version="1.0.0")
    site_b = make_site(tmp_path / "b", name="site-b", version="2.0.0")
    try:
        a, _ = _publish(flow, srv, site_a)
        b, _ = _publish(flow, srv, site_b)
        _publish(flow, srv, site_a, token=OTHER_TOKEN)  # the same build key in the other token's scope

        def entry_of(task: str) -> Path:
            [found] = [p for p in (data / "build-cache").rglob("*.json")
                       if json.loads(json.loads(p.read_bytes())["payload"])["taskId"] == task]
            return found
        a_entry, b_entry = entry_of(a["meta"]["taskId"]), entry_of(b["meta"]["taskId"])
        signed_b = b_entry.read_bytes()

        def publish_b_builds_its_own_files(why: str) -> None:
            final, text = _publish(flow, srv, site_b)
            assert "is not one this server signed (" + why in text, text
            assert "$ npm run build" in text and "from cache" not in final["data"]["payload"]["message"], text
            status, _, body = open_deployment(_deployment(final), "index.html")
            assert (status, body) == (200, b"<h1>2.0.0</h1>\n")

        # B's build key pointed at A's files: the payload rewritten, the signature kept
        sealed = json.loads(a_entry.read_bytes())
        payload = json.loads(sealed["payload"])
        payload["buildKey"] = b_entry.stem
        b_entry.write_text(json.dumps({**sealed, "payload": json.dumps(payload)}))
        publish_b_builds_its_own_files("its signature does not verify")
        # A's whole signed entry copied to B's key
        b_entry.write_bytes(a_entry.read_bytes())
        publish_b_builds_its_own_files("its signature does not verify")
        # the other token's signed entry of the same build key copied into this token's scope
        other = next(p for p in (data / "build-cache").rglob(a_entry.name) if p != a_entry)
        a_entry.write_bytes(other.read_bytes())
        final, text = _publish(flow, srv, site_a)
        assert "its signature does not verify" in text and "$ npm run build" in text, text
        # an unsigned entry (the format before entries were signed)
        b_entry.write_text(json.dumps({"v": 1, **json.loads(json.loads(signed_b)["payload"])}))
        publish_b_builds_its_own_files("it is not a signed entry")
        # each refused entry was deleted and the build that followed wrote a signed one: a hit again
        final, text = _publish(flow, srv, site_b)
        assert "from cache" in final["data"]["payload"]["message"], text
        assert "not one this server signed" not in text
    finally:
        srv.stop()


def test_a_team_scope_shares_builds_between_the_servers_tokens(flow, tmp_path):
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path / "data", extra=("--token", OTHER_TOKEN, "--cache-scope", "team")).start()
    try:
        site = make_site(tmp_path / "site", name="team-site")
        _publish(flow, srv, site)
        final, text = _publish(flow, srv, site, token=OTHER_TOKEN)
        assert final["data"]["payload"]["message"].endswith("(from cache: #1)"), text
    finally:
        srv.stop()


def test_a_server_killed_while_storing_artifacts_leaves_no_cache_entry(flow, tmp_path):
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    data = tmp_path / "data"
    srv = BuildServer(executable, data).start()
    site = make_site(tmp_path / "site", name="killed-site")
    (site / "build.js").write_text(MANY_JS % 4000)
    try:
        started = flow("publish", "--server", srv.url, "--token", TOKEN, "--source", "upload", "--detach",
                       cwd=site)
        assert started.returncode == 0, started.stderr
        task = started.stdout.strip().splitlines()[-1]
        files = data / "artifacts" / task / "files" / "many"
        deadline = time.monotonic() + 120
        while not (files.is_dir() and any(files.iterdir())):  # the artifacts are being stored
            assert time.monotonic() < deadline, "the publish step never began"
            time.sleep(0.005)
        assert srv.proc is not None
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        srv.proc = None
        assert not (data / "artifacts" / task / "manifest.json").exists(), "killed too late to test anything"
        assert not list((data / "build-cache").rglob("*.json"))  # no entry, not even a half one
        srv.start()
        _, text = _publish(flow, srv, site)
        assert "$ npm run build" in text and "from cache" not in text, text
        # and now it is whole: the next one hits
        final, text = _publish(flow, srv, site)
        assert "from cache" in final["data"]["payload"]["message"], text
    finally:
        srv.stop()


@needs_redis
def test_a_redis_worker_killed_while_storing_artifacts_leaves_no_entry_and_its_retry_a_whole_one(
        flow, tmp_path, redis_server):
    cluster = Cluster(tmp_path / "cluster", redis_server)
    try:
        gateway = cluster.add("gateway")
        doomed = cluster.add("worker")
        site = make_site(tmp_path / "site", name="killed-worker-site")
        (site / "build.js").write_text(MANY_JS % 4000)
        started = flow("publish", "--server", gateway.url, "--token", CLUSTER_TOKEN, "--source", "upload",
                       "--detach", cwd=site)
        assert started.returncode == 0, started.stderr
        task = started.stdout.strip().splitlines()[-1]
        stored = cluster.shared / "artifacts" / task
        wait_for(lambda: (stored / "files" / "many").is_dir() and any((stored / "files" / "many").iterdir()),
                 120, "the publish step to begin", every=0.005)
        kill(doomed)
        assert not (stored / "manifest.json").exists(), "killed too late to test anything"
        assert not list((cluster.shared / "build-cache").rglob("*.json"))  # no entry, not even a half one
        cluster.add("worker")  # the task's next attempt runs here, after the heartbeat timeout
        attached = flow("publish", "--server", gateway.url, "--token", CLUSTER_TOKEN, "--attach", task,
                        "--json", cwd=site)
        assert attached.returncode == 0, attached.stdout[-3000:] + attached.stderr
        messages = [json.loads(line) for line in attached.stdout.splitlines() if line.strip()]
        text = "\n".join(m["data"]["payload"].get("message", "") for m in messages)
        assert "attempt 2 of 3" in text and text.count("$ npm run build") == 2, text
        assert "from cache" not in messages[-1]["data"]["payload"]["message"]
        manifest = json.loads((stored / "manifest.json").read_text())
        assert len(manifest) == 4001  # the retry stored every file, over the half-stored ones
        again = flow("publish", "--server", gateway.url, "--token", CLUSTER_TOKEN, "--source", "upload", "--json",
                     cwd=site)
        assert again.returncode == 0, again.stderr
        final = json.loads(again.stdout.strip().splitlines()[-1])
        assert final["data"]["payload"]["message"].endswith("(from cache: #1)"), again.stdout[-3000:]
    finally:
        cluster.stop()


@needs_redis
def test_redis_mode_with_s3_hits_the_cache_from_another_worker(flow, tmp_path, seaweed, redis_server):
    bucket = seaweed.bucket("flow-cache")
    prefix = f"run-{time.time_ns()}"
    cluster = Cluster(tmp_path / "cluster", redis_server, shared_dir=False, env=seaweed.env,
                      extra=("--store", f"s3://{bucket}/{prefix}"))
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")
        cluster.add("worker")
        site = make_site(tmp_path / "site", name="redis-cached")

        def go() -> tuple[dict, str]:
            done = flow("publish", "--server", gateway.url, "--token", CLUSTER_TOKEN, "--source", "upload", "--json",
                        cwd=site)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr
            messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            return messages[-1], "\n".join(m["data"]["payload"].get("message", "") for m in messages)

        first, _ = go()
        second, text = go()
        assert second["data"]["payload"]["message"].endswith("(from cache: #1)"), text
        keys = seaweed.keys(bucket, f"{prefix}/")
        assert any(k.startswith(f"{prefix}/build-cache/") for k in keys), keys
        task = second["meta"]["taskId"]
        assert f"{prefix}/artifacts/{task}/provenance.json" in keys
        status, _, body = open_deployment(_deployment(second), "index.html")
        assert (status, body) == (200, b"<h1>1.0.0</h1>\n")
        statement = _statement(_deployment(second))
        assert {s["name"] for s in statement["subject"]} == {"index.html"}
    finally:
        cluster.stop()
