"""The per-task state machine: prepare → download → install → build → publish.

Each step announces itself with a message, streams the output of its commands as "log"
messages, checks every exit status, and raises StepFailed to stop the task at the first
failure. The work directory is made by the server under its data dir (never from user input).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import stat
import sys
from pathlib import Path
from typing import Any, Protocol

from flow_kit_cloudbuild import __version__ as KIT_VERSION
from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server import policy
from flow_kit_cloudbuild.server.cancelling import cancel_and_wait
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.errors import RequestError, StepFailed
from flow_kit_cloudbuild.server.runtime import cache_quota, egress, uids
from flow_kit_cloudbuild.server.runtime.cgroups import CgroupsUnavailable, Outcome
from flow_kit_cloudbuild.server.runtime.limits import CommandRuntime
from flow_kit_cloudbuild.server.runtime.process import LogBudget, run_command
from flow_kit_cloudbuild.server.runtime.sandbox import Sandbox, SandboxSpec, disk_usage, owner_dirs
from flow_kit_cloudbuild.server.runtime.toolchain import versions_async
from flow_kit_cloudbuild.server.storage.artifacts import ArtifactQuotaExceeded, ArtifactStore, safe_artifact_name
from flow_kit_cloudbuild.server.storage.build_cache import BuildCache, UntrustedEntry, same_files, scope_of
from flow_kit_cloudbuild.server.storage.objects import LocalObjectStore, ObjectStore
from flow_kit_cloudbuild.server.tasks import build_key
from flow_kit_cloudbuild.server.tasks.sources import GitSource, unpack_archive
from flowcore.api import uv_binary

OUTPUT_DIRS = ("dist", "build")
CACHE_KINDS = ("npm", "uv", "pip")
#: The caches a command uses, by its program's name (their LRU markers are touched when it runs).
CACHES_OF = {"npm": ("npm",), "npx": ("npm",), "node": ("npm",), "uv": ("uv",),
             "python": ("pip", "uv"), "python3": ("pip", "uv"), "pip": ("pip",)}
SKIPPED_EXAMPLES = 3  # names a "skipped N files" line shows
DISK_CHECK_EVERY = 1.0   # seconds between two looks at the work directory's size
#: What a build prints when it hits a sandbox limit (any case), by hint.
_LIMIT_WORDS = {"memory": ("MemoryError", "Cannot allocate memory", "out of memory", "ENOMEM"),
                "processes": ("Resource temporarily unavailable", "EAGAIN", "fork: retry"),
                "file size": ("File too large", "EFBIG")}
_LIMIT_RES = {hint: re.compile("|".join(map(re.escape, words)), re.I) for hint, words in _LIMIT_WORDS.items()}
_ANY_LIMIT = re.compile("|".join(r.pattern for r in _LIMIT_RES.values()), re.I)
_LIMIT_LOWER = tuple(w.lower() for words in _LIMIT_WORDS.values() for w in words)


def _limit_hint(text: str) -> str:
    """The limit hint of the first line of ``text`` that names one ("" for none).

    As if each line were searched in turn: no word spans a newline, so the leftmost match
    in the whole text is in the first line that has one, and that line decides. ASCII text
    (nearly every log) is lowered once and searched with ``str.find`` (the regex with
    IGNORECASE tries every alternative at every position: 0.7 µs per line).
    """
    if text.isascii():
        low = text.lower()
        found = [i for i in map(low.find, _LIMIT_LOWER) if i >= 0]
        if not found:
            return ""
        pos = min(found)
    else:
        hit = _ANY_LIMIT.search(text)
        if hit is None:
            return ""
        pos = hit.start()
    end = text.find("\n", pos)
    line = text[text.rfind("\n", 0, pos) + 1:] if end < 0 else text[text.rfind("\n", 0, pos) + 1:end]
    return next((hint for hint, pattern in _LIMIT_RES.items() if pattern.search(line)), "")


class Paths:
    """Where things live under the data dir, and the store of uploads."""

    def __init__(self, data_dir: Path, objects: ObjectStore | None = None) -> None:
        self.data = data_dir
        self.tasks = data_dir / "tasks"
        self.work = data_dir / "work"
        self.uploads = data_dir / "uploads"  # where an upload is received before it is stored
        # the stored uploads (<id>.tar.gz, .json, .task; housekeeping.py): ``objects``'s uploads/
        # (--store s3://...: every gateway and worker reaches it), else this data dir's uploads/
        self.upload_store: ObjectStore = (objects.child("uploads") if objects is not None
                                          else LocalObjectStore(self.uploads))
        self.artifacts = data_dir / "artifacts"
        self.cache = data_dir / "cache"
        self.git_cache = self.cache / "git"
        # the build cache's entries (storage/build_cache.py): beside the artifacts they name, in
        # the store every process reaches (the data dir, a Redis deployment's shared dir, or S3)
        self.build_cache = BuildCache(objects.child("build-cache") if objects is not None
                                      else LocalObjectStore(data_dir / "build-cache"))

    def attempt_dir(self, task_id: str, attempt: int) -> Path:
        assert policy.is_id(task_id)
        return self.work / f"{task_id}-{attempt}"

    async def upload(self, upload_id: str, dest: Path, limit: int) -> Path:
        """Fetch the upload's archive from the store into ``dest`` (the task's own work dir:
        the worker may be another machine than the gateway that took it), at most ``limit``
        bytes (the upload limit); returns ``dest``."""
        assert policy.is_id(upload_id)
        opened = await self.upload_store.open(f"{upload_id}.tar.gz")
        if opened is None:
            raise StepFailed(f"the upload {upload_id} is gone from the server's store (expired, or its "
                             "task ended); run flow publish again")
        too_large = f"the stored upload is larger than {limit} bytes (the upload limit); upload less"
        try:
            if opened.size > limit:
                raise StepFailed(too_large)
            got = 0
            with open(dest, "wb") as out:
                async for block in opened.chunks:
                    got += len(block)
                    if got > limit:
                        raise StepFailed(too_large)
                    await asyncio.to_thread(out.write, block)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            await opened.chunks.aclose()  # type: ignore[attr-defined]
        return dest


class TaskChannel(Protocol):
    """All a pipeline says about its task: its messages (stored, then sent) and its current step.

    The service gives each pipeline one (``service.TaskService.channel``); the pipeline never
    sees the store or the transport.
    """

    async def emit(self, action: str, message: str, **extra: Any) -> Any:
        """The task's next message (``protocol.make_message``'s fields)."""

    async def set_step(self, step: str) -> None:
        """Record that the task entered ``step`` (its record's ``state`` and ``step``)."""


class PublishLocks(Protocol):
    """Serialises publishes across processes (Redis mode: ``redis.locks.RedisLocks``)."""

    def hold(self, name: str, owner: str, *, on_wait: Any = None) -> Any:
        """An async context manager holding the lock ``name`` for ``owner``."""


class Pipeline:
    def __init__(self, *, task_id: str, request: dict[str, Any], attempt: int, cfg: ServerConfig,
                 paths: Paths, git: GitSource, artifacts: ArtifactStore, channel: TaskChannel,
                 tenant: str = "", sandbox: Sandbox | None = None,
                 publish_locks: PublishLocks | None = None, lock_owner: str = "") -> None:
        self.task_id = task_id
        self.tenant = tenant        # the token hash that owns the task: its caches, its build uid
        self.sandbox = sandbox      # None: --no-sandbox (trusted single-user setups only)
        self.identity: tuple[int, int] | None = None  # the build's uid/gid, found in prepare()
        self.caches = owner_dirs(paths.cache, tenant, CACHE_KINDS)
        self._seen_limit_hint = ""
        self._outcome = Outcome()   # what the kernel refused the last command (its cgroup)
        self.req = request
        self.cfg = cfg
        self.paths = paths
        self.git = git
        self.artifacts = artifacts
        self.channel = channel
        self.publish_locks = publish_locks  # None: one process, no publish to wait for
        self.lock_owner = lock_owner
        self.budget = LogBudget(cfg.max_log_bytes)
        self.dir = paths.attempt_dir(task_id, attempt)
        self.src = self.dir / "src"
        self.venv = self.dir / "venv"
        self.step = "queued"
        self.build_cmd: list[str] = []
        self._egress_socket: Path | None = None  # while an install command runs: its egress proxy
        # what the provenance names and the build cache keys on (found by download() and key())
        self.source: dict[str, Any] = {}       # {"kind": "git", repo, ref, commit} or {"kind": "upload", sha256}
        self.toolchain: dict[str, str] = {}
        self.build_key = ""                   # "" until computed (or when the build cache is off)
        self.cache_scope = scope_of(cfg.cache_scope, tenant)
        self.cached_from: dict[str, Any] | None = None  # a hit: the entry whose artifacts this task reuses

    # -- plumbing ----------------------------------------------------------------------------
    async def _enter(self, step: str, message: str) -> None:
        self.step = step
        await self.channel.set_step(step)
        await self.channel.emit(step, message)

    async def _log(self, lines: list[str], stream: str) -> None:
        text = "\n".join(lines)
        if self.sandbox is not None and not self._seen_limit_hint:
            self._seen_limit_hint = _limit_hint(text)
        await self.channel.emit(protocol.ACTION_LOG, text, step=self.step, stream=stream, lines=len(lines))

    def env(self) -> dict[str, str]:
        """The whole environment of a build command: nothing of the server's own secrets."""
        path = os.environ.get("PATH") or os.defpath
        if self.venv.is_dir():
            path = f"{self.venv / 'bin'}{os.pathsep}{path}"
        uv = uv_binary()
        if uv:
            path = f"{path}{os.pathsep}{os.path.dirname(uv)}"
        env = {
            "PATH": path, "HOME": str(self.dir / "home"), "TMPDIR": str(self.dir / "tmp"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "CI": "true",
            "npm_config_cache": str(self.caches["npm"]),
            "npm_config_audit": "false", "npm_config_fund": "false",
            "npm_config_update_notifier": "false", "npm_config_progress": "false",
            "UV_CACHE_DIR": str(self.caches["uv"]),
            "PIP_CACHE_DIR": str(self.caches["pip"]),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.venv.is_dir():
            env["VIRTUAL_ENV"] = str(self.venv)
        if self.cfg.offline:
            env.update(UV_OFFLINE="1", npm_config_offline="true", PIP_NO_INDEX="1")
        env.update(egress.trust_env())  # the server's TLS trust (a proxy's CA): --build-env may override
        env.update(self.cfg.build_env)
        return env

    async def _run(self, argv: list[str], what: str, *, network: bool = False, via_egress: bool = False) -> None:
        """Run one command of the project's, confined by the sandbox unless it is switched off.

        ``via_egress`` (install): no network but the egress proxy (egress.py), listening for this
        command only; ``network``: the host's network (the build step with --build-network).
        """
        if via_egress and self.sandbox is not None and self._egress_socket is None:
            proxy = egress.proxy_for(self.cfg, self.cfg.registry_hosts, own_ports=(self.cfg.port,))
            async with proxy.listening(owner=self.identity,
                                       on_refusal=lambda text: self._log([text], "stderr")) as sock:
                self._egress_socket = sock
                try:
                    return await self._run(argv, what)
                finally:
                    self._egress_socket = None
        await self._log(["$ " + " ".join(argv)], "stdout")
        env = self.env()
        if self._egress_socket is not None:
            env.update(egress.proxy_env())
        confine = None
        if self.sandbox is not None:
            if shutil.which(argv[0], path=env["PATH"]) is None:  # bwrap would only say "execvp"
                raise _not_installed(what, argv[0])
            uid, gid = self.identity or (None, None)
            confine = (self.sandbox, SandboxSpec(work=self.dir, caches=tuple(self.caches.values()),
                                                 network=network, uid=uid, gid=gid, egress=self._egress_socket,
                                                 trust=egress.trust_paths(env)))
        self._seen_limit_hint = ""
        used = [self.caches[k] for k in CACHES_OF.get(os.path.basename(argv[0]), ())]
        if used:
            await asyncio.to_thread(cache_quota.touch, used)
        confine, runtime = self._with_runtime(confine)
        command = asyncio.ensure_future(run_command(
            argv, cwd=self.src, env=env, on_line=self._log, budget=self.budget,
            max_line=self.cfg.max_log_line, confine=confine))
        watch = asyncio.ensure_future(self._watch_disk()) if self.sandbox is not None else None
        try:
            waiting = {command} if watch is None else {command, watch}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if watch is not None and watch in done and not command.done():
                await cancel_and_wait(command)
                watch.result()  # raises the disk limit's StepFailed
            code = await command
        except FileNotFoundError:
            raise _not_installed(what, argv[0]) from None
        finally:
            try:
                await cancel_and_wait(command, watch)
            finally:
                if runtime is not None:  # run_command finished it, unless it never started
                    self._outcome = await asyncio.to_thread(runtime.finish)
        if self.sandbox is not None:
            await self._check_disk()
        if code != 0:
            raise StepFailed(f"{what}: `{' '.join(argv)}` {self._how(code)}")

    def _with_runtime(self, confine: tuple[Sandbox, SandboxSpec] | None
                      ) -> tuple[tuple[Sandbox, SandboxSpec] | None, CommandRuntime | None]:
        """``confine`` with a new cgroup and seccomp fd for the command (finished after it)."""
        self._outcome = Outcome()
        if confine is None:
            return None, None
        sandbox, spec = confine
        try:
            runtime = sandbox.command_runtime()
        except CgroupsUnavailable as exc:
            raise StepFailed(f"the server could not limit this command: {exc}; ask the operator") from None
        return (sandbox, dataclasses.replace(spec, runtime=runtime)), runtime

    def _how(self, code: int) -> str:
        """How a command ended, naming the sandbox limit it most likely hit."""
        limits = self.sandbox.limits if self.sandbox is not None else None
        hit = self._limit_hit()
        if hit:
            ended = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            return f"{ended}; it {hit}"
        if code < 0 or code > 128:  # killed by a signal (bubblewrap reports 128 + signal)
            sig = -code if code < 0 else code - 128
            if limits is not None and sig == signal.SIGXFSZ:
                return f"was stopped: it {_file_too_large(limits.file_size)}"
            if code < 0:
                return f"was killed by signal {sig}"
        how = f"exited with status {code}"
        if limits is not None and self._seen_limit_hint == "file size" and limits.file_size:
            how += f"; it {_file_too_large(limits.file_size)}"
        elif limits is not None and self._seen_limit_hint == "processes" and limits.processes:
            how += (f"; it could not start more processes: builds may run {limits.processes} "
                    "(--build-processes)")
        return how

    def _limit_hit(self) -> str:
        """The cgroup limit the kernel enforced on the last command ("" for none): an OOM kill, or
        the limit reached while the build printed that it ran out of memory; refused forks."""
        if self.sandbox is None:
            return ""
        limits, got = self.sandbox.limits, self._outcome
        if self.sandbox.enforces_memory and (
                got.oom_kills or (got.memory_at_limit and self._seen_limit_hint == "memory")):
            return (f"ran out of memory: it reached the memory limit of {_size(limits.memory)} for all its "
                    "processes together, /tmp and page cache included (--build-memory); make the build use "
                    "less or ask the operator to raise it")
        if self.sandbox.cgroups and limits.processes and got.forks_refused:
            return (f"reached the process limit: a build may run {limits.processes} processes and threads at "
                    "once (--build-processes); make it start fewer or ask the operator to raise it")
        return ""

    async def _watch_disk(self) -> None:
        while True:
            await asyncio.sleep(DISK_CHECK_EVERY)
            await self._check_disk()

    async def _check_disk(self) -> None:
        """Stop the build past the work dir's disk or file-count limit (the walk runs in a thread)."""
        assert self.sandbox is not None
        limit, max_files = self.sandbox.limits.disk, self.cfg.build_files
        if not limit and not max_files:
            return
        used = await asyncio.to_thread(disk_usage, self.dir, limit, max_files)
        if limit and used.bytes > limit:
            raise StepFailed(f"the build's work directory passed the disk limit of {_size(limit)} "
                             "(--build-disk; sparse files count at their full size); make the build "
                             "write less or ask the operator to raise it")
        if max_files and used.files > max_files:
            raise StepFailed(f"the build's work directory passed the limit of {max_files:,} files and "
                             "directories (--build-files); make the build write fewer files or ask the "
                             "operator to raise it")

    # -- the steps ---------------------------------------------------------------------------
    async def run(self) -> list[dict[str, Any]]:
        try:
            await self.prepare()
            await self.download()
            await self.key()
            if self.cached_from is not None:
                return await self.publish()
            await self.install()
            await self.build()
            return await self.publish()
        finally:
            if self.cached_from is None:  # a hit ran nothing: the caches are as the last build left them
                await self._enforce_cache_quota()

    async def key(self) -> None:
        """The build key of what download() put in src/ (``build_key.py``), and whether an earlier
        build of this owner's (or team's) made it already: then install and build are skipped."""
        self.toolchain = await versions_async()
        if not self.cfg.build_cache:
            return
        cfg = self.cfg
        tree = await asyncio.to_thread(build_key.tree_digest, self.src)
        locks = await asyncio.to_thread(build_key.lock_digests, self.src)
        self.build_key = build_key.build_key(
            tree=tree, locks=locks, build_command=self.build_cmd, checks=[c.argv for c in cfg.checks],
            toolchain=self.toolchain, build_env=cfg.build_env, offline=cfg.offline,
            build_network=cfg.build_network, registry_hosts=cfg.registry_hosts, kit_version=KIT_VERSION)
        short = self.build_key[:12]
        if self.req.get("noCache"):
            await self._log([f"build cache: not read (--no-cache); build key {short}"], "stdout")
            return
        try:
            entry = await self.paths.build_cache.get(self.cache_scope, self.build_key)
        except UntrustedEntry as exc:  # planted or damaged: never taken, and replaced by this build
            await self.paths.build_cache.forget(self.cache_scope, self.build_key)
            await self._log([f"build cache: the entry for build key {short} is not one this server signed "
                             f"({exc}); deleted it; building"], "stderr")
            return
        if entry is None:
            await self._log([f"build cache: no earlier build of build key {short}; building"], "stdout")
            return
        if not same_files(entry, await self.artifacts.list(entry["taskId"])):  # retention took them
            await self.paths.build_cache.forget(self.cache_scope, self.build_key)
            await self._log([f"build cache: the earlier build of build key {short} was deleted; building"],
                            "stdout")
            return
        self.cached_from = entry
        built_by = entry["builtBy"]
        await self._log([f"build cache: build key {short} was built by #{built_by.get('number')} "
                         f"(task {built_by['taskId']}); install and build skipped"], "stdout")

    async def _enforce_cache_quota(self) -> None:
        """After the build, whatever its outcome: the owner's caches back under their quota (the
        npm, uv and pip caches and each install cache entry, least recently used first)."""
        from flow_kit_cloudbuild.server.runtime import install_cache

        cfg = self.cfg
        if not cfg.cache_max_bytes and not cfg.cache_max_files:
            return
        installs = install_cache.owner_root(self.paths.cache, self.tenant)

        def enforce() -> None:  # one thread: listing the entries walks the owner's install cache
            subtrees = [*self.caches.values(), *install_cache.entries(installs)]
            if cache_quota.enforce(subtrees, cfg.cache_max_bytes, cfg.cache_max_files).subtrees:
                install_cache.entries(installs)  # drops the markers of the entries it evicted
        try:
            await asyncio.to_thread(enforce)
        except OSError as exc:  # never fail a task for it; the next build tries again
            await self._log([f"could not trim the package caches: {exc}"], "stderr")

    async def prepare(self) -> None:
        await self._enter("prepare", "preparing a fresh work directory")
        if self.dir.exists():
            await asyncio.to_thread(shutil.rmtree, self.dir)
        for d in (self.dir, self.dir / "home", self.dir / "tmp", *self.caches.values()):
            d.mkdir(parents=True, exist_ok=True)
        if self.sandbox is not None:
            try:  # the sandbox's allocator: Redis mode gives it the deployment's shared record
                self.identity = await self.sandbox.identity(self.tenant)
            except uids.UidRangeExhausted as exc:
                raise StepFailed(str(exc)) from None
        if self.identity is not None:  # root server: the caches belong to this tenant's build uid
            for cache in self.caches.values():
                if cache.stat().st_uid != self.identity[0]:  # new (or the build user changed)
                    await asyncio.to_thread(self.sandbox.prepare_dir, cache, self.identity)  # type: ignore[union-attr]

    async def download(self) -> None:
        if self.req["source"] == "git":
            await self._enter("download", f"fetching {self.req['repo']} at {self.req['ref']}")
            commit = await self.git.checkout(self.req["repo"], self.req["ref"], self.src, env=self.env(),
                                             on_line=self._log, budget=self.budget)
            # ``commit`` in the payload (no build output carries it): what a retry builds again
            await self.channel.emit(protocol.ACTION_LOG, f"checked out commit {commit}", step=self.step,
                                    stream="stdout", lines=1, commit=commit)
            self.source = {"kind": "git", "repo": self.req["repo"], "ref": self.req["ref"], "commit": commit}
        else:
            await self._enter("download", "unpacking the uploaded source")
            archive = await self.paths.upload(self.req["uploadId"], self.dir / "upload.tar.gz",
                                              self.cfg.max_upload_bytes)
            try:
                self.source = {"kind": "upload", "sha256": await asyncio.to_thread(build_key.file_sha256, archive)}
                count = await asyncio.to_thread(unpack_archive, archive, self.src,
                                                max_bytes=self.cfg.max_unpacked_bytes,
                                                max_files=self.cfg.max_unpacked_files)
            finally:  # the build never sees it
                archive.unlink(missing_ok=True)
            await self._log([f"unpacked {count} entries"], "stdout")
        cmd = self.req.get("buildCmd") or policy.default_build_command(self.src)
        if policy.match_allowlist(cmd, self.cfg.build_commands) is None:
            raise StepFailed(f"refused: the detected build command {' '.join(cmd)!r} is not allowed on this "
                             "server; pass an allowed build command")
        policy.check_scripts_exist(cmd, self.cfg, self.src)
        self.build_cmd = cmd
        if self.identity is not None:  # root server: the build's user owns its work directory
            await asyncio.to_thread(self.sandbox.prepare_dir, self.dir, self.identity)  # type: ignore[union-attr]

    def _plain_file(self, name: str) -> bool:
        p = self.src / name
        return not p.is_symlink() and p.is_file()

    async def install(self) -> None:
        commands: list[tuple[list[str], str]] = []
        if self._plain_file("package-lock.json") and self._plain_file("package.json"):
            commands.append((["npm", "ci"], "npm ci"))
        elif self._plain_file("package.json"):
            commands.append((["npm", "install"], "npm install"))
        python = self._plain_file("pyproject.toml") or self._plain_file("requirements.txt")
        what = ", ".join(w for _, w in commands) + (", a Python venv" if python else "")
        await self._enter("install", f"installing dependencies: {what.lstrip(', ')}" if what
                          else "nothing to install (no package.json, pyproject.toml or requirements.txt)")
        for argv, _ in commands:
            if argv == ["npm", "ci"]:
                await self._npm_ci_cached()
            else:
                await self._run(argv, "install failed", via_egress=True)
        if python:
            await self._install_python()

    async def _npm_ci_cached(self) -> None:
        """`npm ci`, or a copy of the owner's install cache entry for the same install key
        (``runtime/install_cache.py``); a successful `npm ci`'s node_modules is stored before the
        build runs, so nothing the build writes is kept. A node_modules that came with the source
        is left to `npm ci` as it is: no restore, no store."""
        from flow_kit_cloudbuild.server.runtime import install_cache

        tree = self.src / "node_modules"
        key = None
        if not os.path.lexists(tree) and not self.src.is_symlink():
            extra = {"buildEnv": dict(sorted(self.cfg.build_env.items())), "offline": self.cfg.offline,
                     "registryHosts": sorted(self.cfg.registry_hosts), "kit": KIT_VERSION}
            key = await asyncio.to_thread(install_cache.install_key, self.src, self.toolchain, extra)
            if key is None:
                await self._log(["install cache: not used for this project (npm workspaces, install "
                                 "scripts in its package.json, or a .npmrc that is not a plain file)"], "stdout")
        if key is None:
            await self._run(["npm", "ci"], "install failed", via_egress=True)
            return
        root = install_cache.owner_root(self.paths.cache, self.tenant)
        if self.req.get("noCache"):
            await self._log([f"install cache: not read (--no-cache); package-lock.json {key[:12]}"], "stdout")
        elif await self._restore_install(root, key, tree):
            return
        home = self.dir / "home"
        before = await asyncio.to_thread(disk_usage, home)
        await self._run(["npm", "ci"], "install failed", via_egress=True)
        if await asyncio.to_thread(disk_usage, home) != before:
            await self._log([f"install cache: node_modules for package-lock.json {key[:12]} not stored: the "
                             "install wrote into $HOME too, which a later build would not get"], "stdout")
            return
        await self._store_install(root, key, tree)

    async def _restore_install(self, root: Path, key: str, tree: Path) -> bool:
        """Copy the install cache entry ``key`` to ``tree``, owned by the build's uid; False (and
        no ``tree``) when there is none or it could not be restored."""
        from flow_kit_cloudbuild.server.runtime import install_cache

        try:
            restored = await asyncio.to_thread(install_cache.restore, root, key, tree)
            if restored is not None and self.identity is not None and self.sandbox is not None:
                await asyncio.to_thread(self.sandbox.prepare_dir, tree, self.identity)
        except OSError as exc:  # never fail a task for it: npm ci instead
            await asyncio.to_thread(shutil.rmtree, tree, True)
            await self._log([f"install cache: could not restore node_modules ({exc}); running npm ci"], "stderr")
            return False
        if restored is None:
            return False
        await self._log([f"install cache: reused node_modules for package-lock.json {key[:12]} (npm ci skipped)"],
                        "stdout")
        return True

    async def _store_install(self, root: Path, key: str, tree: Path) -> None:
        """Store the node_modules `npm ci` just made; a failure is one log line, never the task's."""
        from flow_kit_cloudbuild.server.runtime import install_cache

        try:
            stored = await asyncio.to_thread(install_cache.store, root, key, tree,
                                             max_bytes=self.cfg.cache_max_bytes, max_files=self.cfg.cache_max_files)
        except (OSError, install_cache.StoreRefused) as exc:
            await self._log([f"install cache: node_modules for package-lock.json {key[:12]} not stored: {exc}"],
                            "stderr")
            return
        if stored is None:
            await self._log([f"install cache: node_modules for package-lock.json {key[:12]} is stored already"],
                            "stdout")
        else:
            await self._log([f"install cache: stored node_modules for package-lock.json {key[:12]} "
                             f"({stored.files:,} entries, {_size(stored.bytes)})"], "stdout")

    async def _install_python(self) -> None:
        uv = uv_binary()
        requirements = self._python_build_requirements()
        if self.build_cmd[:3] == ["python", "-m", "build"]:
            requirements.append("build")
        if uv:
            await self._run([uv, "venv", "--quiet", "--python", sys.executable, str(self.venv)],
                            "install failed", via_egress=True)
            pip = [uv, "pip", "install", "--python", str(self.venv / "bin" / "python")]
        else:
            await self._run([sys.executable, "-m", "venv", str(self.venv)], "install failed", via_egress=True)
            pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install"]
        if self._plain_file("requirements.txt"):
            await self._run([*pip, "-r", "requirements.txt"], "install failed", via_egress=True)
        if requirements:
            await self._run([*pip, *requirements], "install failed", via_egress=True)

    def _python_build_requirements(self) -> list[str]:
        if not self._plain_file("pyproject.toml"):
            return []
        import tomllib

        try:
            data = tomllib.loads((self.src / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise StepFailed("install failed: pyproject.toml cannot be parsed; fix it") from None
        reqs = data.get("build-system", {}).get("requires", [])
        if not isinstance(reqs, list) or not all(isinstance(r, str) and r and not r.startswith("-") for r in reqs):
            raise StepFailed("install failed: [build-system] requires must be a list of requirements")
        return list(reqs)

    async def build(self) -> None:
        await self._enter("build", f"building: {' '.join(self.build_cmd)}")
        for check in self.cfg.checks:
            await self._log([f"pre-build check {check.name!r}"], "stdout")
            await self._run(check.argv, f"pre-build check {check.name!r} failed",
                            network=self.cfg.build_network)
        await self._run(self.build_cmd, "build failed", network=self.cfg.build_network)

    async def publish(self) -> list[dict[str, Any]]:
        """Store the artifacts; with ``publish_locks``, one publish of a name, version and
        channel at a time across every process."""
        if self.publish_locks is None:
            return await self._publish()
        channel = "prod" if self.req["prod"] else "dev"
        name = f"publish:{self.req['name']}\n{self.req['version']}\n{channel}"

        async def waiting(holder: str) -> None:
            await self._log([f"waiting for another publish of {self.req['name']} {self.req['version']} "
                             f"({channel}) to finish ({holder})"], "stdout")
        async with self.publish_locks.hold(name, self.lock_owner, on_wait=waiting):
            return await self._publish()

    async def _publish(self) -> list[dict[str, Any]]:
        if self.cached_from is not None:
            return await self._publish_cached(self.cached_from)
        await self._enter("publish", "collecting and storing the artifacts")
        self._check_freeze()
        out = next((self.src / d for d in OUTPUT_DIRS
                    if (self.src / d).is_dir() and not (self.src / d).is_symlink()), None)
        if out is None:
            raise StepFailed("the build produced no dist/ or build/ directory; make it write its output there")
        files = await asyncio.to_thread(collect_files, out, self.cfg.artifact_max_files)
        if files.skipped:
            await self._log_skipped(files)
        if not files.found:
            raise StepFailed(f"the build's {out.name}/ directory holds no files; check the build output")
        max_files, max_bytes = self.cfg.artifact_max_files, self.cfg.artifact_max_bytes
        if max_files and len(files.found) > max_files:
            raise StepFailed(f"the build's {out.name}/ directory holds more than {max_files:,} files, the "
                             "artifact limit of a task (--artifact-max-files); publish fewer files or ask "
                             "the operator to raise it")
        if max_bytes and files.bytes > max_bytes:
            raise StepFailed(_artifacts_too_large(out.name, files.bytes, max_bytes))
        try:
            stored = await self.artifacts.put(self.task_id, files.found, max_bytes=max_bytes)
        except ArtifactQuotaExceeded:  # a file grew after it was measured
            raise StepFailed(_artifacts_too_large(out.name, max_bytes + 1, max_bytes)) from None
        return stored  # the release index is written when the task is done (TaskService._record_release)

    def _check_freeze(self) -> None:
        if self.req["prod"]:
            try:
                policy.check_freeze(self.cfg)
            except RequestError as exc:  # a freeze window is on
                raise StepFailed(f"refused: {exc.message}") from None

    async def _publish_cached(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """A build-cache hit: the earlier task's artifacts stored again as this task's own."""
        built_by = entry["builtBy"]
        await self._enter("publish", f"from cache: #{built_by.get('number')}: storing its artifacts as this "
                                     "deployment's")
        self._check_freeze()
        stored = await self.artifacts.copy(entry["taskId"], self.task_id)
        if stored is None or not same_files(entry, stored):  # deleted while this task copied them
            await self.artifacts.delete(self.task_id)
            raise StepFailed(f"the cached build #{built_by.get('number')} was deleted while it was reused; "
                             "publish again (it will build)")
        return stored

    def cache_entry_origin(self) -> dict[str, Any] | None:
        """Who built what this task published: the cached build's task and number, or None (built here)."""
        if self.cached_from is None:
            return None
        built_by: dict[str, Any] = self.cached_from["builtBy"]  # BuildCache.get checked it
        return {"taskId": built_by["taskId"], "number": built_by.get("number")}

    async def _log_skipped(self, files: Collected) -> None:
        """One line for every skipped file, however many: 20,000 of them are one line of the log
        (charged to the log budget like build output), not 20,000 messages outside it."""
        shown = ", ".join(files.skipped)
        more = files.skipped_count - len(files.skipped)
        text = (f"skipped {files.skipped_count:,} file(s) that are not regular files inside the output "
                f"directory or have unsafe names, e.g. {shown}" + (f" (and {more:,} more)" if more else ""))
        text = text[:self.cfg.max_log_line]
        self.budget.spend(len(text.encode("utf-8")) + 1)
        await self._log([text], "stderr")


def _artifacts_too_large(out: str, size: int, limit: int) -> str:
    return (f"the build's {out}/ directory holds {_size(size)} of files (sparse files at their full "
            f"size), more than the artifact limit of a task, {_size(limit)} (--artifact-max-bytes); "
            "publish less or ask the operator to raise it")


class Collected:
    def __init__(self) -> None:
        self.found: list[tuple[str, Path]] = []
        self.bytes = 0                    # apparent size of the found files: what a copy writes
        self.skipped: list[str] = []      # the first few skipped names (SKIPPED_EXAMPLES)
        self.skipped_count = 0

    def skip(self, name: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < SKIPPED_EXAMPLES:
            self.skipped.append(name)


def collect_files(out: Path, max_files: int = 0) -> Collected:
    """Regular files under ``out``, walked without following any symlink (hidden files skipped).

    Stops once more than ``max_files`` (0: no limit) were found: the caller refuses that many.
    Run it in a thread (it walks a tree the build made).
    """
    got = Collected()
    for dirpath, dirnames, filenames in os.walk(out, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                dirnames.remove(d)
                got.skip((base / d).relative_to(out).as_posix())
        dirnames.sort()
        for f in sorted(filenames):
            p = base / f
            name = p.relative_to(out).as_posix()
            st = os.lstat(p)
            if f.startswith("."):  # .gitignore and friends that tools drop into dist/
                continue
            if not stat.S_ISREG(st.st_mode) or not safe_artifact_name(name):
                got.skip(name)
                continue
            got.found.append((name, p))
            got.bytes += st.st_size
            if max_files and len(got.found) > max_files:
                return got
    return got


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def _file_too_large(limit: int) -> str:
    return (f"wrote a file larger than the build limit of {_size(limit)} (--build-file-size); "
            "write smaller files or ask the operator to raise it")


def _not_installed(what: str, program: str) -> StepFailed:
    return StepFailed(f"{what}: program {program!r} is not installed on the build server; "
                      "ask the operator to install it")
