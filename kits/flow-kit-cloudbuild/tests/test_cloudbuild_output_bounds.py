"""Bounds on what comes out of a build (issue 18, parts 4 and 8), on a real flow-cloudbuild-server
on loopback with real bubblewrap: sparse artifacts, a responsive event loop while a large artifact
is stored, the work dir's file count, the per-token cache quota, one line for skipped files,
per-owner build uids from the configured range, and the client's artifact downloads."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudbuild_redis_support import Cluster, needs_redis
from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    ServerProc,
    final,
    logs,
    npm_project,
    protocol,
    tar_gz,
    upload,
)

from flow_kit_cloudbuild.client import http as client_http  # noqa: E402
from flow_kit_cloudbuild.client.errors import PublishError  # noqa: E402
from flow_kit_cloudbuild.server.runtime import uids  # noqa: E402

MiB = 1024 * 1024
THIRD_TOKEN = "test-token-charlie"


def _build(server: ServerProc, build_js: str, token: str = TOKEN, timeout: float = 180) -> list[dict]:
    """Upload an npm project whose `npm run build` runs ``build_js``; its messages to the end."""
    status, body = upload(server, tar_gz(npm_project(build_js=build_js)), token=token)
    assert status == 201, body
    with Client(server.url, token=token) as c:
        ack = c.publish(name="demo", version="1.0.0", source="upload", uploadId=body["uploadId"],
                        buildCmd=["npm", "run", "build"], noCache=True)  # each call runs its build
        assert ack.get("ok", True) and "taskId" in ack, ack
        return c.wait(ack["taskId"], timeout=timeout)


def _tree_bytes(path: Path) -> int:
    """Blocks allocated under ``path``: what the tree really takes on the disk."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*")) if path.exists() else 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """Default limits (artifact quota 1 GiB), so what these tests show holds out of the box."""
    s = ServerProc(tmp_path_factory.mktemp("bounds") / "data", "--concurrency", "2").start()
    yield s
    s.stop()


# -- part 4: artifacts --------------------------------------------------------------------------
def test_sparse_artifacts_are_refused_by_the_quota_without_filling_the_disk(server):
    """Four 500 MiB sparse files take a few KB in dist/ and pass the disk limit, but would be
    2,000 MiB in the store: the artifact quota (1 GiB by default) counts their apparent size
    before anything is copied."""
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                "for (let i = 0; i < 4; i++) {\n"
                "  const fd = fs.openSync(`dist/big${i}.bin`, 'w');\n"
                f"  fs.ftruncateSync(fd, {500 * MiB}); fs.closeSync(fd);\n"
                "}\nconsole.log('sparse files made');\n")
    msgs = _build(server, build_js)
    done = final(msgs)
    assert done["action"] == "failed", done
    assert done["payload"]["step"] == "publish"
    message = done["payload"]["message"]
    assert "--artifact-max-bytes" in message and "sparse" in message, message
    task_id = msgs[0]["meta"]["taskId"]
    stored = server.data_dir / "artifacts" / task_id
    assert _tree_bytes(server.data_dir / "artifacts") < 1024 ** 3
    assert _tree_bytes(stored) < MiB, "the store grew while refusing the artifacts"


