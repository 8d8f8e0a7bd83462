"""The build cache: which earlier successful build of an owner produced what a build key names.

Why: a publish of a source that was built before (same files, command, lock files, toolchain,
build environment and kit version: ``tasks/build_key.py``) would run install and build again for
the same bytes. Hosted builders and build systems (Turborepo's remote cache, Bazel's and Nix's
content-addressed outputs) skip that; so does this server: a hit stores the earlier build's
artifacts again as the new task's (``ArtifactStore.copy``) without running anything.

An entry is one small JSON object ``<scope>/<build key>.json`` in the server's object store (the
data dir's ``build-cache/``, or with ``--store s3://...`` the bucket every gateway and worker
reaches), written in one ``put_bytes`` (a rename or one S3 PUT) after the artifacts it names are
stored whole, and only for a task that ended done: a process killed at any point leaves either no
entry or a whole one. An entry names the task whose artifacts it reuses, with each file's size and
sha256; a hit is taken only when that task's stored manifest still lists exactly those files
(retention may have deleted them: then the entry is stale, deleted, and the build runs).

Scope: ``scope_of`` is the owner's token hash, so no tenant can plant a result another reads
(``--cache-scope token``, the default); ``--cache-scope team`` makes every token of the server one
team that shares its builds (a server run by one team whose members trust each other's builds).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.storage.objects import ObjectStore

ENTRY_VERSION = 1
MAX_ENTRY = 8 * 1024 * 1024   # an entry lists at most artifact-max-files files
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
SCOPES = ("token", "team")


def scope_of(mode: str, owner: str) -> str:
    """The cache scope of a task's owner (a token hash) under ``--cache-scope mode``."""
    if mode == "team":
        return "team"
    return "token-" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


class BuildCache:
    """Entries on an ``ObjectStore`` (``objects.child("build-cache")``)."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def _key(scope: str, build_key: str) -> str:
        if not _KEY_RE.match(build_key) or not re.fullmatch(r"team|token-[0-9a-f]{32}", scope):
            raise KeyError(build_key)
        return f"{scope}/{build_key}.json"

    async def get(self, scope: str, build_key: str) -> dict[str, Any] | None:
        """The entry for ``build_key`` in ``scope``, or None (none, or one this server did not write
        in a shape it reads)."""
        raw = await self.objects.get_bytes(self._key(scope, build_key))
        if raw is None or len(raw) > MAX_ENTRY:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        if not (isinstance(entry, dict) and entry.get("v") == ENTRY_VERSION and is_id(entry.get("taskId"))
                and entry.get("buildKey") == build_key and isinstance(entry.get("artifacts"), list)
                and isinstance(entry.get("builtBy"), dict) and is_id(entry["builtBy"].get("taskId"))):
            return None
        return entry

    async def put(self, scope: str, build_key: str, *, task_id: str, number: Any,
                  artifacts: list[dict[str, Any]], built_by: dict[str, Any], at: int) -> None:
        """Record that ``task_id`` (done) holds ``build_key``'s ``artifacts`` (name, size, sha256),
        built by ``built_by`` ({"taskId", "number"}: itself, or the build a hit reused)."""
        entry = {"v": ENTRY_VERSION, "buildKey": build_key, "taskId": task_id, "number": number,
                 "builtBy": {"taskId": built_by.get("taskId"), "number": built_by.get("number")},
                 "artifacts": [{"name": a["name"], "size": a["size"], "sha256": a["sha256"]} for a in artifacts],
                 "at": at}
        await self.objects.put_bytes(self._key(scope, build_key), json.dumps(entry).encode("utf-8"),
                                     content_type="application/json")

    async def forget(self, scope: str, build_key: str) -> None:
        """Delete a stale entry (its task's artifacts are gone or differ)."""
        await self.objects.delete(self._key(scope, build_key))

    async def entries(self) -> list[tuple[str, float]]:
        """(object key, time written) of every entry: the retention sweep deletes old ones."""
        return [(info.key, info.mtime) for info in await self.objects.list("")
                if info.key.endswith(".json")]

    async def delete_key(self, key: str) -> None:
        await self.objects.delete(key)


def same_files(entry: dict[str, Any], listed: list[dict[str, Any]] | None) -> bool:
    """Whether a task's stored manifest ``listed`` is exactly the entry's files (name, size, sha256)."""
    if listed is None:
        return False

    def norm(items: list[Any]) -> list[tuple[Any, Any, Any]]:
        return sorted((a.get("name"), a.get("size"), a.get("sha256")) for a in items if isinstance(a, dict))
    return norm(entry.get("artifacts") or []) == norm(listed) and len(listed) == len(entry.get("artifacts") or [])
