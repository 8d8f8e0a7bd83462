"""The build sandbox: every command that runs a project's code runs inside bubblewrap.

Why bubblewrap: it is what Flatpak uses, it is one small Debian package, and it works both
unprivileged (through a user namespace) and as root. Each command gets:

- new PID, IPC, UTS and mount namespaces, and its own ``/proc``: the server process, its
  command line and its environment do not exist from inside. The namespace's first process is
  bubblewrap's init; when it ends (the command exited, was killed, or the server died, through
  ``--die-with-parent``) the kernel kills every process left in the namespace, whatever they did
  (``setsid``, double fork, ``env -i``). Nothing outlives a build by construction.
- the system read-only (``/usr``, ``/etc``, the interpreter that runs the server, uv, node),
  a private ``/tmp``, and exactly two writable places: the task attempt's work directory and
  the owner's own package caches. The data dir, other tasks, uploads, artifacts, git mirrors
  and the server's token and config files are not mounted at all.
- no network unless the step needs it (install: yes; build: only with ``--build-network``).
- resource limits by what the build uses, summed over its processes: memory (page cache and
  its ``/tmp`` included), processes, CPU and IO shares, through a cgroup of its own per command
  (``cgroups.py``); file size and no core files (set by util-linux's ``prlimit``); and the work
  directory's disk use (watched by the pipeline). Both the cgroup join and ``prlimit`` are
  commands that exec the next one, never a ``preexec_fn``: that would make Python fork the
  whole server instead of vfork, ~8 ms per command for a 200 MB server, on the event loop, and
  is not safe with threads.
- a smaller kernel: a seccomp filter (``seccomp.py``, passed to bubblewrap as ``--seccomp FD``)
  refuses namespaces, mounts, ptrace, keyrings, eBPF and the rest of what builds never need,
  and no user namespaces can be made inside (``--disable-userns`` where bubblewrap has it, and
  the filter everywhere).

When the server runs as root, the command runs as an unprivileged user: by default one uid per
token owner, handed out from ``--build-uid-range`` and recorded (``uids.py``), so process limits
and package caches are per tenant and no two tokens share a uid; ``--build-user`` names a fixed
user instead. Without root, the command keeps the
server's uid inside a user namespace.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flow_kit_cloudbuild.server.runtime import seccomp
from flow_kit_cloudbuild.server.runtime.cgroups import CgroupsUnavailable, server_tree
from flow_kit_cloudbuild.server.runtime.limits import CommandRuntime
from flow_kit_cloudbuild.server.runtime.uids import RECORD_NAME, FileUidAllocator, UidAllocator

if TYPE_CHECKING:
    from flow_kit_cloudbuild.server.config import ServerConfig

DEFAULT_UID_START = 1_000_000

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
GIB = 1024 ** 3


class SandboxUnavailable(Exception):
    """No sandbox can be made on this machine; the message says why."""


@dataclass(frozen=True)
class Limits:
    """Per-build resource limits (bytes and counts); 0 means no limit."""

    memory: int = 4 * GIB          # memory of all the build's processes together (cgroup), /tmp included
    processes: int = 512           # processes of the build at once (cgroup pids.max)
    file_size: int = 2 * GIB       # largest file a build may write (RLIMIT_FSIZE)
    disk: int = 10 * GIB           # the work directory's total size, checked while it runs


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed command may see and do."""

    work: Path                      # the attempt's work dir: bound read-write at the same path
    caches: tuple[Path, ...] = ()   # the owner's package caches: read-write
    network: bool = False           # the host's network (else a namespace with only loopback)
    uid: int | None = None          # run as this uid/gid (root servers only)
    gid: int | None = None
    runtime: CommandRuntime | None = None   # the command's cgroup and seccomp fd (command_runtime)
    # Without ``network``: the egress proxy's unix socket (egress.py). It is bound into the
    # sandbox as egress.SANDBOX_SOCKET and the command runs behind egress_relay, which exposes it
    # as 127.0.0.1:egress.RELAY_PORT: the namespace's only way out (the install step).
    egress: Path | None = None
    # The files the server's TLS trust settings name (SSL_CERT_FILE, ...): mounted read-only
    # where they are not inside a mounted system path already.
    trust: tuple[Path, ...] = ()


