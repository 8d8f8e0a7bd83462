"""Tasks: submit, run, emit, attach, cancel — the server's behaviour without its transport.

One service for both modes, made of the parts it is given (``backends/``: ``embedded.py``
and ``redis/`` side by side, each with a ``make_service``):

* ``store`` (``store.TaskStore``), ``queue`` (``queue.JobQueue``), ``artifacts``
  (``artifacts.ArtifactStore``);
* ``bus`` (``bus.MessageBus``): a stored message to the task's watchers in this process
  (Socket.IO sockets and dashboard pages), and attaching one to a task (embedded: handed on as
  ``emit`` stores it; Redis: the stream is the delivery, each gateway reads the ones it needs);
* ``policy`` (``RunPolicy``): what differs between one process and a deployment of workers —
  starting an attempt (retries), what a cancel and a cancelled pipeline mean, publish locks,
  whether SIGTERM drains, the retention sweep's guard;
* ``companions``: background parts started and stopped with it (Redis: presence, no-worker watch).

Every message of a task goes through ``emit``: stored first (which assigns the next seq), then
handed to the bus, both under the task's lock (``bus.TaskLocks``), which the bus's ``attach``
takes to join a socket to the live messages, so a client sees every message once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol
from urllib.parse import quote

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server import policy
from flow_kit_cloudbuild.server.cancelling import cancel_and_wait, wait_ended
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.errors import RequestError, StepFailed, no_such_task, not_your_task
from flow_kit_cloudbuild.server.runtime.process import LogLimitExceeded, kill_orphaned_groups
from flow_kit_cloudbuild.server.runtime.sandbox import make_sandbox
from flow_kit_cloudbuild.server.storage.artifacts import ArtifactStore
from flow_kit_cloudbuild.server.storage.releases import LocalReleases, Releases, project_label
from flow_kit_cloudbuild.server.tasks import housekeeping
from flow_kit_cloudbuild.server.tasks.bus import FLUSH_LIMIT, MessageBus, TaskLocks
from flow_kit_cloudbuild.server.tasks.pipeline import Paths, Pipeline, TaskChannel
from flow_kit_cloudbuild.server.tasks.queue import JobQueue
from flow_kit_cloudbuild.server.tasks.sources import GitSource
from flow_kit_cloudbuild.server.tasks.store import TaskStore, public_record

log = logging.getLogger("flow_kit_cloudbuild.server")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a SHA-1 or SHA-256 object name


class RunPolicy(Protocol):
    """Where the modes differ in running tasks (``EmbeddedPolicy``, ``redis.policy.RedisPolicy``)."""

    @property
    def drains_on_sigterm(self) -> bool:
        """Whether SIGTERM fails the running builds and delivers that first (cli.py)."""

    @property
    def sweep_guard(self) -> Any:
        """None, or () -> an async context manager yielding whether to sweep now."""

    @property
    def publish_locks(self) -> Any:
        """None, or a ``pipeline.PublishLocks``: publishes serialised across processes."""

    @property
    def process_id(self) -> str:
        """Who runs the pipelines (names the publish lock's holder)."""

    async def begin(self, service: TaskService, task_id: str) -> tuple[dict[str, Any], int] | None:
        """Start an attempt: (the record, the attempt number), or None when it must not run."""

    def watch(self, service: TaskService, task_id: str, work: asyncio.Task[Any]) -> Callable[[], Any]:
        """Watch a running pipeline (cancel requests); returns what ends the watch."""

    async def cancel(self, service: TaskService, record: dict[str, Any]) -> None:
        """A client asked to cancel this unfinished task."""

    async def cancelled(self, service: TaskService, task_id: str, step: str) -> bool:
        """Finish a task whose pipeline was cancelled; True when the cancellation must go on."""


class TaskService:
    def __init__(self, cfg: ServerConfig, *, store: TaskStore, queue: JobQueue, artifacts: ArtifactStore,
                 bus: MessageBus, policy: RunPolicy, locks: TaskLocks | None = None,
                 paths: Paths | None = None, companions: Iterable[Any] = (),
                 releases: Releases | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.artifacts = artifacts
        self.bus = bus
        self.policy = policy
        self.locks = locks or TaskLocks()
        self.paths = paths or Paths(cfg.data_dir)
        self.companions: list[Any] = list(companions)  # start()/stop() with the service
        # the release index: name owners, prod and branch pointers (storage/releases.py)
        self.releases: Releases = releases or LocalReleases(cfg.data_dir / "releases",
                                                            legacy=cfg.data_dir / "artifacts" / "releases.json")
        # called with (project label, task id) after a project's prod pointer moved (a prod
        # release or a promote), e.g. to copy the release to a delivery target
        self.on_prod_changed: list[Callable[[str, str], Awaitable[None]]] = []
        self.git = GitSource(self.paths.git_cache, cfg.allowed_protocols)
        self.sandbox = make_sandbox(cfg) if cfg.sandbox else None
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False
        self._housekeeping: asyncio.Task[None] | None = None
        self._provenance_key: Any = None
        # build-cache entries are signed with the provenance key: a hit is attested as a build
        self.paths.build_cache.key = self.provenance_key

    @property
    def stopping(self) -> bool:
        """True once the service began to stop (drain or stop)."""
        return self._stopping

    @property
    def sweep_guard(self) -> Any:
        """The policy's guard of the retention sweep (housekeeping.run_periodically), or None."""
        return self.policy.sweep_guard

    def running(self, task_id: str) -> asyncio.Task[Any] | None:
        """The pipeline of ``task_id`` running in this process, if any."""
        return self._running.get(task_id)

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        for p in (self.paths.work, self.paths.uploads, self.paths.cache):
            await asyncio.to_thread(p.mkdir, parents=True, exist_ok=True)
        unfinished = await self.store.unfinished()  # a store shared by workers has none to close
        if unfinished:
            orphans = await asyncio.to_thread(kill_orphaned_groups, self.paths.work,
                                              [r["taskId"] for r in unfinished])
            if orphans:
                log.warning("killed %d build process group(s) left running by a crashed server",
                            len(orphans))
        for record in unfinished:
            await self.finish(record["taskId"], protocol.STATE_FAILED,
                              f"the server restarted while this task was in {record.get('state')}; "
                              "publish again", step=record.get("step") or "queued")
        await self.bus.start()
        for companion in self.companions:
            await companion.start()
        await self.queue.start(self.run)
        self.start_housekeeping()

    def start_housekeeping(self) -> None:
        """Retention: expired uploads, old tasks and artifacts (housekeeping.py), now and periodically."""
        self._housekeeping = asyncio.create_task(housekeeping.run_periodically(self), name="cloudbuild-retention")

    async def drain(self) -> None:
        """End the running builds while their watchers are still connected.

        Embedded, each fails with "the server stopped while this task was in STEP", and that
        final message is on its way to the watchers before this returns: on SIGTERM the server
        runs this before it closes the connections (cli.py, when ``policy.drains_on_sigterm``),
        so ``flow publish`` hears the outcome instead of trying to reconnect. ``stop`` runs it
        too (a second time nothing is left).
        """
        self._stopping = True
        if self._housekeeping is not None:
            await cancel_and_wait(self._housekeeping)
        while self.companions:  # a stopping worker is no longer counted at once
            with contextlib.suppress(Exception):
                await self.companions.pop().stop()
        await self.queue.stop()  # running pipelines are cancelled; the policy says how they end
        await wait_ended(*self._running.values())
        await self.bus.flush(FLUSH_LIMIT)

    async def stop(self) -> None:
        await self.drain()
        await self.bus.stop()
        await self.store.close()

    # -- messages ------------------------------------------------------------------------------
    async def emit(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        """Store the task's next message, then hand it to the bus, as one step a cancellation
        cannot split: a pipeline cancelled while its log line was being stored stops waiting, but
        the line is stored and handed on all the same. (Split, the store's write went on in its
        thread while the seq it took was given back, so the cancel's final message got the same
        seq, and a watcher that had that seq dropped the final message as a repeat.)"""
        return await asyncio.shield(self._emit(task_id, action, message, **extra))

    async def _emit(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        async with self.locks.get(task_id):
            msg = await self.store.append(task_id, action, message, **extra)
            await self.bus.publish(task_id, msg)
        return msg

    async def notice(self, task_id: str, step: str, text: str) -> None:
        """A line of the server's own in the task's log (stderr)."""
        await self.emit(task_id, protocol.ACTION_LOG, text, step=step, stream="stderr", lines=1)

    async def replay(self, sid: str, task_id: str, after_seq: int) -> None:
        """Send stored messages after ``after_seq`` to one socket, then the live ones (the bus)."""
        await self.bus.attach(sid, task_id, after_seq)

    # -- requests ------------------------------------------------------------------------------
    async def owned(self, task_id: Any, token_hash: str) -> dict[str, Any]:
        """The task's record, if ``token_hash`` created it (else not-found / forbidden)."""
        if not policy.is_id(task_id):
            raise RequestError(protocol.ERROR_NOT_FOUND if isinstance(task_id, str)
                               else protocol.ERROR_BAD_REQUEST, "no such task; check the task id")
        record = await self.store.get(task_id)
        if record is None:
            raise no_such_task(task_id)
        if not secrets.compare_digest(record.get("tokenHash", ""), token_hash):
            raise not_your_task(task_id)
        return record

    async def submit(self, data: Any, token_hash: str, *, retry_of: str | None = None) -> str:
        req = policy.check_publish(data, self.cfg)
        if req["source"] == "upload":
            await self.check_upload(req["uploadId"], token_hash)
        # a name another token owns, or a released version without force: refused before building
        # (and checked again, atomically, when the build is recorded: _record_release)
        await self.releases.check(req["name"], req["version"], token_hash, prod=req["prod"], force=req["force"])
        task_id = secrets.token_hex(12)
        # the build number users call it by (#1, #2, ... per token and project; dashboard)
        number = await self.store.next_number(token_hash, req["name"])
        if req["source"] == "upload":  # one upload feeds one task; it is deleted when the task ends
            await housekeeping.claim_upload(self.paths.upload_store, req["uploadId"], task_id)
        try:
            await self.store.create({
                "taskId": task_id, "name": req["name"], "version": req["version"], "state": "queued",
                "step": "queued", "createdAt": protocol.now_ms(), "finishedAt": None, "prod": req["prod"],
                "artifacts": [], "error": None, "tokenHash": token_hash, "request": req, "attempt": 1, "number": number,
                **({"retryOf": retry_of} if retry_of else {}),
            })
        except BaseException:
            if req["source"] == "upload":
                await housekeeping.unclaim_upload(self.paths.upload_store, req["uploadId"])
            raise
        return task_id

    async def retry(self, owner: str, task_id: str) -> str:
        """Build a finished task's source again as a new task (the dashboard's Retry): the same
        request, and for git the commit the first build checked out (a moved branch is not
        "the same source"); only the token that made the task may. Returns the new task's id,
        queued. An upload is deleted when its build ends, so such a task is refused."""
        record = await self.owned(task_id, owner)
        if record.get("state") not in protocol.FINAL:
            raise RequestError(protocol.ERROR_BAD_REQUEST,
                               f"task {task_id} is still {record.get('state')}; retry it once it has ended")
        req = dict(record.get("request") or {})
        if req.get("source") != "git":
            raise RequestError(protocol.ERROR_REFUSED,
                               f"task {task_id} built an uploaded archive, which was deleted when its "
                               "build ended; run flow publish again")
        commit = await self._checked_out(task_id)
        if commit:
            req["ref"] = commit
        req.pop("uploadId", None)
        new_id = await self.submit(req, owner, retry_of=task_id)
        await self.enqueue(new_id)
        return new_id

    async def _checked_out(self, task_id: str) -> str | None:
        """The commit a git task's download step checked out (its ``commit`` message field,
        which only the server writes), looked for until the build moved past that step."""
        async for msg in self.store.messages(task_id, 0):
            data = msg.get("data") or {}
            payload = data.get("payload") or {}
            commit = payload.get("commit")
            if data.get("action") == protocol.ACTION_LOG and isinstance(commit, str) and _COMMIT_RE.fullmatch(commit):
                return commit
            if data.get("action") in ("install", "build", "publish") or protocol.is_final(str(data.get("action"))):
                return None
        return None

    async def enqueue(self, task_id: str) -> None:
        """Announce the new task (seq 1) and hand it to the queue."""
        await self.queue.waiting()  # how many wait: a shared queue is asked
        record = await self.store.get(task_id)
        req = record["request"] if record else {}
        src = f"{req.get('repo')} at {req.get('ref')}" if req.get("source") == "git" else "an uploaded archive"
        await self.emit(task_id, "queued", f"queued {req.get('name')} {req.get('version')} from {src} "
                                           f"({self.queue.pending()} task(s) ahead)")
        # the group: the queue limits running builds per token (InProcessQueue, RedisStreamQueue)
        await self.queue.put(task_id, group=(record or {}).get("tokenHash", ""))

    async def check_upload(self, upload_id: str, token_hash: str) -> None:
        """The upload exists, is this token's and no task used it yet (else the reason)."""
        raw = await self.paths.upload_store.get_bytes(f"{upload_id}.json")
        try:
            owner = str(json.loads(raw).get("tokenHash", "")) if raw is not None else None
        except (ValueError, AttributeError):
            owner = None
        if owner is None:
            raise RequestError(protocol.ERROR_NOT_FOUND, f"no upload {upload_id}; upload the source again")
        if not secrets.compare_digest(owner, token_hash):
            raise RequestError(protocol.ERROR_FORBIDDEN, "that upload was made with another token; upload again")
        used_by = await housekeeping.claimant(self.paths.upload_store, upload_id)
        if used_by is not None:  # running, or ended (its sources deleted): uploads are single-use
            raise housekeeping.used_upload(upload_id, used_by)

    async def cancel(self, task_id: str, token_hash: str) -> dict[str, Any]:
        record = await self.owned(task_id, token_hash)
        if record["state"] in protocol.FINAL:
            return protocol.ok(state=record["state"])
        await self.policy.cancel(self, record)
        return protocol.ok()

    async def promote(self, owner: str, task_id: str) -> dict[str, Any]:
        """Point the project's prod alias at ``task_id``, an earlier successful build of ``owner``
        (rollback, or a preview made prod), atomically (``Releases.promote``).

        Refused (``RequestError``) for another token's task (not-found / forbidden), a task that
        did not end done or whose files retention deleted (refused), a name another token owns
        (name-taken). Returns ``ok`` with ``project`` (its label), ``taskId``, ``previous`` (the
        prod task before, or None), ``url`` (the prod alias) and ``deploymentUrl``.
        """
        record = await self.owned(task_id, owner)
        if record.get("state") != protocol.STATE_DONE:
            raise RequestError(protocol.ERROR_REFUSED,
                               f"task {task_id} ended {record.get('state')}, not done; promote a successful build")
        if await self.artifacts.list(task_id) is None:
            raise RequestError(protocol.ERROR_REFUSED,
                               f"the files of task {task_id} were deleted (retention); publish it again")
        previous = await self.releases.promote(record["name"], record["version"], task_id, owner)
        label = project_label(record["name"])
        await self._prod_changed(label, task_id)
        return protocol.ok(project=label, taskId=task_id, previous=previous, url=self.cfg.deploy_url(label),
                           deploymentUrl=self.cfg.deploy_url(task_id))

    async def project_releases(self, owner: str, name: Any) -> dict[str, Any]:
        """``flow releases``: the prod alias, branch aliases and release history of the project
        ``name`` (a name or its label), for the token that owns it; anyone else, and a project
        never released, get not-found (the same answer, so a name's owner stays private)."""
        if not isinstance(name, str) or not 0 < len(name) <= protocol.MAX_NAME:
            raise RequestError(protocol.ERROR_BAD_REQUEST, "give a project name of at most 214 characters")
        label = project_label(name)
        project = await self.releases.get(label)
        held = (project or {}).get("owner")
        if project is None or not isinstance(held, str) or not secrets.compare_digest(held, owner):
            raise RequestError(protocol.ERROR_NOT_FOUND,
                               f"no releases of {name[:100]!r} made with this token; publish it with --prod first")
        url = self.cfg.deploy_url
        return {
            "project": label, "name": project.get("name"), "prod": project.get("prod"),
            "url": url(label),
            "branches": {b: {"taskId": t, "url": url(f"{label}--{b}")} for b, t in sorted(project["branches"].items())},
            "history": [{**e, "deploymentUrl": url(e["taskId"])} for e in reversed(project["history"])],
        }

    async def _prod_changed(self, label: str, task_id: str) -> None:
        """Tell ``on_prod_changed``'s callbacks; one that fails is logged, the release stands."""
        for callback in list(self.on_prod_changed):
            try:
                await callback(label, task_id)
            except Exception:
                log.exception("an on_prod_changed callback failed for %s -> %s", label, task_id)

    async def _record_release(self, task_id: str, record: dict[str, Any]) -> list[dict[str, str]]:
        """Record a successful build in the release index: the prod alias (prod publishes) and its
        branch's alias. Returns the aliases that now serve it (``{"kind": "prod"|"branch",
        "url"}``); raises RequestError when the
        name was taken, or the version released, while this task ran."""
        req = record.get("request") or {}
        moved = await self.releases.record(record["name"], record["version"], task_id, record.get("tokenHash", ""),
                                           prod=bool(req.get("prod")), force=bool(req.get("force")),
                                           branch=req.get("branch"))
        label = project_label(record["name"])
        aliases = []
        if moved.get("prodChanged"):
            aliases.append({"kind": "prod", "url": self.cfg.deploy_url(label)})
        if moved.get("branch"):
            aliases.append({"kind": "branch", "url": self.cfg.deploy_url(f"{label}--{moved['branch']}")})
        if moved.get("skipped"):
            await self.notice(task_id, "publish", str(moved["skipped"]))
        if moved.get("prodChanged"):
            await self._prod_changed(label, task_id)
        return aliases

    async def drop_upload(self, record: dict[str, Any] | None) -> None:
        """Delete the upload of a task that ended (whatever the outcome, its sources go; the
        record that this task used it stays, see housekeeping)."""
        upload_id = housekeeping.upload_of(record)
        if upload_id is not None:
            try:
                await housekeeping.release_upload(self.paths.upload_store, upload_id)
            except Exception as exc:  # noqa: BLE001 - the store is away: the sweep deletes it later
                log.warning("could not delete the sources of upload %s (%s); the retention sweep will", upload_id, exc)

    # -- running -------------------------------------------------------------------------------
    def channel(self, task_id: str) -> TaskChannel:
        """The pipeline's way to speak for ``task_id``: emit its messages, record its step."""
        return _Channel(self, task_id)

    async def run(self, task_id: str) -> None:
        """Queue handler: run one attempt of a task's pipeline to a final state."""
        started = await self.policy.begin(self, task_id)
        if started is None:
            return
        record, attempt = started
        pipeline = Pipeline(
            task_id=task_id, request=record["request"], attempt=attempt, cfg=self.cfg,
            paths=self.paths, git=self.git, artifacts=self.artifacts, channel=self.channel(task_id),
            tenant=record.get("tokenHash", ""), sandbox=self.sandbox,
            publish_locks=self.policy.publish_locks, lock_owner=f"task {task_id} on {self.policy.process_id}")
        timeout = record["request"].get("timeout", self.cfg.default_timeout)
        began = protocol.now_ms()

        async def body() -> list[dict[str, Any]]:
            async with asyncio.timeout(timeout):
                return await pipeline.run()

        work = asyncio.create_task(body(), name=f"cloudbuild-task-{task_id}")
        self._running[task_id] = work
        unwatch = self.policy.watch(self, task_id, work)
        try:
            await self._conclude(task_id, record, pipeline, timeout, work, began)
        finally:
            unwatch()
            self._running.pop(task_id, None)
            if not self.cfg.keep_workdirs:
                await asyncio.to_thread(shutil.rmtree, pipeline.dir, True)

    async def _conclude(self, task_id: str, record: dict[str, Any], pipeline: Pipeline,
                        timeout: float, work: asyncio.Task[list[dict[str, Any]]], started: int) -> None:
        """Wait for the pipeline ``work`` and finish the task with its outcome.

        Every mode ends tasks the same way; only what a cancellation means depends on who
        cancelled, which the policy's ``cancelled`` decides.
        """
        try:
            stored = await work
        except StepFailed as exc:
            await self.finish(task_id, exc.final_state, exc.message, step=pipeline.step)
        except TimeoutError:
            await self.finish(task_id, protocol.STATE_TIMED_OUT,
                              f"the task ran longer than its timeout of {timeout} s and was stopped "
                              f"during {pipeline.step}; make the build faster or pass a longer timeout",
                              step=pipeline.step)
        except LogLimitExceeded as exc:
            await self.finish(task_id, protocol.STATE_FAILED, str(exc), step=pipeline.step)
        except asyncio.CancelledError:
            if await self.policy.cancelled(self, task_id, pipeline.step):
                raise
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            await self.finish(task_id, protocol.STATE_FAILED,
                              f"internal error during {pipeline.step} ({type(exc).__name__}); "
                              "see the server log", step=pipeline.step)
        else:
            try:  # before the release moves an alias: a deployment is never served without its provenance
                provenance = await self._attest(task_id, record, pipeline, stored, started)
            except Exception as exc:  # noqa: BLE001 - a key or store problem: say so, release nothing
                log.exception("could not sign or store the provenance of task %s", task_id)
                await self.finish(task_id, protocol.STATE_FAILED,
                                  f"could not sign and store this build's provenance ({type(exc).__name__}); "
                                  "see the server log", step="publish")
                return
            try:
                aliases = await self._record_release(task_id, record)
            except RequestError as exc:  # taken or released while this task ran
                message = (f"{record['name']} {record['version']} was released to prod while this task ran; "
                           "publish with force to overwrite" if exc.code == protocol.ERROR_EXISTS
                           else f"refused: {exc.message}")
                await self.finish(task_id, protocol.STATE_FAILED, message, step="publish")
                return
            await self._remember_build(task_id, record, pipeline, stored)
            base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{task_id}/"
            artifacts = [{"name": a["name"], "url": base + quote(a["name"]), "size": a["size"]}
                         for a in stored]
            origin = pipeline.cache_entry_origin()
            cached = f" (from cache: #{origin.get('number')})" if origin else ""
            await self.finish(task_id, protocol.STATE_DONE,
                              f"published {len(artifacts)} artifact(s) of {record['name']} {record['version']}{cached}",
                              artifactUrl=base, artifacts=artifacts, deploymentUrl=self.cfg.deploy_url(task_id),
                              aliases=aliases, provenanceUrl=provenance, cachedFrom=origin)

    def provenance_key(self) -> Any:
        """The Ed25519 key that signs provenance (loaded once: ``provenance_key_of``)."""
        if self._provenance_key is None:
            self._provenance_key = provenance_key_of(self.cfg)
        return self._provenance_key

    async def _attest(self, task_id: str, record: dict[str, Any], pipeline: Pipeline,
                      stored: list[dict[str, Any]], started: int) -> str:
        """Sign and store the provenance of a successful build (``attestation.py``): what it
        published (each file's sha256), from which source, by which command and toolchain, when;
        returns the URL it is served at (beside the deployment)."""
        from flow_kit_cloudbuild import __version__, attestation

        req = record.get("request") or {}
        key = await asyncio.to_thread(self.provenance_key)
        origin = pipeline.cache_entry_origin()
        statement = attestation.make_statement(
            subjects=[{"name": a["name"], "sha256": a["sha256"]} for a in stored],
            builder_id=f"{self.cfg.base_url}/", invocation_id=task_id, source=pipeline.source,
            build_command=pipeline.build_cmd, toolchain=pipeline.toolchain,
            build_env_names=sorted(self.cfg.build_env), kit_version=__version__, build_key=pipeline.build_key,
            started_ms=started, finished_ms=protocol.now_ms(),
            cached_from=origin.get("taskId") if origin else None,
            project={"name": record["name"], "version": record["version"], "prod": bool(req.get("prod"))})
        envelope = await asyncio.to_thread(attestation.sign, statement, key)
        await self.artifacts.put_provenance(task_id, envelope)
        return self.cfg.deploy_url(task_id).rstrip("/") + attestation.PROVENANCE_PATH

    async def _remember_build(self, task_id: str, record: dict[str, Any], pipeline: Pipeline,
                              stored: list[dict[str, Any]]) -> None:
        """A done task's build-cache entry (``storage/build_cache.py``), written last: a process
        killed before this leaves no entry. A hit moves the entry to this task's copy of the files
        (the newest, so the entry outlives the first copy's retention) and keeps who built them."""
        if not pipeline.build_key:
            return
        origin = pipeline.cache_entry_origin() or {"taskId": task_id, "number": record.get("number")}
        try:
            await self.paths.build_cache.put(pipeline.cache_scope, pipeline.build_key, task_id=task_id,
                                             number=record.get("number"), artifacts=stored,
                                             built_by=origin, at=protocol.now_ms())
        except Exception as exc:  # noqa: BLE001 - the next publish builds again; the task stands
            log.warning("could not store the build-cache entry of task %s (%s)", task_id, exc)

    async def finish(self, task_id: str, state: str, message: str, *, step: str | None = None,
                     **extra: Any) -> None:
        """Record the final state, drop the task's upload, emit the final message, close the task."""
        fields: dict[str, Any] = {"state": state, "finishedAt": protocol.now_ms()}
        payload = dict(extra)
        if state == protocol.STATE_DONE:
            fields["artifacts"] = extra.get("artifacts", [])
            if "deploymentUrl" in extra:
                fields["deploymentUrl"], fields["aliases"] = extra["deploymentUrl"], extra.get("aliases", [])
            for key in ("provenanceUrl", "cachedFrom"):  # the build page shows them
                if extra.get(key) is not None:
                    fields[key] = extra[key]
        else:
            fields["error"] = message
            payload["step"] = step
            fields["step"] = step
        record = await self.store.update(task_id, **fields)
        await self.drop_upload(record)  # its build is over: the sources go
        await self.emit(task_id, state, message, **payload)
        await self.close_task(task_id)

    async def close_task(self, task_id: str) -> None:
        """After a task's final message: release what the store and the locks hold for it."""
        await self.store.close(task_id)
        self.locks.drop(task_id)


def provenance_key_of(cfg: ServerConfig) -> Any:
    """The key that signs provenance: ``--provenance-key``, else derived from ``--secret-file``
    (every process of a Redis deployment has it: the same key with nothing new to share), else
    made once in the data dir (an embedded server keeps it across restarts). Blocking."""
    from flow_kit_cloudbuild.server import signing_key

    if cfg.provenance_key is not None:
        return signing_key.load_key(cfg.provenance_key)
    if cfg.secret_given:
        return signing_key.derive_key(cfg.secret)
    return signing_key.load_or_create(cfg.data_dir / "provenance-key.pem")


class _Channel:
    """``pipeline.TaskChannel`` of one task of a ``TaskService``."""

    __slots__ = ("service", "task_id")

    def __init__(self, service: TaskService, task_id: str) -> None:
        self.service, self.task_id = service, task_id

    async def emit(self, action: str, message: str, **extra: Any) -> dict[str, Any]:
        return await self.service.emit(self.task_id, action, message, **extra)

    async def set_step(self, step: str) -> None:
        fields: dict[str, Any] = {"state": step, "step": step}
        if step == "prepare":  # the first build step: when the build started (the dashboard shows it)
            fields["startedAt"] = protocol.now_ms()
        await self.service.store.update(self.task_id, **fields)


def public(record: dict[str, Any]) -> dict[str, Any]:
    return public_record(record)
