"""Per-command cgroups: a build's limits count what its processes use together.

Why cgroups and not rlimits: RLIMIT_AS bounds address space per process, which is not what a
build costs (V8 reserves ~10 GiB of address space for each WebAssembly memory, so a stock Vite
site failed under 4 GiB), and nothing bounded the sum over processes or the build's ``/tmp``
tmpfs. A memory cgroup charges every page the build's processes touch, page cache and tmpfs
(shmem) pages included; the pids controller counts its tasks; cpu and io weights give each
running build an equal share when the machine is busy.

Layout: the server makes one parent cgroup of its own below the cgroup it was started in, in
every hierarchy it uses (``flow-cloudbuild-<pid>-<pid namespace>``), and one child per command attempt, limited
when it is made. The wrapper from ``join_argv`` moves itself into the child and then execs the
sandbox: no ``preexec_fn`` (see sandbox.py), and the build's first process already counts.
When the command ended, ``finish`` reads what was refused (OOM kills, refused forks), kills
anything left and removes the child.

cgroup v2 is used where the server's own cgroup may enable the memory and pids controllers for
a subtree (a delegated subtree, e.g. systemd ``Delegate=yes``); otherwise the v1 controllers
(memory and pids required, cpu and blkio when mounted). ``FLOW_CLOUDBUILD_CGROUP_ROOT`` moves
where cgroup file systems are looked for (tests use it to show the refusal); only real cgroup
mounts (``/proc/self/mountinfo``) below it count, so it cannot turn the limits into files.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "FLOW_CLOUDBUILD_CGROUP_ROOT"
DEFAULT_ROOT = "/sys/fs/cgroup"
PREFIX = "flow-cloudbuild-"
CPU_WEIGHT = 100          # v2 cpu.weight (v1 cpu.shares 1024): every build the same share
IO_WEIGHT = 100           # v2 io.weight (v1 blkio.weight 500)
#: The wrapper that joins the cgroup and then runs the sandbox: ``sh -c JOIN flow-cgroup-join
#: <cgroup.procs files...> -- <argv...>``; 125 when it could not join (it never runs unconfined).
JOIN = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"')


class CgroupsUnavailable(Exception):
    """No cgroup this server may use; the message says what is missing."""


@dataclass(frozen=True)
class Outcome:
    """What the kernel refused a command: OOM kills in its memory cgroup, times its memory
    reached the limit (reclaim included, so only a hint), forks past pids.max."""

    oom_kills: int = 0
    memory_at_limit: int = 0
    forks_refused: int = 0


@dataclass
class CommandCgroup:
    """One command attempt's cgroup (one directory per hierarchy in v1, one in v2)."""

    dirs: tuple[Path, ...]
    memory_dir: Path
    pids_dir: Path
    memory_events: str            # "memory.oom_control" (v1) or "memory.events" (v2)
    v2: bool

    def join_argv(self) -> list[str]:
        """The argv prefix that moves the command into this cgroup before it execs."""
        return ["/bin/sh", "-c", JOIN, "flow-cgroup-join", *(str(d / "cgroup.procs") for d in self.dirs), "--"]

    def outcome(self) -> Outcome:
        if self.v2:
            at_limit = _field(self.memory_dir / "memory.events", "max")
        else:
            at_limit = _int(self.memory_dir / "memory.failcnt")
        return Outcome(oom_kills=_field(self.memory_dir / self.memory_events, "oom_kill"),
                       memory_at_limit=at_limit, forks_refused=_field(self.pids_dir / "pids.events", "max"))

    def finish(self) -> Outcome:
        """Read the outcome, kill what is left and remove the cgroup (blocking: ~1 ms, longer
        only while leftovers die; run it off the event loop)."""
        got = self.outcome()
        _kill_all(self.pids_dir, self.v2)
        for d in self.dirs:
            _rmdir(d)
        return got