@dataclass
class Sandbox:
    """Turns an argv into the bubblewrap argv that runs it confined; one per server."""

    limits: Limits = field(default_factory=Limits)
    build_user: str = "auto"              # "auto": a uid per token; or a user name / uid
    hidden: tuple[Path, ...] = ()         # server files never to be visible (data dir, tokens)
    ro_paths: tuple[Path, ...] = ()       # extra read-only paths (e.g. a toolchain in /srv)
    bwrap: str = "bwrap"
    prlimit: str = "prlimit"
    cgroups: bool = True                  # False only with --no-cgroups: memory, CPU, IO unbounded
    uids: UidAllocator | None = None      # build_user "auto" on a root server: the owners' uids

    def __post_init__(self) -> None:
        self.is_root = os.geteuid() == 0
        self._readonly: list[Path] | None = None
        self._seccomp: bytes | None = None
        self._disable_userns: bool | None = None

    # -- identity -----------------------------------------------------------------------------
    async def identity(self, owner: str) -> tuple[int, int] | None:
        """The uid/gid a build of ``owner`` (a token hash) runs as; None: the server's own.

        The uid comes from ``self.uids`` (the data dir's record; in Redis mode the deployment's
        shared one, set by the Redis backend). Raises ``uids.UidRangeExhausted`` for a new owner
        when the range is used up.
        """
        if not self.is_root:
            return None
        if self.build_user == "auto":
            if self.uids is None:
                raise SandboxUnavailable("no build uid allocator is configured")
            uid = await self.uids.allocate(owner)
            return uid, uid
        return resolve_user(self.build_user)

    def _probe_identity(self) -> tuple[int, int] | None:
        """Who the start-up probe runs as: a build uid without recording an owner for it."""
        if not self.is_root:
            return None
        if self.build_user == "auto":
            start = self.uids.start if isinstance(self.uids, FileUidAllocator) else DEFAULT_UID_START
            return start, start
        return resolve_user(self.build_user)

    # -- argv ---------------------------------------------------------------------------------
    def readonly_paths(self) -> list[Path]:
        """System paths plus wherever the interpreter, uv and node live (found once per server:
        ~1 ms of lookups, and the same for every command)."""
        if self._readonly is None:
            self._readonly = self._find_readonly_paths()
        return list(self._readonly)

    def _find_readonly_paths(self) -> list[Path]:
        paths: list[Path] = [Path(p) for p in SYSTEM_PATHS]
        for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
            paths.append(Path(prefix))
            paths.append(Path(prefix).resolve())
        from flowcore.api import uv_binary

        for prog in (uv_binary(), shutil.which("node"), shutil.which("npm"), shutil.which("git")):
            if prog:
                real = Path(prog).resolve()
                paths.append(real.parent.parent if real.parent.name == "bin" else real.parent)
        paths.extend(self.ro_paths)
        seen: list[Path] = []
        for p in paths:
            if p not in seen and (p.exists() or p.is_symlink()):
                seen.append(p)
        # A path inside another one is mounted by its parent already.
        return [p for p in seen if not any(q != p and _inside(p, q) and not q.is_symlink() for q in seen)]

    def wrap(self, argv: list[str], spec: SandboxSpec, cwd: Path) -> list[str]:
        """The command line that runs ``argv`` in ``cwd`` confined by ``spec``: ``prlimit``
        setting the limits, bubblewrap, and (root servers) ``setpriv`` dropping to the build's
        user. Run it without a ``preexec_fn``."""
        runtime = spec.runtime
        join = runtime.cgroup.join_argv() if runtime is not None and runtime.cgroup is not None else []
        args = [*join, *self.limit_args(), self.bwrap, "--die-with-parent", "--new-session",
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "flow-build"]
        if not spec.network:
            args.append("--unshare-net")
        if not self.is_root:
            args.append("--unshare-user")
            if self._bwrap_disables_userns():
                args.append("--disable-userns")
        if runtime is not None and runtime.seccomp_fd is not None:
            args += ["--seccomp", str(runtime.seccomp_fd)]
        mounted: list[Path] = []     # bound from the host: everything below them exists
        made: set[Path] = {Path("/")}  # directories made inside the sandbox

        def parents(p: Path) -> list[str]:
            # bubblewrap makes missing parents with mode 0700, which the build user could not
            # cross (/root for an interpreter in /root/.pyenv); make them 0755 first.
            out: list[str] = []
            for parent in reversed(p.parents):
                if parent not in made and not any(parent == m or _inside(parent, m) for m in mounted):
                    out += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            return out

        # Fresh /proc, /dev, /tmp first: a toolchain bound below may live under /tmp.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
                 "--tmpfs", "/run", "--perms", "1777", "--dir", "/var/tmp"]
        made.update(Path(p) for p in ("/proc", "/dev", "/tmp", "/run", "/var", "/var/tmp"))
        for p in self.readonly_paths():
            if p.is_symlink() and str(p) in SYSTEM_PATHS:
                args += ["--symlink", os.readlink(p), str(p)]  # merged /usr: /bin -> usr/bin
            else:
                args += [*parents(p), "--ro-bind", str(p), str(p)]
            mounted.append(p)
        for secret in self.hidden:
            if not any(_inside(secret, m) or secret == m for m in (*mounted, *made)):
                continue
            if secret.is_dir():
                args += ["--tmpfs", str(secret)]       # e.g. a data dir under a system path
            elif secret.exists():
                args += ["--ro-bind", "/dev/null", str(secret)]
        for rw in (spec.work, *spec.caches):
            args += [*parents(rw), "--bind", str(rw), str(rw)]
        for ca in spec.trust:  # network part: the server's TLS trust, unless mounted or a secret
            if not any(ca == m or _inside(ca, m) for m in (*mounted, *self.hidden)):
                args += [*parents(ca), "--ro-bind", str(ca), str(ca)]
                mounted.append(ca)
        if spec.egress is not None and not spec.network:
            from flow_kit_cloudbuild.server.runtime.egress import SANDBOX_SOCKET

            args += ["--bind", str(spec.egress), SANDBOX_SOCKET]
        args += ["--chdir", str(cwd), "--"]
        if self.is_root and spec.uid is not None:
            args += ["setpriv", f"--reuid={spec.uid}", f"--regid={spec.gid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        if spec.egress is not None and not spec.network:
            from flow_kit_cloudbuild.server.runtime.egress import relay_argv

            args += relay_argv(sys.executable)
        return args + argv

    def limit_args(self) -> list[str]:
        """``prlimit`` with the build's limits, ending in ``--``: it sets them on itself and
        execs bubblewrap, so they hold for every process of the build (no core files ever)."""
        limits = self.limits
        nproc = 0 if self.cgroups else limits.processes   # with cgroups: pids.max, per build
        if nproc and not self.is_root:
            # Unprivileged, RLIMIT_NPROC counts every process of the server's user; leave room
            # for those that exist already so the limit bounds what the build adds.
            nproc += _processes_of(os.getuid())
        args = [self.prlimit, "--core=0"]
        # No address-space limit: V8 reserves ~10 GiB of it per WebAssembly memory; the memory
        # cgroup bounds what is used instead.
        for flag, which, value in (("--nproc", resource.RLIMIT_NPROC, nproc),
                                   ("--fsize", resource.RLIMIT_FSIZE, limits.file_size)):
            if value:
                args.append(f"{flag}={_within_hard_limit(which, value)}")
        return [*args, "--"]

    def command_runtime(self) -> CommandRuntime:
        """A new command's cgroup (limited, empty) and seccomp program fd; ``finish`` it after.
        Raises CgroupsUnavailable when the cgroup cannot be made."""
        if self._seccomp is None:
            self._seccomp = seccomp.build_filter()
        cgroup = server_tree().command(self.limits.memory, self.limits.processes) if self.cgroups else None
        return CommandRuntime(cgroup, seccomp.filter_fd(self._seccomp))

    @property
    def enforces_memory(self) -> bool:
        """Whether ``limits.memory`` holds (it needs the memory cgroup)."""
        return self.cgroups and bool(self.limits.memory)

    def _bwrap_disables_userns(self) -> bool:
        """Whether this bubblewrap has ``--disable-userns`` (0.8.0 and later; asked once)."""
        if self._disable_userns is None:
            try:
                text = subprocess.run([self.bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                text = ""
            self._disable_userns = "--disable-userns" in text
        return self._disable_userns

    # -- setup --------------------------------------------------------------------------------
    def prepare_dir(self, path: Path, ident: tuple[int, int] | None) -> None:
        """Give a tree the build writes into to the build's user (root servers only)."""
        if ident is None:
            return
        uid, gid = ident
        for dirpath, dirnames, filenames in os.walk(path):
            os.lchown(dirpath, uid, gid)
            for name in (*dirnames, *filenames):
                os.lchown(os.path.join(dirpath, name), uid, gid)

    def probe(self) -> None:
        """Run a trivial command in a sandbox as builds will; raise SandboxUnavailable if not."""
        if shutil.which(self.bwrap) is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        if self.is_root and shutil.which("setpriv") is None:
            raise SandboxUnavailable("setpriv (util-linux) is not installed")
        if shutil.which(self.prlimit) is None:
            raise SandboxUnavailable("prlimit (util-linux) is not installed")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="flow-sandbox-probe-") as tmp:
            work = Path(tmp)
            ident = self._probe_identity()
            self.prepare_dir(work, ident)
            try:
                runtime = self.command_runtime()
            except seccomp.SeccompUnavailable as exc:
                raise SandboxUnavailable(str(exc)) from None
            spec = SandboxSpec(work=work, uid=ident[0] if ident else None, gid=ident[1] if ident else None,
                               runtime=runtime)
            argv = self.wrap([sys.executable, "-c", "import os; open('ok', 'w').write(str(os.getpid()))"],
                             spec, work)
            joins = runtime.cgroup is not None
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=runtime.pass_fds,
                                      env={"PATH": os.environ.get("PATH", os.defpath)})
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SandboxUnavailable(f"bwrap did not run ({exc})") from None
            finally:
                runtime.finish()
            if done.returncode == 125 and joins:
                why = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
                raise CgroupsUnavailable(f"cannot move a command into its cgroup: {why}")
            if done.returncode != 0 or not (work / "ok").is_file():
                why = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
                raise SandboxUnavailable(f"bwrap failed: {why}")


def resolve_user(spec: str) -> tuple[int, int]:
    """A user name or numeric uid to (uid, gid); root is refused."""
    import pwd

    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not spec.isdigit():
            raise SandboxUnavailable(f"there is no user {spec!r} on this machine") from None
        uid = gid = int(spec)
    if uid == 0:
        raise SandboxUnavailable("builds cannot run as root")
    return uid, gid


def _within_hard_limit(which: int, value: int) -> int:
    """``value``, or the server's own hard limit where that is lower (the build inherits it, and
    only root could raise it)."""
    _, hard = resource.getrlimit(which)
    return hard if hard != resource.RLIM_INFINITY and value > hard else value


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return path != parent


@dataclass(frozen=True)
class Usage:
    """What a tree holds: bytes and entries (files, directories, links: inodes)."""

    bytes: int = 0
    files: int = 0


def disk_usage(root: Path, stop_bytes: int = 0, stop_files: int = 0) -> Usage:
    """Bytes and entries under ``root`` (no symlinks followed; ``root`` itself not counted).

    Each entry counts the larger of its allocated blocks and its apparent size (``st_size``):
    blocks alone let a sparse file of 500 MiB pass as a few KB and then become 500 MiB when it
    is copied out; apparent size alone misses directories full of small files. Counting stops
    early once past ``stop_bytes`` or ``stop_files`` (0: no early stop). Run it in a thread.
    """
    total = files = 0
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                files += 1
                total += max(st.st_blocks * 512, st.st_size)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
        if (stop_bytes and total > stop_bytes) or (stop_files and files > stop_files):
            break
    return Usage(total, files)


def owner_dirs(cache_root: Path, owner: str, kinds: Iterable[str]) -> dict[str, Path]:
    """Package cache directories of one owner (token hash): a tenant cannot poison another's.

    Each is one subtree that the cache quota (``cache_quota.py``) evicts whole; its marker
    ``<dir>.used`` beside it (outside what the build can write) says when a build last used it.
    """
    key = hashlib.sha256(owner.encode()).hexdigest()[:24]
    return {k: cache_root / k / key for k in kinds}


def make_sandbox(cfg: ServerConfig) -> Sandbox:
    """The sandbox a server with ``cfg`` runs its builds in."""
    return Sandbox(limits=Limits(memory=cfg.build_memory, processes=cfg.build_processes,
                                 file_size=cfg.build_file_size, disk=cfg.build_disk),
                   build_user=cfg.build_user, hidden=tuple(cfg.secret_paths), cgroups=cfg.build_cgroups,
                   ro_paths=tuple(cfg.sandbox_ro_paths),
                   uids=FileUidAllocator(cfg.data_dir / RECORD_NAME, *cfg.build_uid_range))
