"""The release index: who owns a project name, which build is its prod release, which build is
the latest of each branch, and the history of both (``flow releases``, ``flow promote``).

Why an index of its own and not files next to the artifacts: the stable URLs
(``<project>.<deploy-domain>``, ``<project>--<branch>.<deploy-domain>``) are pointers that
change (a new prod release, a rollback) while a deployment's files never do; a pointer must
move atomically, in one write every process sees, and the artifact store (local directory or
object storage) has no such write. Embedded, the index is one JSON file per project written
atomically under a lock (``LocalReleases``); in Redis mode it is one signed key per project
changed in a WATCH/MULTI transaction (``backends/redis/releases.py``). Both share the rules
below (``ReleaseRules``), written once.

Everything is keyed by the project's DNS label (``project_label``): the names ``a_b`` and
``a.b`` map to the same host name, so they are one project and have one owner. Ownership: the
token that first made an alias of the label (a prod release, or a branch alias) owns it; a prod
release or a promote by another token is refused (``name-taken``), a branch build by another
token still deploys at its own URL but moves no alias.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.errors import RequestError
from flow_kit_cloudbuild.server.policy import is_id
from flowcore.api import atomic_write_bytes

#: How many entries of a project's history are kept (oldest dropped first): bounded whatever
#: a token publishes.
HISTORY_LIMIT = 200
#: The longest project label: room for ``--<branch>`` in one 63-character DNS label.
PROJECT_LABEL_MAX = 40
DNS_LABEL_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9]+")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def dns_label(text: str, limit: int = DNS_LABEL_MAX) -> str:
    """``text`` as one DNS label of at most ``limit`` characters.

    Lower case; every run of characters other than a-z and 0-9 becomes one ``-`` (so a label
    never holds ``--``, which separates project and branch); no ``-`` at either end. A name
    longer than ``limit`` keeps its start plus ``-`` and 8 hex digits of its SHA-256, so two long
    names sharing a start still differ. An empty result is ``x``.
    """
    label = _NOT_LABEL.sub("-", text.lower()).strip("-") or "x"
    if len(label) > limit:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        label = label[:limit - 9].rstrip("-") + "-" + digest
    return label


def project_label(name: str) -> str:
    """The host label of a project name (``@scope/my_site`` -> ``scope-my-site``); a label that
    reads as a deployment id (24 hex digits) gets ``-site`` so the two never collide."""
    label = dns_label(name, PROJECT_LABEL_MAX)
    return label + "-site" if is_id(label) else label


def branch_label(project: str, branch: str) -> str:
    """The branch's part of ``<project>--<branch>``: as long as one DNS label leaves room for."""
    return dns_label(branch, DNS_LABEL_MAX - len(project) - 2)


def is_label(text: str) -> bool:
    return bool(_LABEL_RE.match(text))


def name_taken(name: str) -> RequestError:
    return RequestError(protocol.ERROR_NAME_TAKEN,
                        f"the project name {name!r} ({project_label(name)}) belongs to another token; "
                        "publish under another name, or with the token that released it first")


def empty_project(name: str) -> dict[str, Any]:
    return {"name": name, "owner": None, "prod": None, "branches": {}, "versions": {}, "history": []}


class ReleaseRules:
    """The index's rules on one project's record, the same for every implementation: each
    method changes ``project`` (a dict from ``empty_project``) in place or raises
    ``RequestError``; the implementation reads and writes the record around it atomically."""

    @staticmethod
    def check(project: dict[str, Any], name: str, version: str, owner: str, *, prod: bool, force: bool) -> None:
        """Refuse a prod release of a name another token owns (``name-taken``), or of a version
        already released without ``force`` (``exists``)."""
        if not prod:
            return
        held = project.get("owner")
        if held is not None and not secrets.compare_digest(held, owner):
            raise name_taken(name)
        existing = project["versions"].get(version)
        if existing and not force:
            raise RequestError(protocol.ERROR_EXISTS,
                               f"{name} {version} is already released to prod (task {existing}); "
                               "publish with force to overwrite it")

    @staticmethod
    def record(project: dict[str, Any], name: str, version: str, task_id: str, owner: str, *,
               prod: bool, force: bool, branch: str | None, at: int) -> dict[str, Any]:
        """A successful build: prod pointer (with ``prod``), the branch's pointer (with ``branch``,
        when the token owns the name or nobody does), one history entry. Returns what moved:
        ``{"prod": previous prod task or None, "branch": label or None, "skipped": reason or None}``."""
        ReleaseRules.check(project, name, version, owner, prod=prod, force=force)
        held = project.get("owner")
        mine = held is None or secrets.compare_digest(held, owner)
        moved: dict[str, Any] = {"prod": None, "branch": None, "skipped": None, "prodChanged": False}
        label = project_label(name)
        if branch:
            if mine:
                blabel = branch_label(label, branch)
                project["branches"][blabel] = task_id
                moved["branch"] = blabel
                project["owner"] = owner
            else:
                moved["skipped"] = (f"the branch alias {label}--{branch_label(label, branch)} was not moved: "
                                    f"{name!r} belongs to another token")
        if prod:
            moved["prod"] = project.get("prod")
            moved["prodChanged"] = True
            project["owner"] = owner
            project["prod"] = task_id
            project["versions"][version] = task_id
        if prod or moved["branch"]:
            ReleaseRules._remember(project, {"taskId": task_id, "version": version, "branch": branch,
                                             "prod": prod, "action": "release", "at": at})
        return moved

    @staticmethod
    def promote(project: dict[str, Any], name: str, version: str, task_id: str, owner: str, *,
                at: int) -> str | None:
        """Point prod at ``task_id`` (an earlier successful build of the owner); returns the
        previous prod task. Refused when another token owns the name."""
        held = project.get("owner")
        if held is not None and not secrets.compare_digest(held, owner):
            raise name_taken(name)
        previous: str | None = project.get("prod")
        project["owner"] = owner
        project["prod"] = task_id
        ReleaseRules._remember(project, {"taskId": task_id, "version": version, "branch": None, "prod": True,
                                         "action": "promote", "at": at, "previous": previous})
        return previous

    @staticmethod
    def _remember(project: dict[str, Any], entry: dict[str, Any]) -> None:
        history = project["history"]
        history.append(entry)
        del history[:-HISTORY_LIMIT]

    @staticmethod
    def kept(project: dict[str, Any]) -> set[str]:
        """Task ids retention must keep: the prod pointer, every branch pointer and every prod
        release of a version (as before the index existed)."""
        ids = {project.get("prod"), *project["branches"].values(), *project["versions"].values()}
        return {i for i in ids if isinstance(i, str)}


