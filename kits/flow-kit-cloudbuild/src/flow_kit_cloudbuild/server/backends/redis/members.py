"""Redis mode: which processes are up, whether they see one shared dir, and tasks no worker runs.

Keys (all under ``flowcb:``; times are Redis's clock, in ms, so hosts need not agree on theirs):

``members``    hash  process id -> JSON {role, host, pid, sharedDir, probe, nonce}
``alive``      zset  process id -> when its registration expires (refreshed every beat)
``workers``    zset  process id -> the same, only for processes that run builds
``noworker``   hash  task id -> when the task fails if still no worker runs it

**Shared-dir probe.** Uploads are written by gateways and read by workers, artifacts the other
way round, each under its own ``--shared-dir``; two processes that do not see one directory
accept an upload and then fail the build. So each process writes a probe file with a random
nonce into ``<shared-dir>/.flowcb-probes/``, registers the file's name and nonce, and looks
for the probe files of every other live process in *its own* shared dir. The process that
starts later does the check (the earlier ones are registered by then), whatever the roles; one
that fails it leaves and exits non-zero before it listens. With ``--store s3://...`` uploads and
artifacts are in the bucket and no directory is shared: there is no probe, only the check that
every process names the same ``--store``.

**No worker alive.** Every process that runs builds beats into ``workers``. Each gateway looks
every second (at most) whether any worker's registration is current; when none is, every task
waiting in the job queue (unread or held by a dead worker) is told so once, and fails after
``queue-timeout`` — both decided in one Lua script per task, so of several gateways exactly one
sends the notice and one fails the task. When a worker is back the clocks start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.backends.redis.queue import GROUP, PARKED, STREAM
from flow_kit_cloudbuild.server.backends.redis.stopping import stop_tasks
from flow_kit_cloudbuild.server.backends.redis.store import RETENTION, key
from flow_kit_cloudbuild.server.errors import ServerConfigError

log = logging.getLogger("flow_kit_cloudbuild.server")

MEMBERS, ALIVE, WORKERS, NOWORKER = "flowcb:members", "flowcb:alive", "flowcb:workers", "flowcb:noworker"
PROBES = ".flowcb-probes"
PROBE_RE = re.compile(r"^[0-9a-f]{16}\.probe$")
START_TTL = 30.0        # seconds a registration made before listening lasts until the first beat
SWEEP_AGE = 3600.0      # probe files of processes gone for this long are removed
SCAN_LIMIT = 1000       # queued and held jobs looked at per round
CLOSED = "closed"       # value of a task's cancel key when a gateway failed it (the worker stops quietly)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# register (or refresh) one process; returns the other live processes as id, info, id, info...
_BEAT = _NOW + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1]) end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 3600000)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 3600000)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  if id ~= ARGV[1] then
    local info = redis.call('HGET', KEYS[1], id)
    if info then
      table.insert(out, id)
      table.insert(out, info)
    end
  end
end
return out
"""

# live workers; when there are any, every task's no-worker clock starts again
_WORKERS_UP = _NOW + """
local n = redis.call('ZCOUNT', KEYS[1], now, '+inf')
if n > 0 then redis.call('DEL', KEYS[2]) end
return n
"""

# one task while no worker is up: {0} nothing to do, {1, step, running} tell the client,
# {2, step, running} it failed just now (the caller sends the final message)
_NO_WORKER = _NOW + """
if redis.call('ZCOUNT', KEYS[1], now, '+inf') > 0 then return {0} end
local state = redis.call('HGET', KEYS[3], 'state')
if not state then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {0}
end
for i = 7, #ARGV do
  if state == ARGV[i] then
    redis.call('HDEL', KEYS[2], ARGV[1])
    return {0}
  end
end
local step = redis.call('HGET', KEYS[3], 'step') or '"queued"'
local running = redis.call('HEXISTS', KEYS[3], 'runner')
local deadline = redis.call('HGET', KEYS[2], ARGV[1])
if not deadline then
  redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
  return {1, step, running}
end
if now < tonumber(deadline) then return {0} end
redis.call('HSET', KEYS[3], 'state', ARGV[3], 'finishedAt', tostring(now), 'error', ARGV[4])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[4], ARGV[6], 'EX', tonumber(ARGV[5]))
return {2, step, running}
"""