class CgroupTree:
    """The server's parent cgroups; makes one limited child per command."""

    def __init__(self, parents: dict[str, Path], v2: bool) -> None:
        self.parents = parents      # controller ("memory", "pids", "cpu", "blkio"; v2: "") -> dir
        self.v2 = v2
        self._count = itertools.count(1)

    @property
    def controllers(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1 (" + ", ".join(sorted(self.parents)) + ")"

    def command(self, memory: int, processes: int) -> CommandCgroup:
        """A new child cgroup limited to ``memory`` bytes and ``processes`` tasks (0: no limit)."""
        name = f"c{next(self._count)}-{os.urandom(4).hex()}"
        dirs = {c: p / name for c, p in self.parents.items()}
        unique = tuple(dict.fromkeys(dirs.values()))
        try:
            for d in unique:
                d.mkdir()
            if self.v2:
                self._limit_v2(dirs[""], memory, processes)
            else:
                self._limit_v1(dirs, memory, processes)
        except OSError as exc:
            for d in unique:
                _rmdir(d)
            raise CgroupsUnavailable(f"cannot make a build cgroup in {unique[0].parent}: {exc.strerror}") from None
        if self.v2:
            return CommandCgroup(unique, dirs[""], dirs[""], "memory.events", True)
        return CommandCgroup(unique, dirs["memory"], dirs["pids"], "memory.oom_control", False)

    @staticmethod
    def _limit_v2(d: Path, memory: int, processes: int) -> None:
        if memory:
            _write(d / "memory.max", memory)
            _write_if_present(d / "memory.swap.max", 0)     # no spilling past the limit into swap
        _write(d / "pids.max", processes or "max")
        _write_if_present(d / "cpu.weight", CPU_WEIGHT)
        _write_if_present(d / "io.weight", f"default {IO_WEIGHT}")

    @staticmethod
    def _limit_v1(dirs: dict[str, Path], memory: int, processes: int) -> None:
        if memory:
            _write(dirs["memory"] / "memory.limit_in_bytes", memory)
            _write_if_present(dirs["memory"] / "memory.memsw.limit_in_bytes", memory)  # with swap
        _write(dirs["pids"] / "pids.max", processes or "max")
        if "cpu" in dirs:
            _write_if_present(dirs["cpu"] / "cpu.shares", CPU_WEIGHT * 1024 // 100)
        if "blkio" in dirs:
            _write_if_present(dirs["blkio"] / "blkio.weight", IO_WEIGHT * 5)

    def close(self) -> None:
        """Remove the parents (the server is stopping; children are gone with their commands)."""
        for d in dict.fromkeys(self.parents.values()):
            for child in _children(d):
                _kill_all(child, self.v2)
                _rmdir(child)
            _rmdir(d)


_trees: dict[str, CgroupTree] = {}


def server_tree() -> CgroupTree:
    """This server process's cgroup tree, made on first use and removed at exit."""
    root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    tree = _trees.get(root)
    if tree is None:
        tree = _trees[root] = _make_tree(Path(root))
        atexit.register(tree.close)
    return tree


def _make_tree(root: Path) -> CgroupTree:
    mounts = _cgroup_mounts(root)
    if not mounts:
        raise CgroupsUnavailable(f"no cgroup file system is mounted under {root}")
    own = _own_cgroups()
    name = f"{PREFIX}{os.getpid()}-{_pid_namespace()}"
    why = ""
    if "" in mounts and "" in own:
        here = _below(mounts[""], own[""])
        try:
            _check_v2(here)
            return CgroupTree({"": _make_parent(here, name, v2=True)}, v2=True)
        except CgroupsUnavailable as exc:
            why = f"; cgroup v2: {exc}"
    missing = [c for c in ("memory", "pids") if c not in mounts or c not in own]
    if missing:
        raise CgroupsUnavailable(f"the {' and '.join(missing)} cgroup controller(s) are not mounted under "
                                 f"{root}{why}")
    parents: dict[str, Path] = {}
    for controller, knob in (("memory", ""), ("pids", ""), ("cpu", "cpu.shares"), ("blkio", "blkio.weight")):
        if controller in mounts and controller in own:
            here = _below(mounts[controller], own[controller])
            if knob and not (here / knob).exists():   # blkio.weight needs the BFQ scheduler
                continue
            try:
                parents[controller] = _make_parent(here, name, v2=False)
            except CgroupsUnavailable:
                if controller in ("memory", "pids"):
                    raise
    return CgroupTree(parents, v2=False)


def _check_v2(here: Path) -> None:
    """Refuse unless the memory and pids controllers are available in the v2 cgroup ``here``."""
    try:
        available = (here / "cgroup.controllers").read_text().split()
    except OSError as exc:
        raise CgroupsUnavailable(f"cannot read {here / 'cgroup.controllers'}: {exc.strerror}") from None
    missing = [c for c in ("memory", "pids") if c not in available]
    if missing:
        raise CgroupsUnavailable(f"{' and '.join(missing)} not delegated to {here}")


def _make_parent(here: Path, name: str, *, v2: bool) -> Path:
    """``here/name``, with the controllers on for its children in v2; stale parents of dead
    servers next to it removed."""
    namespace = str(_pid_namespace())
    for stale in here.glob(f"{PREFIX}*"):
        pid, _, rest = stale.name.removeprefix(PREFIX).partition("-")
        # Only a dead server of this PID namespace: another namespace's pids are not in /proc.
        if (rest.split("-")[0] == namespace and pid.isdigit() and int(pid) != os.getpid()
                and not Path(f"/proc/{pid}").exists()):
            for child in _children(stale):
                _kill_all(child, v2)
                _rmdir(child)
            _rmdir(stale)
    parent = here / name
    try:
        parent.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise CgroupsUnavailable(f"cannot make a cgroup in {here}: {exc.strerror}") from None
    if v2:
        available = set((here / "cgroup.controllers").read_text().split())
        wanted: list[str] = [c for c in ("memory", "pids", "cpu", "io") if c in available]
        try:
            try:
                _enable(here, wanted)
            except OSError as exc:
                # "No internal processes": a cgroup with processes cannot enable controllers for
                # its children. When the server is alone in its delegated cgroup, it moves
                # itself into a leaf of its own first (what systemd's docs advise).
                if exc.errno != errno.EBUSY or _procs(here) != [os.getpid()]:
                    raise
                leaf = here / f"{name}-server"
                leaf.mkdir(exist_ok=True)
                _write(leaf / "cgroup.procs", os.getpid())
                _enable(here, wanted)
            _enable(parent, wanted)
        except OSError as exc:
            _rmdir(parent)
            why = ("the server's cgroup has other processes; run it in a cgroup of its own "
                   "(systemd: Delegate=yes)" if exc.errno == errno.EBUSY else exc.strerror)
            raise CgroupsUnavailable(f"cannot enable the memory and pids controllers below {here}: {why}") from None
    return parent


def _procs(d: Path) -> list[int]:
    try:
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _enable(d: Path, controllers: list[str]) -> None:
    current = set((d / "cgroup.subtree_control").read_text().split())
    todo = [c for c in controllers if c not in current]
    if todo:
        _write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in todo))


