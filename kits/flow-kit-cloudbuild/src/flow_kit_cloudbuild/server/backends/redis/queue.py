"""Job queue on a Redis stream with a consumer group: at-least-once delivery to workers.

The Redis implementation of ``queue.JobQueue``. Why a consumer group (and not a list, or a job
library): Redis itself keeps, per job, which worker holds it, since when (idle time) and how
often it was handed out (delivery count) — exactly the three facts that at-least-once delivery
needs — and ``XAUTOCLAIM`` hands a job whose holder went quiet to another worker atomically.
Nothing here is a protocol of our own; the whole state can be read with ``XPENDING``.

* ``put``: ``XADD flowcb:jobs * task <id>``.
* each of ``concurrency`` consumer loops first ``XAUTOCLAIM``s a job idle for longer than the
  heartbeat timeout (its worker died), going on where its last look stopped (one look scans at
  most ten pending jobs), else ``XREADGROUP``s a new one (blocking 1 s);
* while the handler runs, a heartbeat ``XCLAIM ... JUSTID``s the job to its own consumer every
  ``heartbeat/4`` s, which resets the idle time without counting a delivery — but only while the
  job is still ours (a Lua script checks the owner first, so a worker that paused never takes a
  job back from the one that took it over);
* ``XACK`` when the handler returned. A worker stopped with SIGTERM leaves its jobs unacked:
  another worker picks them up after the timeout.

**Builds per token.** A job carries its group (the hash of the token that submitted it). A token
runs at most ``max-builds-per-token`` builds at once across every worker: its running builds are
the members of ``flowcb:slots:<group>`` (a sorted set, task id -> when the slot expires, Redis's
clock). Taking a job adds its task atomically (Lua) if the set holds fewer than the limit, and
the heartbeat that keeps the job pushes the slot's expiry on; the slot is removed when the
handler returns, and a dead worker's slot expires with its heartbeat (its job's retry takes the
slot again under the same task id). A job whose token is at its limit is *parked*: acked and
deleted from the stream, and put in ``flowcb:parked`` (oldest first, with its attempts so far),
so the jobs behind it go first. Every consumer loop, before reading the stream, moves parked
jobs whose token has room back to the stream's end (reserving their slot), oldest first per
token. Without a configured limit it is every live worker's slots but one (at least 1), like
the embedded queue's ``concurrency - 1``.

**Signed entries.** With a ``signer`` (``--secret-file``, the same in every process), a job
carries ``sig``, the HMAC of its task id and group, made by the gateway that queued it (and kept
when it is parked and unparked). A consumer drops an entry without a valid signature (acks and
deletes it, logs why) instead of running it: whoever can write to Redis but has not the secret
cannot queue a build, nor move one to another token's slots.

The handler sees the job as ``current_job()`` (delivery count = attempt number; ``lost`` says
whether the job was taken over by another worker or vanished with Redis's data).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from flow_kit_cloudbuild.server.backends.redis.stopping import stop_tasks

log = logging.getLogger("flow_kit_cloudbuild.server")

STREAM = "flowcb:jobs"
GROUP = "workers"
SLOTS = "flowcb:slots:"          # + group: sorted set, task id -> when its slot expires (ms)
PARKED = "flowcb:parked"         # sorted set, "<task> <group> <attempts so far> <sig>" -> order
PARK_SEQ = "flowcb:parked:seq"   # the order of the next parked job
WORKERS, MEMBERS = "flowcb:workers", "flowcb:members"  # redis_members: the live workers' slots
RESERVE_FOR = 10                 # heartbeat timeouts a slot stays reserved for an unparked job
UNPARK_SCAN = 200                # parked jobs looked at per look
Handler = Callable[[str], Awaitable[None]]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# the limit: ARGV[LIMIT] when > 0, else every live worker's build slots but one (at least 1)
_LIMIT = """
local function limit_of(configured, workers, members)
  if configured > 0 then return configured end
  local total = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', workers, now, '+inf')) do
    local info = redis.call('HGET', members, id)
    if info then
      local ok, d = pcall(cjson.decode, info)
      if ok and type(d) == 'table' and tonumber(d['slots']) then total = total + tonumber(d['slots']) end
    end
  end
  return math.max(1, total - 1)
end
"""

# owner check + heartbeat: 1 = still ours (idle reset, slot kept), 0 = another consumer holds it, -1 = gone
_HEARTBEAT = _NOW + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return -1 end
if p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4]) end
return 1
"""