@dataclass
class Member:
    """This process as the others see it."""

    id: str
    role: str
    runs_builds: bool
    shared_dir: Path
    slots: int = 0           # builds this process runs at once (the default per-token limit counts them)
    store: str = ""          # --store s3://...: artifacts there; every process must name the same one
    probe: str = field(default_factory=lambda: secrets.token_hex(8) + ".probe")
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    written: bool = False

    @property
    def probe_path(self) -> Path:
        return self.shared_dir / PROBES / self.probe

    def info(self) -> str:
        return json.dumps({"role": self.role, "host": socket.gethostname(), "pid": os.getpid(),
                           "sharedDir": str(self.shared_dir), "probe": self.probe, "nonce": self.nonce,
                           "slots": self.slots, "store": self.store})

    def write_probe(self) -> None:
        if self.written or self.store:  # with --store no directory is shared: nothing to probe
            return
        try:
            self.probe_path.parent.mkdir(parents=True, exist_ok=True)
            self.probe_path.write_text(self.nonce, encoding="utf-8")
        except OSError as exc:
            raise ServerConfigError(f"cannot write to the shared dir {self.shared_dir}: {exc.strerror}",
                                    "Pass a --shared-dir this process can write") from None
        self.written = True

    def remove_probe(self) -> None:
        with contextlib.suppress(OSError):
            self.probe_path.unlink()

    def beat_args(self, ttl: float, as_worker: bool) -> list[Any]:
        return [self.id, self.info(), int(ttl * 1000), "1" if as_worker else "0"]


def _sees(mine: Path, other: dict[str, Any]) -> bool:
    """Whether ``other``'s probe file is in this process's shared dir, with its nonce."""
    name = str(other.get("probe", ""))
    if not PROBE_RE.match(name):
        return False
    try:
        with open(mine / PROBES / name, encoding="utf-8") as fh:
            return fh.read(200) == other.get("nonce")
    except (OSError, UnicodeDecodeError):
        return False