def test_the_event_loop_stays_responsive_while_a_large_artifact_is_stored(server):
    """A 200 MiB artifact (real data) is copied into the store in a worker thread: /healthz,
    answered by the event loop, keeps answering within 100 ms meanwhile (copied on the loop,
    it waited for the whole copy)."""
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                "const block = Buffer.alloc(1 << 20, 7); const fd = fs.openSync('dist/big.bin', 'w');\n"
                "for (let i = 0; i < 200; i++) fs.writeSync(fd, block);\n"
                "fs.closeSync(fd); console.log('written');\n")
    samples: list[tuple[float, float]] = []  # (start, latency)
    stop = threading.Event()

    def poll() -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while not stop.is_set():
            start = time.monotonic()
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            samples.append((start, time.monotonic() - start))
            time.sleep(0.005)
        conn.close()

    status, body = upload(server, tar_gz(npm_project(build_js=build_js)))
    assert status == 201
    seen: dict[str, float] = {}
    with Client(server.url) as c:
        original = c._on_message

        def timed(msg: dict) -> None:  # when the publish step began and when the task ended
            seen.setdefault(msg["data"]["action"], time.monotonic())
            original(msg)
        c.sio.on(protocol.EVENT_MESSAGE, timed)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            ack = c.publish(name="demo", version="1.0.0", source="upload", uploadId=body["uploadId"],
                            buildCmd=["npm", "run", "build"])
            msgs = c.wait(ack["taskId"], timeout=180)
        finally:
            stop.set()
            poller.join(30)
    done = final(msgs)
    assert done["action"] == "done", done
    assert done["payload"]["artifacts"][0]["size"] == 200 * MiB
    # every request that was waiting at some moment of the publish step (a loop blocked by the
    # copy shows as one request that took as long as the copy)
    during = [lat for start, lat in samples if start <= seen["done"] and start + lat >= seen["publish"]]
    assert during, "no /healthz request while the artifact was stored"
    assert max(during) < 0.1, f"/healthz took {max(during) * 1000:.0f} ms while the artifact was stored"
    print(f"/healthz while storing 200 MiB: {len(during)} requests, the slowest {max(during) * 1000:.1f} ms")


def test_a_hundred_thousand_empty_files_are_stopped_by_the_file_limit(tmp_path):
    """Empty files take no blocks: 100,000 of them were "2 MB". The work dir's entries are
    counted (--build-files; 50,000 here, 200,000 by default)."""
    with ServerProc(tmp_path / "data", config={"build-files": 50_000}) as s:
        build_js = ("const fs = require('fs'); fs.mkdirSync('dist'); fs.mkdirSync('many');\n"
                    "fs.writeFileSync('dist/app.js', 'x');\n"
                    "for (let i = 0; i < 100000; i++) fs.writeFileSync(`many/f${i}`, '');\n"
                    "console.log('made');\n")
        done = final(_build(s, build_js))
    assert done["action"] == "failed", done
    assert done["payload"]["step"] == "build"
    message = done["payload"]["message"]
    assert "--build-files" in message and "50,000" in message, message


def test_cache_past_the_token_quota_is_evicted_least_recently_used_first(tmp_path):
    """The build leaves 6 MiB in its npm cache (the cache npm uses, so the server touched its
    marker) and 6 MiB in its uv cache (unused by this build): over the 10 MiB quota, the uv
    cache goes after the build; npm's stays. Another token's cache is not touched."""
    cfg = {"cache-max-bytes": "10M"}
    with ServerProc(tmp_path / "data", config=cfg, tokens=(TOKEN, OTHER_TOKEN)) as s:
        keep_js = ("const fs = require('fs'); fs.mkdirSync('dist'); fs.writeFileSync('dist/a.js', 'a');\n"
                   "fs.writeFileSync(process.env.UV_CACHE_DIR + '/other', Buffer.alloc(3 << 20, 1));\n")
        assert final(_build(s, keep_js, token=OTHER_TOKEN))["action"] == "done"
        build_js = ("const fs = require('fs'); fs.mkdirSync('dist'); fs.writeFileSync('dist/a.js', 'a');\n"
                    "fs.writeFileSync(process.env.npm_config_cache + '/blob', Buffer.alloc(6 << 20, 1));\n"
                    "fs.writeFileSync(process.env.UV_CACHE_DIR + '/blob', Buffer.alloc(6 << 20, 1));\n")
        assert final(_build(s, build_js))["action"] == "done"
        cache = s.data_dir / "cache"
        npm_blobs = list(cache.glob("npm/*/blob"))
        uv_blobs = list(cache.glob("uv/*/blob"))
        other = list(cache.glob("uv/*/other"))
    assert len(npm_blobs) == 1, "the recently used npm cache was evicted"
    assert uv_blobs == [], "the least recently used cache was not evicted"
    assert len(other) == 1, "another token's cache (under its quota) was evicted"
    assert sum(_tree_bytes(p) for p in cache.glob("*/*") if p.is_dir()) < 10 * MiB + 3 * MiB + MiB


