"""The dashboard's index of tasks per token, newest first, so a task list never lists directories.

The file store keeps one directory per task; listing 10,000 of them (and reading every
``task.json``) on each page view would make the dashboard slower as history grows. So each
task is also recorded, when it is created, in a per-token index:

* embedded (``FileIndex``): ``<data>/dashboard/index/<tokenHash>.jsonl``, one line
  ``{"t": createdAt, "id": taskId, "n": name}`` per task, appended; kept in memory and re-read
  from where it left off when the file grew. Built once from the task directories the first
  time a server with the dashboard starts on an older data dir (``.built`` marks that);
* Redis (``RedisIndex``): a sorted set per token scored by ``createdAt`` (plus one per token
  and project, and the token's set of project names), built from a ``SCAN`` once per
  deployment (``flowcb:dash:indexed``).

Tasks deleted by retention leave entries behind; readers skip records that are gone (and the
Redis index drops them when it meets them). Entries are ``(createdAt, taskId, name)``; pages go
by a keyset cursor ``"<createdAt>:<taskId>"`` so tasks created meanwhile do not shift a page.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.server.policy import is_id

Entry = tuple[int, str, str]  # (createdAt ms, taskId, name)
REDIS_PREFIX = "flowcb:dash:"


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    t, _, task_id = cursor.partition(":")
    try:
        return int(t), task_id if is_id(task_id) else ""
    except ValueError:
        return None


class FileIndex:
    def __init__(self, data_dir: Path, tasks_root: Path) -> None:
        self.dir = data_dir / "dashboard" / "index"
        self.tasks_root = tasks_root
        self._cache: dict[str, tuple[int, list[Entry]]] = {}  # token hash -> (bytes read, entries sorted)

    def build_if_needed(self) -> None:
        """Index the tasks made before the dashboard existed (once per data dir)."""
        marker = self.dir / ".built"
        if marker.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        per_token: dict[str, list[Entry]] = {}
        if self.tasks_root.is_dir():
            for d in os.scandir(self.tasks_root):
                if not is_id(d.name):
                    continue
                try:
                    with open(os.path.join(d.path, "task.json"), encoding="utf-8") as fh:
                        rec = json.load(fh)
                except (OSError, ValueError):
                    continue
                th = rec.get("tokenHash")
                if isinstance(th, str) and len(th) == 64:
                    per_token.setdefault(th, []).append(
                        (int(rec.get("createdAt") or 0), d.name, str(rec.get("name") or "")))
        for th, entries in per_token.items():
            entries.sort()
            with open(self.dir / f"{th}.jsonl", "w", encoding="utf-8") as fh:
                for t, task_id, name in entries:
                    fh.write(json.dumps({"t": t, "id": task_id, "n": name}, separators=(",", ":")) + "\n")
        marker.write_text("1\n", encoding="utf-8")

    def _path(self, token_hash: str) -> Path:
        if len(token_hash) != 64 or not all(c in "0123456789abcdef" for c in token_hash):
            raise KeyError(token_hash)
        return self.dir / f"{token_hash}.jsonl"

    async def add(self, record: dict[str, Any]) -> None:
        th = record.get("tokenHash")
        if not isinstance(th, str):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"t": int(record.get("createdAt") or 0), "id": record["taskId"],
                           "n": str(record.get("name") or "")}, separators=(",", ":")) + "\n"
        with open(self._path(th), "a", encoding="utf-8") as fh:
            fh.write(line)

    def entries(self, token_hash: str) -> list[Entry]:
        """The token's tasks, oldest first (sorted by createdAt, then id)."""
        try:
            path = self._path(token_hash)
        except KeyError:
            return []
        done, entries = self._cache.get(token_hash, (0, []))
        try:
            size = path.stat().st_size
        except OSError:
            return []
        if size < done:  # rewritten: read again
            done, entries = 0, []
        if size > done:
            with open(path, "rb") as fh:
                fh.seek(done)
                data = fh.read(size - done)
            cut = data.rfind(b"\n") + 1  # a line being written is read next time
            fresh: list[Entry] = []
            for raw in data[:cut].splitlines():
                try:
                    e = json.loads(raw)
                    fresh.append((int(e["t"]), str(e["id"]), str(e["n"])))
                except (ValueError, KeyError, TypeError):
                    continue
            entries = list(entries)
            for e in fresh:  # nearly always appended in order
                if not entries or e >= entries[-1]:
                    entries.append(e)
                else:
                    bisect.insort(entries, e)
            done += cut
            self._cache[token_hash] = (done, entries)
        return entries

    async def page(self, token_hash: str, project: str | None, cursor: str | None,
                   count: int) -> list[Entry]:
        """Up to ``count`` entries older than ``cursor``, newest first."""
        entries = self.entries(token_hash)
        after = parse_cursor(cursor)
        end = len(entries) if after is None else bisect.bisect_left(entries, (after[0], after[1], ""))
        out: list[Entry] = []
        i = end - 1
        while i >= 0 and len(out) < count:
            e = entries[i]
            if project is None or e[2] == project:
                out.append(e)
            i -= 1
        return out

    async def projects(self, token_hash: str) -> list[str]:
        return sorted({e[2] for e in self.entries(token_hash)})

    async def forget(self, token_hash: str, task_id: str) -> None:
        """Retention removed the task; the file keeps its line (readers skip it)."""


