"""Bounds against hostile input on the real flow-cloudbuild-server (issue 10): a tar header that
declares a huge name, repeated attaches of a long log, IPv6 repository URLs, and artifact names
that need percent-encoding."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from cloudbuild_server_support import (
    GIT_ENV,
    TOKEN,
    Client,
    ServerProc,
    commit_tree,
    final,
    http_get,
    http_request,
    logs,
    new_repo,
    npm_project,
    protocol,
)

from flow_kit_cloudbuild.server import policy  # noqa: E402
from flow_kit_cloudbuild.server.config import ServerConfig  # noqa: E402
from flow_kit_cloudbuild.server.errors import RequestError, StepFailed  # noqa: E402
from flow_kit_cloudbuild.server.tasks.sources import MAX_NAME_BYTES, MAX_PAX_BYTES, unpack_archive  # noqa: E402

MB = 1024 * 1024


# -- measuring the server process ---------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) so it measures from now; False where Linux can't."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_growth_mb(pid: int, before_kb: int, peak_reset: bool) -> float:
    now = _status_kb(pid, "VmHWM" if peak_reset else "VmRSS")
    return (now - before_kb) / 1024


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _wait_until_idle(pid: int, timeout: float = 120) -> None:
    """Wait until the process used under 50 ms of CPU in each of two half seconds in a row (it has
    done its work; two, so that a moment without the CPU on a busy machine is not taken for it)."""
    deadline = time.monotonic() + timeout
    last, quiet = _cpu_seconds(pid), 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.05 else 0
        if quiet == 2:
            return
        last = now
    raise AssertionError(f"process {pid} was still busy after {timeout}s")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _upload(server: ServerProc, body: bytes) -> str:
    status, raw = http_request("POST", server.url + "/api/uploads", body=body, token=TOKEN)
    assert status == 201, raw[:200]
    return json.loads(raw)["uploadId"]


# -- 1. tar header bombs ------------------------------------------------------------------------
def _long_name_bomb(declared: int = 256 * MB) -> bytes:
    """A .tar.gz whose GNU long-name header ('L') declares ``declared`` bytes of name: one byte
    repeated (no NUL, so all of it is the name), so it compresses to a few hundred KB."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = declared
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        gz.write(header.tobuf(tarfile.GNU_FORMAT))
        filler, left = b"a" * MB, declared
        while left > 0:
            gz.write(filler[:min(left, MB)])
            left -= MB
        gz.write(bytes(-declared % tarfile.BLOCKSIZE))
        gz.write(tarfile.TarInfo("package.json").tobuf(tarfile.GNU_FORMAT))
        gz.write(bytes(2 * tarfile.BLOCKSIZE))
    return buf.getvalue()


def test_a_tar_long_name_bomb_fails_in_download_with_a_short_message(tmp_path):
    body = _long_name_bomb()
    assert len(body) < 2 * MB
    with ServerProc(tmp_path / "d", config={"checks": [], "freeze-windows": []}) as s, Client(s.url) as c:
        upload_id = _upload(s, body)
        pid = s.proc.pid
        peak_reset = _reset_peak(pid)
        before = _status_kb(pid, "VmRSS")
        ack = c.publish(name="demo", version="1.0.0", source="upload", uploadId=upload_id,
                        buildCmd=["npm", "run", "build"])
        msgs = c.wait(ack["taskId"], timeout=120)
        growth = _peak_growth_mb(pid, before, peak_reset)
        assert growth < 50, f"server RSS grew by {growth:.0f} MB"
        assert max(len(json.dumps(m)) for m in msgs) < 2000
        assert _dir_bytes(s.data_dir / "tasks" / ack["taskId"]) < 64 * 1024
        end = final(msgs)
        assert end["action"] == "failed" and end["payload"]["step"] == "download", end
        message = end["payload"]["message"]
        assert "4096" in message and "shorter paths" in message and "\n" not in message, message
        assert len(message) < 300 and message.count("a") < 120, message[:400]