def test_twenty_thousand_unsafe_names_give_one_summary_line(server):
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist'); fs.writeFileSync('dist/app.js', 'ok');\n"
                "for (let i = 0; i < 20000; i++) fs.writeFileSync(`dist/bad$name;${i}`, '');\n")
    msgs = _build(server, build_js)
    done = final(msgs)
    assert done["action"] == "done", done
    assert [a["name"] for a in done["payload"]["artifacts"]] == ["app.js"]
    skipped = [line for line in logs(msgs) if "skipped" in line]
    assert len(skipped) == 1, f"{len(skipped)} lines about skipped files"
    assert "skipped 20,000 file(s)" in skipped[0] and "e.g. bad$name;" in skipped[0], skipped[0]
    assert len(skipped[0]) < 1000


# -- part 8: build uids -------------------------------------------------------------------------
UID_JS = ("const fs = require('fs'); fs.mkdirSync('dist'); fs.writeFileSync('dist/a.js', 'a');\n"
          "console.log('build uid ' + process.getuid());\n")


def _uid_of(msgs: list[dict]) -> int:
    assert final(msgs)["action"] == "done", final(msgs)
    return int(next(line for line in logs(msgs) if line.startswith("build uid ")).split()[-1])


@pytest.mark.skipif(os.geteuid() != 0, reason="build uids are given out by a root server only")
def test_owners_get_distinct_uids_from_the_range_stable_across_restarts_until_it_runs_out(tmp_path):
    tokens = (TOKEN, OTHER_TOKEN, THIRD_TOKEN)
    data = tmp_path / "data"
    with ServerProc(data, "--build-uid-range", "2100000-2100001", tokens=tokens) as s:
        first, second = _uid_of(_build(s, UID_JS, TOKEN)), _uid_of(_build(s, UID_JS, OTHER_TOKEN))
    assert {first, second} == {2100000, 2100001}
    record = json.loads((data / "build-uids.json").read_text())
    assert sorted(record.values()) == [2100000, 2100001]
    assert not any(t in json.dumps(record) for t in tokens), "the record holds a token"
    with ServerProc(data, "--build-uid-range", "2100000-2100001", tokens=tokens) as s:
        assert _uid_of(_build(s, UID_JS, OTHER_TOKEN)) == second  # after a restart: the same uid
        assert _uid_of(_build(s, UID_JS, TOKEN)) == first
        done = final(_build(s, UID_JS, THIRD_TOKEN))
    assert done["action"] == "failed" and done["payload"]["step"] == "prepare", done
    assert "--build-uid-range 2100000-2100001" in done["payload"]["message"], done["payload"]["message"]


@needs_redis
def test_redis_mode_owners_share_one_record_of_uids(redis_server):
    """Two processes' allocators (as on two workers) racing for the same owners over a real
    Redis: every owner gets one uid whichever process asks, no two owners share one, and a new
    owner past the range is refused with the flag named."""
    import redis.asyncio as aioredis

    async def scenario() -> tuple[list[int], list[int], str]:
        clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
        a, b = (uids.RedisUidAllocator(c, 3000000, 3000009) for c in clients)
        owners = [f"owner{i}" for i in range(10)]
        both = await asyncio.gather(*(x.allocate(o) for o in owners for x in (a, b)))
        got_a, got_b = both[0::2], both[1::2]
        try:
            await b.allocate("one too many")
            refused = ""
        except uids.UidRangeExhausted as exc:
            refused = str(exc)
        for c in clients:
            await c.aclose()
        return list(got_a), list(got_b), refused

    got_a, got_b, refused = asyncio.run(scenario())
    assert got_a == got_b
    assert sorted(got_a) == list(range(3000000, 3000010))
    assert "--build-uid-range 3000000-3000009" in refused


