"""The release index in Redis (``storage/releases.py`` says what it holds and why).

One key per project, ``flowcb:project:<label>``, holding ``{"data": <record>, "sig": <hmac>}``;
the labels in the set ``flowcb:projects`` (retention reads every project's kept tasks). A change
is one optimistic transaction (WATCH the key, read, apply ``ReleaseRules``, MULTI/SET/EXEC, again
if another process wrote in between), so two gateways promoting at once, or a promote racing a
prod release, end with one of them, never a mix. Signed like the other records of Redis mode
(``signing.Signer``): a record written without the server secret reads as no record, so it can
neither point an alias at a task nor claim a name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.storage.releases import ReleaseRules, empty_project, is_label, project_label

PREFIX = "flowcb:project:"
PROJECTS = "flowcb:projects"
#: The index before this one (hash "<name>\n<version>" -> "<task> <signature>"): read only, so an
#: upgrade keeps those releases from retention and their versions still need force.
LEGACY = "flowcb:releases"
#: Attempts of one change against concurrent writers before it is reported as failed.
ATTEMPTS = 50


class RedisReleases:
    def __init__(self, redis: Any, signer: Any) -> None:
        self.redis = redis
        self.signer = signer

    def _decode(self, label: str, raw: Any) -> dict[str, Any] | None:
        try:
            wrapped = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        if not isinstance(wrapped, dict) or not isinstance(wrapped.get("data"), dict):
            return None
        if not self.signer.check(wrapped.get("sig"), "project", label, wrapped["data"]):
            return None  # not written by this deployment: as if absent
        return wrapped["data"]

    def _encode(self, label: str, project: dict[str, Any]) -> str:
        return json.dumps({"data": project, "sig": self.signer.sign("project", label, project)})

    async def _read(self, label: str) -> dict[str, Any] | None:
        return self._decode(label, await self.redis.get(PREFIX + label))

    async def _change(self, name: str, change: Callable[[dict[str, Any]], Any]) -> Any:
        from redis.exceptions import WatchError

        label = project_label(name)
        key = PREFIX + label
        for _ in range(ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    project = self._decode(label, await pipe.get(key)) or empty_project(name)
                    result = change(project)
                    pipe.multi()
                    pipe.set(key, self._encode(label, project))
                    pipe.sadd(PROJECTS, label)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise RuntimeError(f"the release index of {label} changed {ATTEMPTS} times during one update")

    async def get(self, label: str) -> dict[str, Any] | None:
        return await self._read(label) if is_label(label) else None

    async def _legacy(self, name: str, version: str) -> str | None:
        task_id, _, sig = str(await self.redis.hget(LEGACY, f"{name}\n{version}") or "").partition(" ")
        ok = task_id and self.signer.check(sig, "release", name, version, task_id)
        return task_id if ok else None

    async def _with_legacy(self, project: dict[str, Any], name: str, version: str) -> dict[str, Any]:
        old = await self._legacy(name, version)
        if old:
            project["versions"].setdefault(version, old)
        return project

    async def check(self, name: str, version: str, owner: str, *, prod: bool, force: bool) -> None:
        project = await self._with_legacy(await self._read(project_label(name)) or empty_project(name), name, version)
        ReleaseRules.check(project, name, version, owner, prod=prod, force=force)

    async def record(self, name: str, version: str, task_id: str, owner: str, *, prod: bool,
                     force: bool, branch: str | None) -> dict[str, Any]:
        at = protocol.now_ms()
        old = await self._legacy(name, version)

        def change(p: dict[str, Any]) -> dict[str, Any]:
            if old:
                p["versions"].setdefault(version, old)
            return ReleaseRules.record(p, name, version, task_id, owner, prod=prod, force=force, branch=branch, at=at)
        return dict(await self._change(name, change))

    async def promote(self, name: str, version: str, task_id: str, owner: str) -> str | None:
        at = protocol.now_ms()
        previous: str | None = await self._change(
            name, lambda p: ReleaseRules.promote(p, name, version, task_id, owner, at=at))
        return previous

    async def resolve(self, label: str, branch: str | None) -> str | None:
        project = await self.get(label)
        if project is None:
            return None
        found = project["prod"] if branch is None else project["branches"].get(branch)
        return found if isinstance(found, str) else None

    async def task_ids(self) -> set[str]:
        ids = {str(v).partition(" ")[0] for v in await self.redis.hvals(LEGACY)}  # unsigned too: keeping is safe
        for label in await self.redis.smembers(PROJECTS):
            project = await self.get(str(label))
            if project is not None:
                ids |= ReleaseRules.kept(project)
        return ids
