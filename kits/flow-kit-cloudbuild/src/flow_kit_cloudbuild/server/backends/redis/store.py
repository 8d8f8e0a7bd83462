"""Task store on Redis: records, per-task message streams, and the claim/cancel transitions.

The Redis implementation of ``store.TaskStore``, so that every gateway can serve any task and
any worker can run it. Keys (all under ``flowcb:``):

``task:<id>``          hash, one JSON-encoded value per record field
``task:<id>:seq``      the task's last seq (INCR)
``task:<id>:log``      stream of the task's messages; entry id ``<seq>-0``, field ``m`` = JSON
``task:<id>:cancel``   set when a client asked to cancel (the worker polls it)

A message is appended by one Lua script that INCRs the seq and XADDs the message under that
seq, so seqs are gapless and the stream is in seq order whoever appends (a gateway announcing
"queued", a worker running the build). The script takes a floor: a worker passes the last seq
it wrote, so that after Redis lost its data (a restart without persistence) the task's seqs go
on where the client left off instead of starting again at 1. When a task ends, ``close`` makes
its keys expire after ``retention`` seconds (None: never), a safety net behind the retention
sweep (housekeeping.py), which deletes them at ``retention-days`` and keeps prod releases.

**Signatures.** With a ``signer`` (every server process has one: ``--secret-file``), a record
carries ``sig``, the HMAC of its fields that never change (``SIGNED_FIELDS``: who made it and
what to build), and a cancel key's value carries its own (``<value>:<sig>``). A record or a
cancel flag without a valid signature reads as absent, so whoever can write to Redis but has
not the secret cannot make a worker build something, change whose task it is, or cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.tasks.store import CREATED, UPDATED, TaskListener, notify

PREFIX = "flowcb:"
LOG_MAXLEN = 1_000_000      # messages kept per task (approximate cap, XADD MAXLEN ~)
RETENTION = 7 * 24 * 3600   # seconds a finished task's record and log are kept (default)
PARTS = ("", "seq", "log", "cancel")
#: The fields of a task record that never change after ``create``: what its signature covers.
SIGNED_FIELDS = ("taskId", "tokenHash", "name", "version", "prod", "request", "createdAt")
log = logging.getLogger("flow_kit_cloudbuild.server")
APPEND_RETRY_FOR = 60.0     # seconds an append is retried while Redis is away (workers go on building)

_APPEND = """
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], tostring(seq) .. '-0', 'm', ARGV[2])
return seq
"""

# claim for a worker: 'missing' | 'final' | 'ok'
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local state = redis.call('HGET', KEYS[1], 'state')
for i = 2, #ARGV do
  if state == ARGV[i] then return 'final' end
end
redis.call('HSET', KEYS[1], 'runner', ARGV[1])
return 'ok'
"""

# a gateway cancels a task nobody runs yet: 1 if it did
_CANCEL_QUEUED = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'runner') == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def key(task_id: str, part: str = "") -> str:
    if not is_id(task_id):
        raise KeyError(task_id)
    return f"{PREFIX}task:{task_id}{':' + part if part else ''}"


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, separators=(",", ":")) for k, v in fields.items()}


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    """A record's hash as read (the client decodes replies: ``decode_responses=True``)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def message_of(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The message of a stream entry: field ``m``, its seq from the entry id ``<seq>-0``."""
    msg: dict[str, Any] = json.loads(fields["m"])  # every entry has one (append)
    msg["meta"]["seq"] = int(entry_id.split("-", 1)[0])
    return msg