@needs_redis
@pytest.mark.skipif(os.geteuid() != 0, reason="build uids are given out by a root server only")
def test_redis_mode_builds_run_as_the_uid_recorded_in_redis(redis_server, tmp_path):
    cluster = Cluster(tmp_path / "cluster", redis_server, extra=("--build-uid-range", "3100000-3100009"))
    try:
        gateway = cluster.add("gateway")
        cluster.add("worker")
        first = _uid_of(_build(gateway, UID_JS, TOKEN))
        second = _uid_of(_build(gateway, UID_JS, OTHER_TOKEN))
        recorded = {int(v) for v in redis_server.client().hvals(uids.REDIS_OWNERS)}
    finally:
        cluster.stop()
    assert first != second and {first, second} == recorded <= set(range(3100000, 3100010))


# -- part 8: the client's downloads -------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(server: ServerProc) -> dict:
    """A 3 MiB artifact on the real server."""
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                "fs.writeFileSync('dist/three.bin', Buffer.alloc(3 << 20, 5));\n")
    done = final(_build(server, build_js))
    assert done["action"] == "done", done
    return done["payload"]["artifacts"][0]


def test_the_client_downloads_an_artifact_from_its_server_streamed_under_the_cap(server, artifact, tmp_path):
    dest = tmp_path / "three.bin"
    assert client_http.download(artifact["url"], dest, server=server.url) == 3 * MiB
    assert dest.stat().st_size == 3 * MiB


def test_the_client_caps_a_too_large_download(server, artifact, tmp_path):
    dest = tmp_path / "three.bin"
    with pytest.raises(PublishError, match="larger than 1048576 bytes"):
        client_http.download(artifact["url"], dest, server=server.url, max_bytes=MiB)
    assert list(tmp_path.iterdir()) == [], "a partial download was left behind"


def test_the_client_refuses_artifact_urls_off_its_server(server, artifact, tmp_path):
    """The URLs a hostile server would send in its ``done`` message (the real server here only
    supplies the real artifact the foreign URLs point at): a local file, another port, another
    host name for the same address. publish's delivery to a directory target refuses them all."""
    from flow_kit_cloudbuild.client import publish

    port = server.port
    hostile = ["file:///etc/passwd", f"http://127.0.0.1:{port + 1}/artifacts/x",
               artifact["url"].replace("127.0.0.1", "localhost"), "ftp://127.0.0.1/x",
               artifact["url"].replace("http://", "https://")]
    for url in hostile:
        task = {"target": server.url, "artifacts": [{"name": "passwd", "url": url}]}
        with pytest.raises(PublishError, match="not on that server"):
            publish._deliver(_Quiet(), [{"kind": "directory", "url": str(tmp_path / "out")}], task)
    assert list((tmp_path / "out").iterdir()) == []


class _Quiet:
    def notice(self, text: str) -> None:
        pass


@contextlib.contextmanager
def _hostile_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A hostile build server's HTTP side (a fake one: only a fake server answers this way)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_client_follows_no_redirect_off_its_server_and_caps_an_endless_body(server, artifact, tmp_path):
    """A fake hostile server: one route redirects to the real server (another port: another
    server), one streams bytes without end and without a Content-Length."""
    target = artifact["url"]

    class Hostile(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(b"\0" * 65536)

    with _hostile_server(Hostile) as base:
        with pytest.raises(PublishError, match="redirected an artifact download"):
            client_http.download(base + "/redirect", tmp_path / "r.bin", server=base)
        with pytest.raises(PublishError, match="larger than"):
            client_http.download(base + "/endless", tmp_path / "e.bin", server=base, max_bytes=4 * MiB)
    assert list(tmp_path.iterdir()) == []