def _sweep(member: Member, live_probes: set[str]) -> None:
    """Remove probe files of processes that are long gone (they crashed, or were killed)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(member.shared_dir / PROBES):
            if entry.name in live_probes or entry.name == member.probe or not PROBE_RE.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > SWEEP_AGE:
                    os.unlink(entry.path)


def join(url: str, member: Member) -> None:
    """Register before listening and check that every live process sees this shared dir.

    Raises ``ServerConfigError`` (after leaving again) when one does not; the caller exits.
    """
    import redis

    member.write_probe()
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5, decode_responses=True)
    try:
        raw = client.register_script(_BEAT)(keys=[MEMBERS, ALIVE, WORKERS],
                                            args=member.beat_args(START_TTL, as_worker=False))
        others: list[tuple[str, dict[str, Any]]] = []
        for i in range(0, len(raw) - 1, 2):
            with contextlib.suppress(ValueError, TypeError):
                others.append((str(raw[i]), json.loads(raw[i + 1])))
        for other_id, info in others:
            theirs = str(info.get("store") or "")
            if theirs != member.store:  # one object store, or one shared dir, for every process
                _leave_sync(client, member)
                raise ServerConfigError(
                    f"this {member.role} keeps uploads and artifacts in {member.store or 'its shared dir'} but "
                    f"{info.get('role', 'process')} {other_id} in {theirs or 'its shared dir'}",
                    "Pass the same --store (or none, and the same --shared-dir) to every gateway and worker")
            if not member.store and not _sees(member.shared_dir, info):
                _leave_sync(client, member)
                raise ServerConfigError(
                    f"this {member.role}'s shared dir {member.shared_dir} is not the directory that "
                    f"{info.get('role', 'process')} {other_id} uses ({info.get('sharedDir', '?')}): "
                    f"its probe file {PROBES}/{info.get('probe', '?')} is not here",
                    "Pass the same --shared-dir (one directory every process sees, e.g. an NFS mount) "
                    "to every gateway and worker")
        if not member.store:
            _sweep(member, {str(info.get("probe")) for _, info in others})
    finally:
        client.close()


def _leave_sync(client: Any, member: Member) -> None:
    with contextlib.suppress(Exception):
        pipe = client.pipeline(transaction=False)
        pipe.hdel(MEMBERS, member.id)
        pipe.zrem(ALIVE, member.id)
        pipe.zrem(WORKERS, member.id)
        pipe.execute()
    member.remove_probe()


class Presence:
    """Keeps this process registered (and, for a worker, counted as one) while it runs."""

    def __init__(self, redis: Any, member: Member, heartbeat_timeout: float) -> None:
        self.redis = redis
        self.member = member
        self.ttl = heartbeat_timeout
        self.every = max(0.2, min(heartbeat_timeout / 4, 5.0))
        self._beat = redis.register_script(_BEAT)
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        await self._beat(keys=[MEMBERS, ALIVE, WORKERS],
                         args=self.member.beat_args(self.ttl, self.member.runs_builds))

    async def start(self) -> None:
        await asyncio.to_thread(self.member.write_probe)
        try:  # registered before /healthz answers, so no gateway thinks no worker is up
            await self.beat()
        except Exception as exc:  # noqa: BLE001 - Redis away at start: the loop retries
            log.warning("cannot register this process in Redis: %s; retrying", exc)
        self._task = asyncio.create_task(_every(self.every, self.beat, "presence beat"), name="cloudbuild-presence")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(MEMBERS, self.member.id)
                pipe.zrem(ALIVE, self.member.id)
                pipe.zrem(WORKERS, self.member.id)
                await pipe.execute()
        self.member.remove_probe()


async def _every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` every ``seconds`` until cancelled. A failed round (Redis unreachable) is
    logged and the next one tries again: these loops must outlive an outage."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the docstring: the next round retries
            log.debug("%s failed: %s", what, exc)


START_WORKER = "start a worker: flow-cloudbuild-server --redis-url <this deployment's Redis URL> --role worker"


class NoWorkerWatch:
    """A gateway's look, every second, for tasks that wait while no worker is up."""

    def __init__(self, service: Any, redis: Any, *, heartbeat_timeout: float, queue_timeout: float) -> None:
        self.service = service
        self.redis = redis
        self.heartbeat_timeout = heartbeat_timeout
        self.queue_timeout = queue_timeout
        self.every = max(0.2, min(1.0, heartbeat_timeout / 4))
        self._workers_up = redis.register_script(_WORKERS_UP)
        self._no_worker = redis.register_script(_NO_WORKER)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(_every(self.every, self.check, "no-worker watch"),
                                         name="cloudbuild-no-worker-watch")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        self._task = None

    async def check(self) -> None:
        if int(await self._workers_up(keys=[WORKERS, NOWORKER])) > 0:
            return
        for task_id in await self._waiting_tasks():
            await self._look_at(task_id)

    async def _waiting_tasks(self) -> list[str]:
        """Tasks of the jobs no worker has read yet, and of those held by (dead) workers."""
        from redis.exceptions import ResponseError

        try:
            groups = await self.redis.xinfo_groups(STREAM)
        except ResponseError:  # no stream: nothing was ever queued
            return []
        last, grouped = "0-0", False
        for g in groups:
            if g.get("name") == GROUP:
                last = str(g.get("last-delivered-id") or "0-0")
                grouped = True
        entries = list(await self.redis.xrange(STREAM, min=f"({last}", max="+", count=SCAN_LIMIT))
        if grouped:
            held = await self.redis.xpending_range(STREAM, GROUP, min="-", max="+", count=SCAN_LIMIT)
            if held:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for h in held:
                        pipe.xrange(STREAM, min=h["message_id"], max=h["message_id"], count=1)
                    for got in await pipe.execute():
                        entries.extend(got)
        seen: dict[str, None] = {}
        for _entry_id, fields in entries:
            task_id = str(fields.get("task") or "")
            if task_id:
                seen[task_id] = None
        for parked in await self.redis.zrange(PARKED, 0, SCAN_LIMIT - 1):  # waiting for their token's slot
            seen[str(parked).split(" ", 1)[0]] = None
        return list(seen)

    async def _look_at(self, task_id: str) -> None:
        try:
            keys = [WORKERS, NOWORKER, key(task_id), key(task_id, "cancel")]
        except KeyError:
            return
        timeout_ms = int(self.queue_timeout * 1000)
        error = (f"no worker ran this task: none was running for {self.queue_timeout:g} s (--queue-timeout); "
                 f"{START_WORKER}, then publish again")
        got = await self._no_worker(keys=keys, args=[
            task_id, timeout_ms, json.dumps(protocol.STATE_FAILED), json.dumps(error), RETENTION,
            self.service.store.cancel_value(task_id, CLOSED),  # signed: workers ignore a flag that is not
            *map(json.dumps, protocol.FINAL)])
        code = int(got[0])
        if code == 0:
            return
        try:
            step = json.loads(got[1])
        except ValueError:
            step = str(got[1])
        running = int(got[2]) == 1 and step != "queued"
        if code == 1:
            who = (f"the worker running this task stopped responding during {step} and no other worker "
                   "is running" if running else "no worker is running")
            await self.service.notice(
                task_id, step,
                f"{who} (none sent a heartbeat in the last {self.heartbeat_timeout:g} s); this task waits "
                f"up to {self.queue_timeout:g} s for one (--queue-timeout), then fails; {START_WORKER}")
            return
        with contextlib.suppress(Exception):  # its sources go, as when a worker ends a task
            await self.service.drop_upload(await self.service.store.get(task_id))
        await self.service.emit(task_id, protocol.STATE_FAILED, error, step=step)
        await self.service.close_task(task_id)