def _targz(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tf:
        for info, data in entries:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(tmp_path: Path, body: bytes) -> int:
    archive = tmp_path / "up.tar.gz"
    archive.write_bytes(body)
    return unpack_archive(archive, tmp_path / "out", max_bytes=10 * MB, max_files=1000)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-longname", "pax-path"])
def test_a_5_kib_name_is_refused_quoting_only_a_prefix(tmp_path, fmt):
    name = "d/" + "n" * (5 * 1024)
    with pytest.raises(StepFailed) as err:
        _unpack(tmp_path, _targz([(tarfile.TarInfo(name), b"x")], fmt))
    message = err.value.message
    assert str(MAX_NAME_BYTES) in message and "shorter paths" in message and len(message) < 250, message
    assert not (tmp_path / "out" / "d").exists()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-longname", "pax-path"])
def test_a_long_name_under_the_bound_unpacks(tmp_path, fmt):
    parts = ["p" * 200] * 19  # 3,819 bytes: over ustar's 256, under the bound
    name = "/".join(parts) + "/file.txt"
    assert 256 < len(name) < MAX_NAME_BYTES
    assert _unpack(tmp_path, _targz([(tarfile.TarInfo(name), b"kept")], fmt)) == 1
    assert (tmp_path / "out" / name).read_bytes() == b"kept"


def test_an_oversize_pax_header_is_refused_before_it_is_read(tmp_path):
    info = tarfile.TarInfo("a.txt")
    info.pax_headers = {"comment": "c" * (MAX_PAX_BYTES + 1000)}
    with pytest.raises(StepFailed) as err:
        _unpack(tmp_path, _targz([(info, b"x")]))
    assert "pax header" in err.value.message and str(MAX_PAX_BYTES) in err.value.message
    assert len(err.value.message) < 250
    # a pax header under the bound is fine
    info = tarfile.TarInfo("a.txt")
    info.pax_headers = {"comment": "c" * 1000}
    assert _unpack(tmp_path, _targz([(info, b"x")])) == 1


def test_a_chain_of_long_name_headers_is_refused(tmp_path):
    blocks = b""
    for i in range(50):  # 50 'L' headers in front of one member: tarfile would recurse per header
        header = tarfile.TarInfo("././@LongLink")
        header.type = tarfile.GNUTYPE_LONGNAME
        name = f"name{i}".encode() + b"\0"
        header.size = len(name)
        blocks += header.tobuf(tarfile.GNU_FORMAT) + name + bytes(-len(name) % tarfile.BLOCKSIZE)
    blocks += tarfile.TarInfo("x").tobuf(tarfile.GNU_FORMAT) + bytes(2 * tarfile.BLOCKSIZE)
    with pytest.raises(StepFailed) as err:
        _unpack(tmp_path, gzip.compress(blocks))
    assert "extended headers" in err.value.message


# -- 1b. an upload feeds one task ----------------------------------------------------------------
def test_a_reused_upload_is_refused_naming_its_task_and_an_unknown_one_is_not_found(tmp_path):
    """Issue 22 item 5: an upload whose task has ended (its sources deleted) is ``refused``, not
    ``not-found``: the message names the task that used it and says to upload again. An id that
    never was an upload stays ``not-found``; another token's use of it stays ``forbidden``."""
    from cloudbuild_server_support import OTHER_TOKEN, tar_gz

    project = tar_gz({k: v.encode() for k, v in npm_project().items()})
    payload = {"name": "demo", "version": "1.0.0", "source": "upload", "buildCmd": ["npm", "run", "build"]}
    with ServerProc(tmp_path / "d") as s, Client(s.url) as c, Client(s.url, OTHER_TOKEN) as other:
        upload_id = _upload(s, project)
        task_id = c.publish(**payload, uploadId=upload_id)["taskId"]
        running = c.publish(**payload, uploadId=upload_id)  # while its task runs
        assert final(c.wait(task_id, timeout=120))["action"] == "done"
        assert not (s.data_dir / "uploads" / f"{upload_id}.tar.gz").exists()  # the sources went
        after = c.publish(**payload, uploadId=upload_id)  # after its task ended
        for ack in (running, after):
            assert ack["ok"] is False and ack["error"]["code"] == protocol.ERROR_REFUSED, ack
            message = ack["error"]["message"]
            assert task_id in message and upload_id in message, message
            assert "one task" in message and "upload the source again" in message, message
        unknown = c.publish(**payload, uploadId="0" * 24)
        assert unknown["error"]["code"] == protocol.ERROR_NOT_FOUND, unknown
        assert "no upload" in unknown["error"]["message"]
        foreign = other.publish(**payload, uploadId=upload_id)
        assert foreign["error"]["code"] == protocol.ERROR_FORBIDDEN, foreign
        assert task_id not in foreign["error"]["message"]  # another token learns no task id


def test_the_sweep_keeps_a_used_uploads_record_as_long_as_its_task(tmp_path):
    """What says which task used an upload (.json, .task) outlives the sources (.tar.gz) and goes
    with the task (retention); a running task's upload is left alone."""
    import asyncio
    from types import SimpleNamespace

    from flow_kit_cloudbuild.server.storage.objects import LocalObjectStore
    from flow_kit_cloudbuild.server.tasks import housekeeping

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    ended, gone, running = "a" * 24, "b" * 24, "c" * 24
    records = {"1" * 24: {"state": "done"}, "3" * 24: {"state": "build"}}
    old = time.time() - 7200
    for upload_id, task_id in ((ended, "1" * 24), (gone, "2" * 24), (running, "3" * 24)):
        for suffix, text in ((".tar.gz", "x"), (".json", "{}"), (".task", task_id)):
            (uploads / f"{upload_id}{suffix}").write_text(text)
            os.utime(uploads / f"{upload_id}{suffix}", (old, old))

    async def get(task_id):
        return records.get(task_id)

    objects = LocalObjectStore(uploads)
    service = SimpleNamespace(paths=SimpleNamespace(uploads=uploads, upload_store=objects),
                              store=SimpleNamespace(get=get), cfg=SimpleNamespace(upload_retention_hours=1.0))
    assert asyncio.run(housekeeping._sweep_uploads(service, time.time())) == 2
    assert sorted(p.name for p in uploads.iterdir()) == sorted(
        [f"{ended}.json", f"{ended}.task"] + [f"{running}{s}" for s in (".json", ".tar.gz", ".task")])
    assert "1" * 24 in str(housekeeping.used_upload(ended, asyncio.run(housekeeping.claimant(objects, ended))))


# -- 2. bounded replay --------------------------------------------------------------------------
def attach_flood_growth_mb(url: str, pid: int, task_id: str, attaches: int = 40) -> float:
    """Peak RSS growth (MB) of the server ``pid`` while one socket sends ``attaches`` attach
    events for the whole log of ``task_id`` and reads nothing."""
    _wait_until_idle(pid)
    peak_reset = _reset_peak(pid)
    before = _status_kb(pid, "VmRSS")
    raw = RawSocket(url)
    try:
        for _ in range(attaches):
            raw.emit("attach", {"taskId": task_id, "afterSeq": 0})
        _wait_until_idle(pid)  # every attach handled; what is left waits for the socket
        return _peak_growth_mb(pid, before, peak_reset)
    finally:
        raw.close()


class RawSocket:
    """A Socket.IO client on a bare websocket that reads only when told to (websocket-client)."""

    def __init__(self, url: str, token: str = TOKEN) -> None:
        import websocket

        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.ws = websocket.create_connection(
            ws_url, timeout=15, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        assert self.ws.recv().startswith("0")  # engine.io open
        self.ws.send("40" + json.dumps({"token": token}))
        while True:
            packet = self.ws.recv()
            if packet == "2":
                self.ws.send("3")
            elif packet.startswith("40"):
                break
            else:
                raise AssertionError(f"unexpected packet {packet[:100]!r}")
        self.next_id = 1

    def emit(self, event: str, data: dict) -> None:
        self.ws.send(f"42{self.next_id}" + json.dumps([event, data]))
        self.next_id += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)


def test_repeated_attaches_of_a_long_log_are_paced_and_do_not_multiply(tmp_path, git_daemon):
    lines = 280_000  # about 18 MB of log, under the default 20 MB cap
    build_js = ("const fs = require('fs');\n"
                f"for (let i = 0; i < {lines}; i++) console.log('line ' + i + ' ' + 'y'.repeat(50));\n"
                "fs.mkdirSync('dist'); fs.writeFileSync('dist/a', 'a');\n")
    url = new_repo(git_daemon, npm_project(build_js=build_js))
    with ServerProc(tmp_path / "d", config={"checks": [], "freeze-windows": []}) as s:
        with Client(s.url) as c:
            ack = c.publish(name="demo", version="1.0.0", source="git", repo=url, ref="main",
                            buildCmd=["npm", "run", "build"], timeout=300)
            full = c.wait(ack["taskId"], timeout=300)
        task_id = ack["taskId"]
        assert final(full)["action"] == "done", final(full)
        # the whole log is stored: every line's text ("line N " and 50 y's) is at least 57 bytes;
        # how many lines share a message (and so the JSON around them) depends on timing
        assert (s.data_dir / "tasks" / task_id / "messages.jsonl").stat().st_size > lines * 57
        growth = attach_flood_growth_mb(s.url, s.proc.pid, task_id)
        assert growth < 100, f"server RSS grew by {growth:.0f} MB"
        with Client(s.url) as late:  # a normal client still gets the whole log, once, in order
            assert late.call("attach", {"taskId": task_id, "afterSeq": 0})["ok"]
            replayed = late.wait(task_id, timeout=120)
            assert not late.duplicates
        assert [m["meta"]["seq"] for m in replayed] == list(range(1, len(full) + 1))
        assert replayed == full
        assert [x for x in logs(replayed) if x.startswith("line ")][-1].startswith(f"line {lines - 1} ")


# -- 3. IPv6 repository URLs --------------------------------------------------------------------
def _cfg(**kw) -> ServerConfig:
    return ServerConfig(data_dir=Path("/nonexistent"), **kw)


@pytest.mark.parametrize("url", ["git://[::1]:9418/repo", "https://[2001:db8::1]/r.git",
                                 "git://[::ffff:127.0.0.1]/r", "https://[::1]/r.git"])
def test_bracketed_ipv6_hosts_are_allowed(url):
    assert policy.check_repo_url(url, _cfg(allowed_protocols=("https", "git"))) == url


@pytest.mark.parametrize("url", ["git://[::1/repo", "git://[fe80::1%25eth0]/r", "git://[::g]/r",
                                 "git://[v1.x]/r", "git://[]/r", "file://[::1]/etc"])
def test_malformed_ipv6_hosts_are_refused(url):
    with pytest.raises(RequestError) as err:
        policy.check_repo_url(url, _cfg(allowed_protocols=("https", "git")))
    assert err.value.code in ("refused", "bad-request")


@pytest.mark.parametrize("pattern", ["[::1]", "::1", "0:0:0:0:0:0:0:1"])
def test_allowed_hosts_match_ipv6_in_any_spelling(pattern):
    cfg = _cfg(allowed_protocols=("git",), allowed_hosts=(pattern,))
    assert policy.check_repo_url("git://[::1]:9418/r", cfg)
    with pytest.raises(RequestError) as err:
        policy.check_repo_url("git://[::2]:9418/r", cfg)
    assert err.value.code == "refused" and "::2" in err.value.message
    with pytest.raises(RequestError):
        policy.check_repo_url("git://127.0.0.1:9418/r", cfg)


def _ipv6_loopback() -> str | None:
    """None if ::1 can be bound and connected to, else why not."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            s.listen()
            with socket.create_connection(s.getsockname()[:2], timeout=2):
                pass
    except OSError as exc:
        return f"IPv6 loopback ::1 is not usable here ({exc})"
    return None


@pytest.mark.skipif(_ipv6_loopback() is not None, reason=str(_ipv6_loopback()))
def test_a_git_daemon_on_ipv6_loopback_is_built_from(tmp_path):
    base = tmp_path / "git6"
    commit_tree(base / "repo", npm_project())
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={base}", "--listen=::1", f"--port={port}",
         "--reuseaddr", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **GIT_ENV})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("::1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "git daemon never listened on ::1"
                time.sleep(0.05)
        url = f"git://[::1]:{port}/repo"
        config = {"checks": [], "freeze-windows": [], "allowed-protocols": ["git"], "allowed-hosts": ["[::1]"]}
        with ServerProc(tmp_path / "d", config=config) as s, Client(s.url) as c:
            ack = c.publish(name="demo", version="1.0.0", source="git", repo=url, ref="main",
                            buildCmd=["npm", "run", "build"])
            assert ack["ok"], ack
            msgs = c.wait(ack["taskId"])
        assert final(msgs)["action"] == "done", final(msgs)
        assert any(line.startswith("checked out commit") for line in logs(msgs))
    finally:
        daemon.terminate()
        daemon.wait(10)


# -- 4. artifact URLs ---------------------------------------------------------------------------
def test_artifact_urls_in_the_done_message_are_percent_encoded(client, server, git_daemon):
    name = "my app #1.js"
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                f"fs.writeFileSync('dist/{name}', 'hash and space');\n")
    url = new_repo(git_daemon, npm_project(build_js=build_js))
    ack = client.publish(name="demo", version="1.0.0", source="git", repo=url, ref="main",
                         buildCmd=["npm", "run", "build"])
    done = final(client.wait(ack["taskId"]))
    assert done["action"] == "done", done
    [art] = done["payload"]["artifacts"]
    assert art["name"] == name
    assert art["url"] == done["payload"]["artifactUrl"] + quote(name) and " " not in art["url"]
    assert "#" not in art["url"]
    status, body = http_get(art["url"])
    assert status == 200 and body == b"hash and space"
    status, listing = http_get(done["payload"]["artifactUrl"])
    assert status == 200 and json.loads(listing)[0]["url"] == art["url"]