class RedisTaskStore:
    """``TaskStore`` on Redis (see the module docstring for the keys)."""

    def __init__(self, redis: Any, retention: float | None = RETENTION, signer: Any = None,
                 listeners: Iterable[TaskListener] = ()) -> None:
        self.redis = redis
        self.listeners: list[TaskListener] = list(listeners)  # told of this process's writes (store.py)
        self.retention = retention
        self.signer = signer  # signing.Signer; None (tests of the store alone): nothing signed or checked
        self._warned: set[str] = set()  # what was reported as unsigned (once each: readers poll)
        self._append = redis.register_script(_APPEND)
        self._claim = redis.register_script(_CLAIM)
        self._cancel_queued = redis.register_script(_CANCEL_QUEUED)
        # what this process wrote last, so a Redis that lost its data is refilled (see docstring)
        self._written_seq: dict[str, int] = {}
        self._records: dict[str, dict[str, Any]] = {}

    async def create(self, record: dict[str, Any]) -> None:
        task_id = record["taskId"]
        body = {k: v for k, v in record.items() if k != "lastSeq"}
        if self.signer is not None:
            body["sig"] = self._record_sig(body)
        await self.redis.hset(key(task_id), mapping=_encode(body))
        await notify(self.listeners, CREATED, {**body, "lastSeq": 0})

    async def next_number(self, token_hash: str, project: str) -> int:
        """``flowcb:numbers:<token hash>``, a hash of project -> last build number (HINCRBY)."""
        return int(await self.redis.hincrby(f"{PREFIX}numbers:{token_hash}", project, 1))

    def _record_sig(self, record: dict[str, Any]) -> str:
        return self.signer.sign("task", *(record.get(f) for f in SIGNED_FIELDS))

    def verified(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` (as read from Redis) is one a server of this deployment created."""
        if self.signer is None:
            return True
        if self.signer.check(record.get("sig"), "task", *(record.get(f) for f in SIGNED_FIELDS)):
            return True
        self._warn_once(f"task record {str(record.get('taskId'))[:40]}")
        return False

    def _warn_once(self, what: str) -> None:
        if what in self._warned:
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned.add(what)
        log.warning("%s in Redis has no valid signature (not written by a server with this --secret-file); "
                    "ignored", what)

    async def get_many(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """One pipeline of HGETALLs; a record without this deployment's signature is absent."""
        keys = {}
        for task_id in task_ids:
            try:
                keys[task_id] = key(task_id)
            except KeyError:  # not an id: no record
                pass
        task_ids = list(keys)
        if not task_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(keys[task_id])
            raws = await pipe.execute()
        found = {}
        for task_id, raw in zip(task_ids, raws, strict=True):  # one reply per HGETALL
            record = _decode(raw) if raw else {}
            if record.get("taskId") == task_id and self.verified(record):
                found[task_id] = record
        return found

    async def get(self, task_id: str) -> dict[str, Any] | None:
        try:
            k = key(task_id)
        except KeyError:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k)
            pipe.get(key(task_id, "seq"))
            raw, seq = await pipe.execute()
        if not raw:
            return None
        record = _decode(raw)
        if "taskId" not in record:  # only a stray field survived: not a record
            return None
        if record.get("taskId") != task_id or not self.verified(record):
            return None
        record["lastSeq"] = int(seq or 0)
        return record

    def remember(self, record: dict[str, Any]) -> None:
        """Keep the whole record of a task this process runs, to rewrite it if Redis loses it."""
        self._records[record["taskId"]] = {k: v for k, v in record.items() if k != "lastSeq"}

    def continue_after(self, task_id: str, seq: int) -> None:
        """Number this process's next message of the task after ``seq`` even if Redis has less
        (it lost the task): a gateway closing a lost task continues after what its clients got."""
        self._written_seq[task_id] = seq

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
        cached = self._records.get(task_id)
        if cached is not None:
            cached.update(fields)
            if not await self.redis.exists(key(task_id)):
                await self.redis.hset(key(task_id), mapping=_encode(cached))
        if fields:
            await self.redis.hset(key(task_id), mapping=_encode(fields))
        record = await self.get(task_id)
        if record is None:
            raise KeyError(task_id)
        await notify(self.listeners, UPDATED, record)
        return record

    async def append(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        """Append, retrying while Redis is unreachable (a build's log must not be cut short)."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPEND_RETRY_FOR
        delay = 0.1
        while True:
            try:
                return await self._append_once(task_id, action, message, **extra)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _append_once(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        msg = protocol.make_message(task_id, 0, action, message, **extra)
        body = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
        seq = int(await self._append(keys=[key(task_id, "seq"), key(task_id, "log")],
                                     args=[self._written_seq.get(task_id, 0), body, LOG_MAXLEN]))
        self._written_seq[task_id] = seq
        msg["meta"]["seq"] = seq
        return msg

    async def messages(self, task_id: str, after_seq: int = 0, batch: int = 500) -> AsyncIterator[dict[str, Any]]:
        """The stored messages after ``after_seq``, read ``batch`` at a time (a message of a fast
        build holds one read of its output, up to 64 KiB: a replay reads few at once)."""
        start = f"{after_seq + 1}-0"
        while True:
            entries = await self.redis.xrange(key(task_id, "log"), min=start, max="+", count=batch)
            for entry_id, fields in entries:
                yield message_of(entry_id, fields)
            if len(entries) < batch:
                return
            start = f"{int(entries[-1][0].split('-', 1)[0]) + 1}-0"

    async def last_seq(self, task_id: str) -> int:
        return int(await self.redis.get(key(task_id, "seq")) or 0)

    async def unfinished(self) -> list[dict[str, Any]]:
        """Nothing to close at start-up: other workers may be running them (the queue retries)."""
        return []

    async def claim(self, task_id: str, runner: str) -> str:
        got = await self._claim(keys=[key(task_id)], args=[json.dumps(runner), *map(json.dumps, protocol.FINAL)])
        return str(got)

    async def cancel_if_queued(self, task_id: str, **fields: Any) -> bool:
        args: list[str] = [json.dumps("queued")]
        for k, v in _encode(fields).items():
            args += [k, v]
        return bool(await self._cancel_queued(keys=[key(task_id)], args=args))

    def cancel_value(self, task_id: str, value: str) -> str:
        """What a cancel key holds for ``value`` ("1" or "closed"): with its signature."""
        if self.signer is None:
            return value
        return f"{value}:{self.signer.sign('cancel', task_id, value)}"

    async def request_cancel(self, task_id: str) -> None:
        await self.redis.set(key(task_id, "cancel"), self.cancel_value(task_id, "1"),
                             ex=int(self.retention or RETENTION))

    async def cancel_requested(self, task_id: str) -> bool:
        return await self.cancel_flag(task_id) is not None

    async def cancel_flag(self, task_id: str) -> str | None:
        """The cancel key's value: "1" (a client asked), "closed" (a gateway failed the task), or
        None (no key, or one without a valid signature)."""
        got = await self.redis.get(key(task_id, "cancel"))
        if got is None:
            return None
        raw = str(got)
        if self.signer is None:
            return raw
        value, _, sig = raw.partition(":")
        if self.signer.check(sig, "cancel", task_id, value):
            return value
        self._warn_once(f"the cancel flag of task {task_id}")
        return None

    async def close(self, task_id: str | None = None) -> None:
        if task_id is None:  # the process stops: its connection goes
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            return
        self._records.pop(task_id, None)
        self._written_seq.pop(task_id, None)
        if self.retention is None:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in PARTS:
                pipe.expire(key(task_id, part), int(self.retention))
            await pipe.execute()

    # -- retention (housekeeping.py) -------------------------------------------------------------
    async def finished(self) -> AsyncIterator[tuple[str, Any, Any]]:
        """(task id, state, finishedAt) of every task record, in batches (SCAN: never blocks Redis)."""
        batch: list[str] = []
        async for k in self.redis.scan_iter(match=f"{PREFIX}task:*", count=500):
            task_id = k[len(PREFIX) + 5:]
            if is_id(task_id):  # the record, not its :seq, :log or :cancel
                batch.append(task_id)
            if len(batch) >= 200:
                for row in await self._states(batch):
                    yield row
                batch = []
        for row in await self._states(batch):
            yield row

    async def _states(self, task_ids: list[str]) -> list[tuple[str, Any, Any]]:
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(key(task_id), "state", "finishedAt")
            got = await pipe.execute()
        rows = []
        for task_id, (state, finished) in zip(task_ids, got, strict=True):  # one reply per HMGET
            fields = _decode({k: v for k, v in (("state", state), ("finishedAt", finished)) if v is not None})
            rows.append((task_id, fields.get("state"), fields.get("finishedAt")))
        return rows

    async def delete(self, task_id: str) -> None:
        await self.redis.delete(*(key(task_id, part) for part in PARTS))

    async def exists(self, task_id: str) -> bool:
        return bool(await self.redis.exists(key(task_id)))

    async def keep(self, task_ids: set[str]) -> None:
        """No expiry for these tasks (the current prod releases), for as long as they are."""
        if not task_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                if is_id(task_id):
                    for part in PARTS:
                        pipe.persist(key(task_id, part))
            await pipe.execute()