class Releases(Protocol):
    """The release index (module docstring); keys are project labels (``project_label``)."""

    async def get(self, label: str) -> dict[str, Any] | None:
        """The project's record (owner, prod, branches, versions, history), or None."""

    async def check(self, name: str, version: str, owner: str, *, prod: bool, force: bool) -> None:
        """Raise what ``record`` would raise, before a build starts (``ReleaseRules.check``)."""

    async def record(self, name: str, version: str, task_id: str, owner: str, *, prod: bool,
                     force: bool, branch: str | None) -> dict[str, Any]:
        """Record a successful build atomically (``ReleaseRules.record``)."""

    async def promote(self, name: str, version: str, task_id: str, owner: str) -> str | None:
        """Point prod at ``task_id`` atomically (``ReleaseRules.promote``); the previous prod task."""

    async def resolve(self, label: str, branch: str | None) -> str | None:
        """The task an alias host serves: the prod release, or the branch's latest build."""

    async def task_ids(self) -> set[str]:
        """Every task id retention keeps (``ReleaseRules.kept`` over all projects)."""


class LocalReleases:
    """The embedded index: ``<root>/<label>.json`` per project, written atomically (a temporary
    file renamed over it) under one lock, so a reader sees the old record or the new one and
    two changes never interleave (one process serves the embedded server)."""

    def __init__(self, root: Path, legacy: Path | None = None) -> None:
        self.root = root
        # the index before this one: "<name>\n<version>" -> prod task (artifacts/releases.json);
        # read only, so that an upgrade keeps those releases from retention and their versions
        # still need force
        self.legacy = legacy
        self._lock = asyncio.Lock()
        self._cache: dict[str, dict[str, Any] | None] = {}  # label -> record (this process writes them all)

    def _path(self, label: str) -> Path:
        if not is_label(label):
            raise KeyError(label)
        return self.root / f"{label}.json"

    def _read(self, label: str) -> dict[str, Any] | None:
        if label in self._cache:
            return self._cache[label]
        try:
            got = json.loads(self._path(label).read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            got = None
        if got is not None and not isinstance(got, dict):
            got = None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[label] = got
        return got

    async def _change(self, name: str, change: Callable[[dict[str, Any]], Any]) -> Any:
        label = project_label(name)
        async with self._lock:
            project = copy.deepcopy(self._read(label)) or empty_project(name)
            result = change(project)
            data = json.dumps(project, indent=1).encode("utf-8")
            await asyncio.to_thread(self._write, label, data)
            self._cache[label] = project
            return result

    def _write(self, label: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path(label), data)

    async def get(self, label: str) -> dict[str, Any] | None:
        return copy.deepcopy(self._read(label)) if is_label(label) else None

    def _legacy(self) -> dict[str, str]:
        try:
            got = json.loads(self.legacy.read_text(encoding="utf-8")) if self.legacy else {}
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in got.items() if isinstance(v, str)} if isinstance(got, dict) else {}

    def _with_legacy(self, project: dict[str, Any], name: str, version: str) -> dict[str, Any]:
        """``project`` (changed in place) with the legacy index's prod release of ``version``."""
        old = self._legacy().get(f"{name}\n{version}")
        if old:
            project["versions"].setdefault(version, old)
        return project

    async def check(self, name: str, version: str, owner: str, *, prod: bool, force: bool) -> None:
        project = copy.deepcopy(self._read(project_label(name))) or empty_project(name)
        self._with_legacy(project, name, version)
        ReleaseRules.check(project, name, version, owner, prod=prod, force=force)

    async def record(self, name: str, version: str, task_id: str, owner: str, *, prod: bool,
                     force: bool, branch: str | None) -> dict[str, Any]:
        at = protocol.now_ms()
        return dict(await self._change(name, lambda p: ReleaseRules.record(
            self._with_legacy(p, name, version), name, version, task_id, owner, prod=prod, force=force,
            branch=branch, at=at)))

    async def promote(self, name: str, version: str, task_id: str, owner: str) -> str | None:
        at = protocol.now_ms()
        previous: str | None = await self._change(
            name, lambda p: ReleaseRules.promote(p, name, version, task_id, owner, at=at))
        return previous

    async def resolve(self, label: str, branch: str | None) -> str | None:
        project = self._read(label) if is_label(label) else None
        if project is None:
            return None
        found = project["prod"] if branch is None else project["branches"].get(branch)
        return found if isinstance(found, str) else None

    async def task_ids(self) -> set[str]:
        def scan() -> set[str]:
            ids: set[str] = set(self._legacy().values())
            for path in self.root.glob("*.json") if self.root.is_dir() else ():
                project = self._read(path.stem)
                if project is not None:
                    ids |= ReleaseRules.kept(project)
            return ids
        return await asyncio.to_thread(scan)
