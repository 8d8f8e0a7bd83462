"""Task store: task records and every task's messages, in order, on disk.

One interface (``TaskStore``) with the embedded implementation ``FileTaskStore``: a directory
per task under ``<data>/tasks/<taskId>/`` holding ``task.json`` (the record, replaced
atomically) and ``messages.jsonl`` (one message per line, appended and flushed as it is made).
A restart therefore keeps all history. Task ids are server-made hex strings, checked before
they are ever joined to a path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Protocol

from flowcore.api import atomic_write_bytes

from .. import protocol
from .policy import is_id

#: Record fields that a client may see (GET /api/tasks/{id}, attach ack).
PUBLIC_FIELDS = protocol.TASK_FIELDS
#: The seq of a stored line without parsing it (lines are written compact, "meta" first).
_SEQ_RE = re.compile(r'\{"meta":\{"timestamp":-?\d+,"taskId":"[0-9a-f]+","seq":(\d+)\}')


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in PUBLIC_FIELDS}


class TaskStore(Protocol):
    """Where task records and messages live. A Redis implementation can replace the file one."""

    async def create(self, record: dict[str, Any]) -> None:
        """Store a new task record (``record["taskId"]`` is new)."""

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The record (with ``lastSeq``), or None for an unknown id."""

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
        """Change some fields of a record and return the new record."""

    async def append(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        """Make the next message of the task (seq = last + 1), store it and return it."""

    def messages(self, task_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Stored messages with seq > after_seq, in order."""

    async def unfinished(self) -> list[dict[str, Any]]:
        """Records whose state is not final (used at start-up to close what a restart cut off)."""

    async def close(self, task_id: str | None = None) -> None:
        """Release resources held for one task (or all)."""


class FileTaskStore:
    """Task records and messages as files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._seq: dict[str, int] = {}
        self._files: dict[str, IO[str]] = {}
        self._records: dict[str, dict[str, Any]] = {}

    def _dir(self, task_id: str) -> Path:
        if not is_id(task_id):
            raise KeyError(task_id)
        return self.root / task_id

    async def create(self, record: dict[str, Any]) -> None:
        d = self._dir(record["taskId"])
        d.mkdir(parents=True, exist_ok=False)
        record = dict(record)
        self._records[record["taskId"]] = record
        self._seq[record["taskId"]] = 0
        (d / "messages.jsonl").touch()
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        body = {k: v for k, v in record.items() if k != "lastSeq"}
        atomic_write_bytes(self._dir(record["taskId"]) / "task.json",
                           json.dumps(body, indent=1).encode("utf-8"))

    def _load(self, task_id: str) -> dict[str, Any] | None:
        if task_id in self._records:
            return self._records[task_id]
        try:
            path = self._dir(task_id) / "task.json"
            record = json.loads(path.read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            return None
        self._records[task_id] = record
        return record

    def _last_seq(self, task_id: str) -> int:
        if task_id not in self._seq:
            last = 0
            try:
                f = open(self._dir(task_id) / "messages.jsonl", encoding="utf-8")
            except (KeyError, OSError):
                f = None
            if f is not None:
                with f:  # a finished task's 20 MB log is looked at on every attach: parse no line
                    for line in f:  # a line that ends in a newline was written whole
                        head = _SEQ_RE.match(line) if line.endswith("\n") else None
                        if head is not None:
                            last = int(head.group(1))
                            continue
                        try:
                            last = json.loads(line)["meta"]["seq"]
                        except (ValueError, KeyError, TypeError):
                            break  # a line cut off by a crash: the last one
            self._seq[task_id] = last
        return self._seq[task_id]

    async def get(self, task_id: str) -> dict[str, Any] | None:
        record = self._load(task_id)
        if record is None:
            return None
        return {**record, "lastSeq": self._last_seq(task_id)}

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
        record = self._load(task_id)
        if record is None:
            raise KeyError(task_id)
        record.update(fields)
        self._write(record)
        return {**record, "lastSeq": self._last_seq(task_id)}

    async def append(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        seq = self._last_seq(task_id) + 1
        msg = protocol.make_message(task_id, seq, action, message, **extra)
        fh = self._files.get(task_id)
        if fh is None:
            path = self._dir(task_id) / "messages.jsonl"
            _drop_partial_line(path)
            fh = self._files[task_id] = open(path, "a", encoding="utf-8")
        fh.write(json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n")
        fh.flush()
        self._seq[task_id] = seq
        return msg

    def _read(self, task_id: str, after_seq: int):
        fh = self._files.get(task_id)
        if fh is not None:
            fh.flush()
        try:
            f = open(self._dir(task_id) / "messages.jsonl", encoding="utf-8")
        except (KeyError, OSError):
            return
        with f:
            for line in f:
                if after_seq:  # a replay from a seq: skip earlier lines without parsing them
                    head = _SEQ_RE.match(line)
                    if head is not None and int(head.group(1)) <= after_seq:
                        continue
                try:
                    msg = json.loads(line)
                except ValueError:  # a line cut off by a crash: the last one, never mid-file
                    break
                if msg["meta"]["seq"] > after_seq:
                    yield msg

    async def messages(self, task_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        for msg in self._read(task_id, after_seq):
            yield msg

    async def unfinished(self) -> list[dict[str, Any]]:
        found = []
        for d in sorted(self.root.iterdir()):
            if not is_id(d.name):
                continue
            record = await self.get(d.name)
            if record is not None and record.get("state") not in protocol.FINAL:
                found.append(record)
        return found

    async def close(self, task_id: str | None = None) -> None:
        ids = list(self._files) if task_id is None else [task_id]
        for tid in ids:
            fh = self._files.pop(tid, None)
            if fh is not None:
                fh.close()
        if task_id is not None:
            self._records.pop(task_id, None)
            self._seq.pop(task_id, None)


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left half-written by a crash, so new lines start on a line of their own."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos = size
            while pos > 0:
                step = min(4096, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    f.truncate(pos - step + i + 1)
                    return
                pos -= step
            f.truncate(0)
    except FileNotFoundError:
        pass