# take a build slot for a job just read: 1 = taken (or already its own), 0 = parked
# KEYS: slots, parked, park seq, stream, workers, members
# ARGV: task, limit (0: default), slot ttl ms, consumer group, entry id, parked member
_TAKE = _NOW + _LIMIT + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = limit_of(tonumber(ARGV[2]), KEYS[5], KEYS[6])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
redis.call('XACK', KEYS[4], ARGV[4], ARGV[5])
redis.call('XDEL', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[6])
return 0
"""

# back to the stream: parked jobs whose token has room, oldest first (a token's later jobs never
# overtake its earlier ones); their slot is reserved. Returns how many moved.
# KEYS: parked, stream, workers, members, then the slots key of each group in ARGV[4..]
# ARGV: limit (0: default), reserve ms, scan, then the groups (read from the parked set by the
# caller, so that every key the script touches is passed in KEYS; a job parked since, of a group
# not passed, waits for the next look, and so do its group's later jobs)
_UNPARK = _NOW + _LIMIT + """
local moved, full, slots_of = 0, {}, {}
for i = 4, #ARGV do slots_of[ARGV[i]] = KEYS[i + 1] end
local limit = limit_of(tonumber(ARGV[1]), KEYS[3], KEYS[4])
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  local task, group, prior, sig = string.match(m, '^(%S+) (%S*) (%d+) ?(%S*)$')
  if not task then
    redis.call('ZREM', KEYS[1], m)
  elseif not slots_of[group] then
    full[group] = true
  elseif not full[group] then
    local slots = slots_of[group]
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) < limit then
      redis.call('ZADD', slots, now + tonumber(ARGV[2]), task)
      redis.call('ZREM', KEYS[1], m)
      redis.call('XADD', KEYS[2], '*', 'task', task, 'group', group, 'prior', prior, 'sig', sig)
      moved = moved + 1
    else
      full[group] = true
    end
  end
