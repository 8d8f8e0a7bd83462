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

Signed: a hit makes the server sign provenance for files it did not build in that task, so an
entry is taken only if the server wrote it. Each entry is signed with the provenance key
(Ed25519, ``signing_key.py``: one key for every process of a deployment, kept across restarts),
over the entry's exact bytes together with its scope and build key. Without that, whoever can
write the store (the shared dir, the bucket) could point a build key at other files (another
build's, another tenant's) and have the server attest them as that source's build. An entry that
does not verify (planted, damaged, copied to another key or scope, signed by a key since replaced)
is ``UntrustedEntry``: the pipeline says so, deletes it and builds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.storage.objects import ObjectStore

ENTRY_VERSION = 2          # 1: unsigned (read as untrusted, so built again and replaced)
_DOMAIN = b"flow build-cache entry v2\n"  # what else this key signs (DSSE provenance) never starts so
MAX_ENTRY = 8 * 1024 * 1024   # an entry lists at most artifact-max-files files
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
SCOPES = ("token", "team")


def scope_of(mode: str, owner: str) -> str:
    """The cache scope of a task's owner (a token hash) under ``--cache-scope mode``."""
    if mode == "team":
        return "team"
    return "token-" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


class UntrustedEntry(Exception):
    """An entry is there but not one this server signed for that scope and build key."""


class BuildCache:
    """Entries on an ``ObjectStore`` (``objects.child("build-cache")``), signed with ``key``.

    ``key`` loads the Ed25519 private key (blocking; TaskService hands it its provenance key).
    Without one nothing is read or written: an unsigned cache is not one this server may trust.
    """

    def __init__(self, objects: ObjectStore, key: Callable[[], Any] | None = None) -> None:
        self.objects = objects
        self.key = key

    @staticmethod
    def _key(scope: str, build_key: str) -> str:
        if not _KEY_RE.match(build_key) or not re.fullmatch(r"team|token-[0-9a-f]{32}", scope):
            raise KeyError(build_key)
        return f"{scope}/{build_key}.json"

    @staticmethod
    def _message(scope: str, build_key: str, payload: bytes) -> bytes:
        """What is signed: the entry's bytes bound to where it may be read (its scope and key)."""
        return b"%s%s %s %d %s" % (_DOMAIN, scope.encode(), build_key.encode(), len(payload), payload)

    async def get(self, scope: str, build_key: str) -> dict[str, Any] | None:
        """The entry for ``build_key`` in ``scope``, None when there is none (or no key to check
        one with); raises UntrustedEntry for one this server did not sign there."""
        if self.key is None:
            return None
        raw = await self.objects.get_bytes(self._key(scope, build_key))
        if raw is None:
            return None
        return await asyncio.to_thread(self._open, scope, build_key, raw)

    def _open(self, scope: str, build_key: str, raw: bytes) -> dict[str, Any]:
        from cryptography.exceptions import InvalidSignature

        assert self.key is not None
        if len(raw) > MAX_ENTRY:
            raise UntrustedEntry(f"it is larger than {MAX_ENTRY} bytes")
        try:
            sealed = json.loads(raw)
            payload = sealed["payload"].encode("utf-8")
            signature = base64.b64decode(sealed["sig"], validate=True)
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            raise UntrustedEntry("it is not a signed entry") from None
        if not isinstance(sealed, dict) or sealed.get("v") != ENTRY_VERSION:
            raise UntrustedEntry("it is not a signed entry of this version")
        try:
            self.key().public_key().verify(signature, self._message(scope, build_key, payload))
        except InvalidSignature:
            raise UntrustedEntry("its signature does not verify with this server's provenance key") from None
        entry = json.loads(payload)  # signed by this server: its own JSON
        if not (isinstance(entry, dict) and is_id(entry.get("taskId")) and entry.get("buildKey") == build_key
                and isinstance(entry.get("artifacts"), list)
                and isinstance(entry.get("builtBy"), dict) and is_id(entry["builtBy"].get("taskId"))):
            raise UntrustedEntry("it is not in the shape this server writes")
        return entry

    async def put(self, scope: str, build_key: str, *, task_id: str, number: Any,
                  artifacts: list[dict[str, Any]], built_by: dict[str, Any], at: int) -> None:
        """Record that ``task_id`` (done) holds ``build_key``'s ``artifacts`` (name, size, sha256),
        built by ``built_by`` ({"taskId", "number"}: itself, or the build a hit reused), signed."""
        if self.key is None:
            return
        entry = {"buildKey": build_key, "taskId": task_id, "number": number,
                 "builtBy": {"taskId": built_by.get("taskId"), "number": built_by.get("number")},
                 "artifacts": [{"name": a["name"], "size": a["size"], "sha256": a["sha256"]} for a in artifacts],
                 "at": at}
        payload = json.dumps(entry, separators=(",", ":")).encode("utf-8")

        def seal() -> bytes:
            assert self.key is not None
            signature = self.key().sign(self._message(scope, build_key, payload))
            return json.dumps({"v": ENTRY_VERSION, "payload": payload.decode("utf-8"),
                               "sig": base64.b64encode(signature).decode("ascii")}).encode("utf-8")
        await self.objects.put_bytes(self._key(scope, build_key), await asyncio.to_thread(seal),
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
