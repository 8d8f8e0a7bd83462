"""Build uids: one per token owner, from the operator's range, recorded so they never collide.

A root server runs each owner's builds as an unprivileged uid of its own, so the process limit
(RLIMIT_NPROC counts per uid) and the caches' ownership are per tenant. A hash of the token
modulo the range would let two tokens share a uid, and with it a process limit; so uids are
handed out in order from ``--build-uid-range`` and the assignment is recorded:

* embedded: ``<data-dir>/build-uids.json`` (owner key -> uid), replaced atomically under an
  ``flock`` so two server processes on one data dir cannot hand out one uid twice;
* Redis mode: the hash ``flowcb:build-uids`` (owner key -> uid) and its reverse
  ``flowcb:build-uids:taken`` (uid -> owner key), both written with ``HSETNX`` in one Lua
  script, so every gateway and worker agrees on the uid of an owner.

When the range is used up, a new owner's build fails with a message naming the flag; owners
that already have a uid keep building. Owner keys are a hash of the token hash, never a token.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Protocol

from flowcore.api import atomic_write_bytes

REDIS_OWNERS = "flowcb:build-uids"
REDIS_TAKEN = "flowcb:build-uids:taken"
RECORD_NAME = "build-uids.json"


class UidRangeExhausted(Exception):
    """Every uid of the range belongs to an owner already; the message says what to do."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"no build uid is left for a new token: all {end - start + 1} uids of "
                         f"--build-uid-range {start}-{end} are given to other tokens; ask the operator "
                         "to widen --build-uid-range")


class UidAllocator(Protocol):
    async def allocate(self, owner: str) -> int:
        """The uid of ``owner`` (a token hash): its recorded one, else the next free one."""


def owner_key(owner: str) -> str:
    """What the record keeps for an owner (a token hash): a shorter hash of it."""
    return hashlib.sha256(owner.encode()).hexdigest()[:24]


class FileUidAllocator:
    """Embedded mode: the record is a JSON file in the data dir."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.path = path
        self.start, self.end = start, end
        self._lock = threading.Lock()

    async def allocate(self, owner: str) -> int:
        return await asyncio.to_thread(self.allocate_now, owner)

    def allocate_now(self, owner: str) -> int:
        key = owner_key(owner)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another server process on this data dir waits
            record = self._read()
            uid = record.get(key)
            if isinstance(uid, int):
                return uid
            taken = {v for v in record.values() if isinstance(v, int)}
            uid = next((u for u in range(self.start, self.end + 1) if u not in taken), None)
            if uid is None:
                raise UidRangeExhausted(self.start, self.end)
            record[key] = uid
            atomic_write_bytes(self.path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
            return uid

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # never hand out uids from a record we cannot read
            raise OSError(f"cannot read the build uid record {self.path}: {exc}") from None
        return data if isinstance(data, dict) else {}


#: One owner's uid, atomically: its recorded one, else the next uid no owner has (owners are
#: never removed, so the count of owners is where to look first), recorded in both hashes.
_ALLOCATE = """
local uid = redis.call('HGET', KEYS[1], ARGV[1])
if uid then return tonumber(uid) end
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
uid = first + redis.call('HLEN', KEYS[1])
while uid <= last and redis.call('HEXISTS', KEYS[2], tostring(uid)) == 1 do uid = uid + 1 end
if uid > last then return -1 end
redis.call('HSETNX', KEYS[1], ARGV[1], tostring(uid))
redis.call('HSETNX', KEYS[2], tostring(uid), ARGV[1])
return uid
"""


class RedisUidAllocator:
    """Redis mode: owners and taken uids in two hashes, written with ``HSETNX`` by one Lua
    script, so two processes asking at once for the same or different owners never disagree
    and never share a uid (a walk of the range from each process, claiming with separate
    commands, could hand one owner two uids in a race and run out of a range that was not)."""

    def __init__(self, redis: Any, start: int, end: int) -> None:
        self.redis = redis
        self.start, self.end = start, end
        self._script = redis.register_script(_ALLOCATE)

    async def allocate(self, owner: str) -> int:
        key = owner_key(owner)
        got = await self.redis.hget(REDIS_OWNERS, key)
        if got is not None:
            return int(got)
        uid = int(await self._script(keys=[REDIS_OWNERS, REDIS_TAKEN], args=[key, self.start, self.end]))
        if uid < 0:
            raise UidRangeExhausted(self.start, self.end)
        return uid