end
return moved
"""


@dataclass
class Job:
    entry_id: str
    task_id: str
    deliveries: int
    group: str = ""                             # the submitting token's hash ("" = no limit)
    lost: str | None = None                     # None | "taken" | "gone"
    on_lost: Callable[[str], None] | None = field(default=None, repr=False)


_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar("cloudbuild_job", default=None)


def current_job() -> Job | None:
    """The job whose handler is running in this context (None outside a queue handler)."""
    return _current.get()


class RedisStreamQueue:
    def __init__(self, redis: Any, consumer: str, *, concurrency: int, heartbeat_timeout: float,
                 consume: bool = True, per_group: int | None = None, signer: Any = None) -> None:
        self.redis = redis
        self.signer = signer  # signing.Signer; None (tests of the queue alone): entries unsigned, unchecked
        self.consumer = consumer
        self.concurrency = max(1, concurrency)
        self.heartbeat_timeout = heartbeat_timeout
        self.consume = consume
        self.per_group = per_group if per_group and per_group > 0 else 0  # 0: the default rule
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._take = redis.register_script(_TAKE)
        self._unpark = redis.register_script(_UNPARK)
        self._loops: list[asyncio.Task[None]] = []
        self._pending = 0
        # Where the next XAUTOCLAIM goes on scanning the group's pending list: one call looks
        # at no more than COUNT x 10 entries (Redis's rule), so starting at 0-0 every time would
        # never reach a dead worker's job behind ten or more running ones.
        self._claim_from = "0-0"

    # -- JobQueue ------------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        if not self.consume:
            return
        with contextlib.suppress(Exception):  # Redis down at start: the loops retry
            await self._ensure_group()
        self._loops = [asyncio.create_task(self._loop(handler), name=f"cloudbuild-consumer-{i}")
                       for i in range(self.concurrency)]

    async def put(self, task_id: str, group: str = "") -> None:
        fields = {"task": task_id, "group": group}
        if self.signer is not None:  # what a worker checks before it runs the job (_next)
            fields["sig"] = self.signer.sign("job", task_id, group)
        await self.redis.xadd(STREAM, fields)

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        await stop_tasks(*loops)

    def pending(self) -> int:
        return self._pending

    async def waiting(self) -> int:
        """Jobs no worker has taken yet (the group's lag)."""
        with contextlib.suppress(Exception):
            for g in await self.redis.xinfo_groups(STREAM):
                if g.get("name") == GROUP:
                    self._pending = int(g.get("lag") or 0) + int(await self.redis.zcard(PARKED))
                    return self._pending
        return self._pending

    # -- consuming -------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _loop(self, handler: Handler) -> None:
        delay = 0.2
        while True:
            try:
                job = await self._next()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis unreachable or restarted without the group: retry
                if "NOGROUP" in str(exc):
                    with contextlib.suppress(Exception):
                        await self._ensure_group()
                else:
                    log.warning("job queue: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                continue
            if job is None:
                continue
            await self._handle(job, handler)

    async def _next(self) -> Job | None:
        idle_ms = int(self.heartbeat_timeout * 1000)
        claimed = await self.redis.xautoclaim(STREAM, GROUP, self.consumer, idle_ms,
                                              self._claim_from, count=1)
        self._claim_from = str(claimed[0]) if claimed else "0-0"  # "0-0": the scan went round
        entries = claimed[1] if claimed else []
        for deleted in (claimed[2] if len(claimed) > 2 else []):  # trimmed away: nothing to run
            await self.redis.xack(STREAM, GROUP, deleted)
        if not entries:
            await self._unpark_some()
            got = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=1, block=1000)
            entries = got[0][1] if got else []
        if not entries:
            return None
        entry_id, fields = entries[0]
        task_id, group, prior, sig = (fields.get(k) or "" for k in ("task", "group", "prior", "sig"))
        if self.signer is not None and not self.signer.check(sig, "job", task_id, group):
            log.warning("job queue: entry %s (task %s) has no valid signature (not queued by a server with "
                        "this --secret-file); dropped", entry_id, task_id[:40])
            await self.redis.xack(STREAM, GROUP, entry_id)
            await self.redis.xdel(STREAM, entry_id)
            return None
        info = await self.redis.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        deliveries = (int(info[0]["times_delivered"]) if info else 1) + (int(prior) if prior.isdigit() else 0)
        if group and task_id and not await self._take(
                keys=[SLOTS + group, PARKED, PARK_SEQ, STREAM, WORKERS, MEMBERS],
                args=[task_id, self.per_group, self._ttl_ms, GROUP, entry_id,
                      f"{task_id} {group} {deliveries - 1} {sig}".rstrip()]):
            return None  # its token is at its limit: parked until one of its builds ends
        return Job(entry_id, task_id, deliveries, group)

    async def _done(self, entry_id: str) -> None:
        """Ack a finished job and delete its entry, which is how ``flowcb:jobs`` stays trimmed.

        Not ``XADD MAXLEN``/``XTRIM``: those cut the oldest entries whatever their state, and the
        oldest may be a job no worker has read yet, or one a dead worker holds that XAUTOCLAIM
        must still hand to another (it would come back as deleted, and the build would be lost).
        Deleting exactly the entries that were acked keeps every job until it ran once; the
        stream holds the queued and running jobs only. (Only entries at or before the group's
        last-delivered id are deleted, so XINFO GROUPS' ``lag`` stays known.)
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, entry_id)
            pipe.xdel(STREAM, entry_id)
            await pipe.execute()

    async def _unpark_some(self) -> None:
        """Move parked jobs whose token has room back to the stream (``_UNPARK``)."""
        parked = await self.redis.zrange(PARKED, 0, UNPARK_SCAN - 1)
        if not parked:
            return
        groups = sorted({m.split(" ")[1] for m in parked if m.count(" ") >= 2})
        await self._unpark(keys=[PARKED, STREAM, WORKERS, MEMBERS, *(SLOTS + g for g in groups)],
                           args=[self.per_group, self._ttl_ms * RESERVE_FOR, UNPARK_SCAN, *groups])

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.heartbeat_timeout * 1000))

    async def _release(self, job: Job) -> None:
        """The job's build ended here: its token's slot is free (not when another worker took it over)."""
        if job.group and job.lost is None:
            with contextlib.suppress(Exception):
                await self.redis.zrem(SLOTS + job.group, job.task_id)

    async def _handle(self, job: Job, handler: Handler) -> None:
        token = _current.set(job)
        beat = asyncio.create_task(self._beat(job))
        try:
            await handler(job.task_id)
        except asyncio.CancelledError:
            raise  # stopping: the job stays unacked and is retried elsewhere (its slot with it)
        except Exception:
            log.exception("worker failed on task %s", job.task_id)
            await self._release(job)
        else:
            if job.lost is None:
                with contextlib.suppress(Exception):
                    await self._done(job.entry_id)
            await self._release(job)
        finally:
            await stop_tasks(beat)
            _current.reset(token)

    async def _beat(self, job: Job) -> None:
        every = max(0.2, self.heartbeat_timeout / 4)
        while True:
            await asyncio.sleep(every)
            try:
                state = int(await self._heartbeat(
                    keys=[STREAM, SLOTS + job.group],
                    args=[GROUP, self.consumer, job.entry_id, job.task_id if job.group else "", self._ttl_ms]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis unreachable (retry) or the group gone (below)
                if "NOGROUP" not in str(exc):
                    continue  # Redis unreachable: try again; the job's idle time keeps growing
                state = -1
            if state == 1:
                continue
            job.lost = "taken" if state == 0 else "gone"
            if job.on_lost is not None:
                job.on_lost(job.lost)
            return