class RedisIndex:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._built = False
        self._lock = asyncio.Lock()

    @staticmethod
    def _key(token_hash: str, project: str | None = None) -> str:
        if project is None:
            return f"{REDIS_PREFIX}tasks:{token_hash}"
        return f"{REDIS_PREFIX}tasks:{token_hash}:p:{hashlib.sha256(project.encode()).hexdigest()[:32]}"

    async def add(self, record: dict[str, Any]) -> None:
        th = record.get("tokenHash")
        if not isinstance(th, str):
            return
        name, task_id, t = str(record.get("name") or ""), record["taskId"], int(record.get("createdAt") or 0)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._key(th), {task_id: t})
            pipe.zadd(self._key(th, name), {task_id: t})
            pipe.sadd(f"{REDIS_PREFIX}projects:{th}", name)
            await pipe.execute()

    async def build_if_needed(self) -> None:
        if self._built:
            return
        async with self._lock:
            if self._built:
                return
            if not await self.redis.set(f"{REDIS_PREFIX}indexed", "1", nx=True):
                self._built = True
                return
            from flow_kit_cloudbuild.server.backends.redis.store import _decode

            async for key in self.redis.scan_iter(match="flowcb:task:*", count=1000):
                k = str(key)
                task_id = k[len("flowcb:task:"):]
                if not is_id(task_id):
                    continue
                fields = ["taskId", "tokenHash", "name", "createdAt"]
                raw = await self.redis.hmget(k, fields)  # one value (or None) per field
                rec = _decode({f: v for f, v in zip(fields, raw, strict=True) if v is not None})
                if rec.get("taskId") == task_id:
                    await self.add(rec)
            self._built = True

    async def page(self, token_hash: str, project: str | None, cursor: str | None,
                   count: int) -> list[Entry]:
        await self.build_if_needed()
        after = parse_cursor(cursor)
        key = self._key(token_hash, project)
        top: Any = "+inf" if after is None else after[0]
        out: list[Entry] = []
        offset = 0
        while len(out) < count:
            got = await self.redis.zrevrangebyscore(key, top, "-inf", start=offset, num=count + 50,
                                                    withscores=True)
            if not got:
                break
            for member, score in got:
                task_id = str(member)
                e = (int(score), task_id, project or "")
                if after is not None and (e[0], e[1]) >= after:
                    continue
                out.append(e)
                if len(out) >= count:
                    break
            offset += len(got)
        return out

    async def projects(self, token_hash: str) -> list[str]:
        await self.build_if_needed()
        got = await self.redis.smembers(f"{REDIS_PREFIX}projects:{token_hash}")
        return sorted(got)

    async def forget(self, token_hash: str, task_id: str) -> None:
        await self.redis.zrem(self._key(token_hash), task_id)