def _cgroup_mounts(root: Path) -> dict[str, tuple[Path, str]]:
    """Controller ("": v2) -> (mount point, the cgroup path the mount shows as its root) of the
    cgroup file systems at or below ``root``."""
    found: dict[str, tuple[Path, str]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    root = root.resolve() if root.exists() else root
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, point, fstype = fields[3], Path(_unescape(fields[4])), tail[0]
        if point != root and root not in point.parents:
            continue
        if fstype == "cgroup2":
            found.setdefault("", (point, mount_root))
        elif fstype == "cgroup":
            for opt in tail[2].split(","):
                if opt in ("memory", "pids", "cpu", "blkio"):
                    found.setdefault(opt, (point, mount_root))
    return found


def _below(mount: tuple[Path, str], cgroup_path: str) -> Path:
    """The directory of ``cgroup_path`` (from /proc/self/cgroup) in a hierarchy mounted at
    ``mount`` (in a container the mount may show only a subtree)."""
    point, mount_root = mount
    rel = cgroup_path
    if mount_root != "/" and (rel == mount_root or rel.startswith(mount_root.rstrip("/") + "/")):
        rel = rel[len(mount_root):]
    return Path(point, rel.lstrip("/"))


def _own_cgroups() -> dict[str, str]:
    """Controller -> this process's cgroup path ("": the v2 one)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            own[""] = path
        for c in controllers.split(","):
            if c:
                own[c] = path
    return own


def _pid_namespace() -> int:
    """This process's PID namespace (its inode number): part of the parent's name."""
    return os.stat("/proc/self/ns/pid").st_ino


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _children(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_dir()]
    except OSError:
        return []


def _kill_all(d: Path, v2: bool) -> None:
    """SIGKILL every process in the cgroup ``d`` until none is left (or ~2 s passed)."""
    if v2 and (d / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            _write(d / "cgroup.kill", 1)
    deadline = time.monotonic() + 2.0
    while True:
        pids = _procs(d)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _rmdir(d: Path) -> None:
    deadline = time.monotonic() + 2.0
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:          # EBUSY: its last processes are still exiting
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.01)


def _field(path: Path, key: str) -> int:
    """The number after ``key`` in a flat-keyed cgroup file (memory.events, pids.events, ...)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _write(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _write_if_present(path: Path, value: object) -> None:
    with contextlib.suppress(FileNotFoundError):
        _write(path, value)
