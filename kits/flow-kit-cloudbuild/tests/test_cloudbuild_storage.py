"""Storage through one interface (issue 19, items 3 and 4) against a real SeaweedFS on loopback:
the ObjectStore contract on the data dir and on S3, artifacts in the bucket with their quota, a
server with ``--store s3://`` that keeps nothing in its data dir and serves from the bucket,
and a ``[[targets]]`` bucket that follows prod releases and rollbacks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest
from cloudbuild_server_support import (
    TOKEN,
    Client,
    ServerProc,
    final,
    http_get,
    http_request,
    npm_project,
    tar_gz,
    upload,
)

from flow_kit_cloudbuild.server.storage.artifacts import ArtifactQuotaExceeded, ObjectArtifactStore
from flow_kit_cloudbuild.server.storage.objects import LocalObjectStore, S3ObjectStore

TASK = "0123456789abcdef01234567"


def _stores(seaweed, tmp_path: Path) -> list:
    bucket = seaweed.bucket("flow-contract")
    return [LocalObjectStore(tmp_path / "local"),
            S3ObjectStore(bucket, f"run-{time.time_ns()}", seaweed.client())]


@pytest.mark.parametrize("kind", [0, 1], ids=["local", "s3"])
def test_object_store_contract(seaweed, tmp_path, kind):
    store = _stores(seaweed, tmp_path)[kind]
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 300_000)

    async def run() -> None:
        with open(src, "rb") as fh:
            assert await store.put_file("a/b/file.bin", fh, limit=300_000, content_type="application/x-test") == 300_000
        await store.put_bytes("a/small.json", b"{}")
        opened = await store.open("a/b/file.bin")
        assert opened is not None and opened.size == 300_000 and opened.etag
        assert b"".join([c async for c in opened.chunks]) == b"x" * 300_000
        assert await store.get_bytes("a/small.json") == b"{}"
        assert await store.open("a/none") is None and await store.get_bytes("a/none") is None
        assert (await store.head("a/small.json")).size == 2
        assert sorted(i.key for i in await store.list("a/")) == ["a/b/file.bin", "a/small.json"]
        # one claim wins: a second put_if_absent of the same key is refused
        assert await store.put_if_absent("claims/x", b"1") is True
        assert await store.put_if_absent("claims/x", b"2") is False
        assert await store.get_bytes("claims/x") == b"1"
        # a file that grew past its limit is refused and stores nothing
        with open(src, "rb") as fh:
            with pytest.raises(Exception, match="grew past"):
                await store.put_file("a/grown.bin", fh, limit=1000)
        assert await store.head("a/grown.bin") is None
        await store.delete_prefix("a/")
        assert await store.list("a/") == []
        for bad in ("../x", "a//b", "/abs", "a/./b"):
            with pytest.raises(KeyError):
                await store.put_bytes(bad, b"")

    asyncio.run(run())


def test_artifacts_in_s3_keep_their_quota(seaweed, tmp_path):
    """The quota counts a sparse file at its full size before anything is written: nothing is stored."""
    bucket = seaweed.bucket("flow-artifacts")
    prefix = f"quota-{time.time_ns()}"
    artifacts = ObjectArtifactStore(S3ObjectStore(bucket, prefix, seaweed.client()).child("artifacts"))
    small, sparse = tmp_path / "a.txt", tmp_path / "big.bin"
    small.write_text("hello")
    with open(sparse, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)

    async def run() -> None:
        listed = await artifacts.put(TASK, [("a.txt", small), ("../evil", small)], max_bytes=1000)
        assert listed == [{"name": "a.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}]
        size, chunks = await artifacts.open(TASK, "a.txt")
        assert size == 5 and b"".join([c async for c in chunks]) == b"hello"
        # a build-cache hit: the files copied inside the bucket (S3's server-side copy), manifest last
        copy = "c" * 24
        assert await artifacts.copy(TASK, copy) == listed and await artifacts.list(copy) == listed
        size, chunks = await artifacts.open(copy, "a.txt")
        assert size == 5 and b"".join([c async for c in chunks]) == b"hello"
        assert await artifacts.copy("d" * 24, copy) is None  # nothing to copy: None, the copy untouched
        assert await artifacts.list(copy) == listed
        await artifacts.delete(copy)
        assert await artifacts.open(TASK, "../evil") is None
        with pytest.raises(ArtifactQuotaExceeded):
            await artifacts.put(TASK, [("a.txt", small), ("big.bin", sparse)], max_bytes=1024 * 1024)
        assert await artifacts.list(TASK) is None
        assert seaweed.keys(bucket, prefix) == []

    asyncio.run(run())


SITE_JS = ("const fs = require('fs'); fs.mkdirSync('dist/assets', {recursive: true});\n"
           "fs.writeFileSync('dist/index.html', '<h1>v' + process.env.npm_package_version + '</h1>');\n"
           "fs.writeFileSync('dist/assets/app-3f2a9c1b.js', 'console.log(1)');\n")


def _publish(server: ServerProc, version: str, prod: bool) -> dict:
    status, body = upload(server, tar_gz(npm_project(version=version, build_js=SITE_JS)))
    assert status == 201, body
    with Client(server.url) as c:
        ack = c.publish(name="demo", version=version, source="upload", uploadId=body["uploadId"],
                        buildCmd=["npm", "run", "build"], prod=prod)
        assert "taskId" in ack, ack
        msgs = c.wait(ack["taskId"], timeout=120)
    done = final(msgs)
    assert done["action"] == "done", done
    return {"taskId": ack["taskId"], **done["payload"]}


def test_server_with_an_s3_store_and_a_target(seaweed, tmp_path):
    """--store s3://: artifacts in the bucket, none in the data dir, served from the bucket; a
    [[targets]] bucket gets each prod release with content types and cache headers, and a
    promote back (rollback) copies the earlier release back."""
    store_bucket, www = seaweed.bucket("flow-store"), seaweed.bucket("flow-www")
    data = tmp_path / "data"
    server = ServerProc(data, "--store", f"s3://{store_bucket}/srv", "--no-sandbox", env=seaweed.env,
                        config={"targets": [{"url": f"s3://{www}/site", "project": "demo"}]}).start()
    try:
        first = _publish(server, "1.0.0", prod=True)
        task = first["taskId"]
        keys = seaweed.keys(store_bucket, "srv/")
        assert f"srv/artifacts/{task}/manifest.json" in keys, keys
        assert f"srv/artifacts/{task}/files/index.html" in keys
        assert not (data / "artifacts" / task).exists()
        status, body = http_get(f"{server.url}/artifacts/{task}/index.html")
        assert status == 200 and body == b"<h1>v1.0.0</h1>"
        s3 = seaweed.client()
        deadline = time.monotonic() + 10
        while "site/index.html" not in seaweed.keys(www) and time.monotonic() < deadline:
            time.sleep(0.1)
        got = s3.get_object(Bucket=www, Key="site/index.html")
        assert got["Body"].read() == b"<h1>v1.0.0</h1>"
        assert got["ContentType"].startswith("text/html") and got["CacheControl"] == "no-cache"
        js = s3.head_object(Bucket=www, Key="site/assets/app-3f2a9c1b.js")
        assert js["ContentType"].startswith("text/javascript") and "immutable" in js["CacheControl"]
        _publish(server, "2.0.0", prod=True)
        deadline = time.monotonic() + 10
        while s3.get_object(Bucket=www, Key="site/index.html")["Body"].read() != b"<h1>v2.0.0</h1>":
            assert time.monotonic() < deadline, "the target never got the second release"
            time.sleep(0.1)
        status, body = http_request("POST", f"{server.url}/api/tasks/{task}/promote", b"{}", token=TOKEN)
        assert status == 200, body
        deadline = time.monotonic() + 10
        while s3.get_object(Bucket=www, Key="site/index.html")["Body"].read() != b"<h1>v1.0.0</h1>":
            assert time.monotonic() < deadline, "the rollback was not delivered"
            time.sleep(0.1)
        assert seaweed.keys(www, "site/") == ["site/assets/app-3f2a9c1b.js", "site/index.html"]
    finally:
        server.stop()
    print(json.dumps({"ok": True}))
