"""Running one command of a task: an argv list (never a shell) in its own process group.

Output is read in chunks and cut into lines; each line is capped in length (truncated with a
marker) and the task's whole log is capped in volume. The complete lines of one read go to the
sink together, so a build that prints fast is sent in batches (one message per read, not per
line) while a slow one still shows each line as soon as it is printed. On cancellation (task cancelled or timed
out) or an exceeded log cap, the whole process group is killed. Inside the sandbox that is
structural (the build's PID namespace dies with bubblewrap); without it (``--no-sandbox``) a
build that leaves its process group (setsid) can outlive it, which is why the sandbox is the
default.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.cancelling import cancel_and_wait, run_to_end
from flow_kit_cloudbuild.server.runtime.limits import CommandRuntime
from flow_kit_cloudbuild.server.runtime.sandbox import Sandbox, SandboxSpec

LineSink = Callable[[list[str], str], Awaitable[None]]  # (lines, "stdout"|"stderr")
KILL_GRACE = 2.0      # seconds between SIGTERM and SIGKILL
DRAIN_GRACE = 2.0     # seconds to wait for output after the command exited


class LogLimitExceeded(Exception):
    """The task printed more than its log budget."""


class LogBudget:
    """Bytes of output a task may still print (shared by all commands of the task)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise LogLimitExceeded(
                f"the task printed more than {self.limit // (1024 * 1024) or self.limit} "
                f"{'MB' if self.limit >= 1024 * 1024 else 'bytes'} of output; print less")


async def run_command(argv: list[str], *, cwd: Path, env: dict[str, str], on_line: LineSink,
                      budget: LogBudget, max_line: int = protocol.MAX_LOG_LINE,
                      confine: tuple[Sandbox, SandboxSpec] | None = None) -> int:
    """Run ``argv`` and return its exit status (negative: killed by that signal).

    With ``confine`` the command runs inside that sandbox (see sandbox.py): killing the group
    then kills bubblewrap, and with it every process in the build's PID namespace. Its runtime
    (cgroup and seccomp fd: the spec's, else a new one) is finished when the command ended, so
    its cgroup is gone and ``runtime.outcome`` says which limit was enforced.

    Raises FileNotFoundError when the program does not exist, LogLimitExceeded when the output
    budget runs out (the group is killed first), and CancelledError passes through after the
    group is killed.
    """
    runtime: CommandRuntime | None = None
    if confine is not None:
        sandbox, spec = confine
        if spec.runtime is None:
            spec = dataclasses.replace(spec, runtime=sandbox.command_runtime())
        runtime = spec.runtime
        argv = sandbox.wrap(argv, spec, cwd)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, limit=1 << 20, pass_fds=runtime.pass_fds if runtime else ())
    except BaseException:
        if runtime is not None:
            await asyncio.to_thread(runtime.finish)
        raise
    if runtime is not None:
        runtime.started()
    try:
        return await _follow(proc, on_line=on_line, budget=budget, max_line=max_line)
    finally:
        if runtime is not None:
            with contextlib.suppress(Exception):  # the pipeline finishes it again and reads its outcome
                await run_to_end(asyncio.to_thread(runtime.finish))


async def _follow(proc: asyncio.subprocess.Process, *, on_line: LineSink, budget: LogBudget,
                  max_line: int) -> int:
    """Pump the output of the started ``proc`` to ``on_line`` until it exited (see run_command)."""
    lock = asyncio.Lock()  # one batch at a time reaches the sink

    async def pump(stream: asyncio.StreamReader, name: str) -> None:
        pending = bytearray()
        dropped = False  # the current line grew past max_line; drop the rest of it
        while True:
            chunk = await stream.read(256 * 1024)
            if not chunk:
                break
            budget.spend(len(chunk))
            last = chunk.rfind(b"\n")
            if last < 0:  # no line ends in this chunk: it all belongs to the current line
                pending, dropped = _extend(pending, dropped, chunk, max_line)
                continue
            first = chunk.find(b"\n")
            pending, dropped = _extend(pending, dropped, chunk[:first], max_line)
            lines = [_text(pending, dropped)]
            pending, dropped = bytearray(), False
            if first < last:
                lines += _split_lines(chunk[first + 1:last], max_line)
            pending, dropped = _extend(pending, dropped, chunk[last + 1:], max_line)
            async with lock:
                await on_line(lines, name)
        if pending or dropped:
            async with lock:
                await on_line([_text(pending, dropped)], name)

    readers = [asyncio.create_task(pump(proc.stdout, "stdout")),  # type: ignore[arg-type]
               asyncio.create_task(pump(proc.stderr, "stderr"))]  # type: ignore[arg-type]
    exited = asyncio.create_task(proc.wait())
    try:
        done, _ = await asyncio.wait([*readers, exited], return_when=asyncio.FIRST_EXCEPTION)
        for r in readers:
            if r in done and r.exception() is not None:
                raise r.exception()  # type: ignore[misc]
        if not exited.done():  # pragma: no cover - FIRST_EXCEPTION returns only when all are done
            await exited
        if not all(r.done() for r in readers):
            # Something the command started still holds its output open: give it a moment.
            _, still = await asyncio.wait(readers, timeout=DRAIN_GRACE)
            if still:
                _signal_group(proc.pid, signal.SIGKILL)
                await asyncio.wait(readers, timeout=DRAIN_GRACE)
            for r in readers:
                if r.done() and not r.cancelled() and r.exception() is not None:
                    raise r.exception()  # type: ignore[misc]
        return proc.returncode  # type: ignore[return-value]
    except BaseException:
        await _kill_group(proc)
        raise
    finally:
        await cancel_and_wait(*readers, exited)


def _extend(pending: bytearray, dropped: bool, piece: bytes, max_line: int) -> tuple[bytearray, bool]:
    """Add ``piece`` (no newline in it) to the line being read, keeping at most ``max_line`` bytes."""
    if len(pending) + len(piece) > max_line:
        pending += piece[: max(0, max_line - len(pending))]
        return pending, True
    pending += piece
    return pending, dropped


def _split_lines(block: bytes, max_line: int) -> list[str]:
    """The complete lines of ``block`` (newline-separated, no line started before it).

    The whole block is decoded and split at once, in C: a newline byte is never part of a
    multi-byte UTF-8 sequence, so this gives the same lines as decoding each line by itself.
    Only a block holding a line longer than ``max_line`` or a line ending in CR goes line
    by line.
    """
    text = block.decode("utf-8", "replace")
    if len(block) <= max_line and "\r" not in text:
        return text.split("\n")
    parts = block.split(b"\n")
    if "\r" not in text and max(map(len, parts)) <= max_line:
        return text.split("\n")
    return [_text(part[:max_line], len(part) > max_line) for part in parts]


def _text(data: bytes | bytearray, truncated: bool) -> str:
    if data.endswith(b"\r"):
        data = data[:-1]
    text = data.decode("utf-8", "replace")
    return text + protocol.TRUNCATED_MARKER if truncated else text


def kill_orphaned_groups(work_root: Path, task_ids: list[str]) -> list[int]:
    """Kill the process groups of builds that a crashed server left running; their pgids.

    A server killed with SIGKILL cannot take its builds down with it (they run in their own
    process groups). On the next start, processes whose environment has ``HOME`` inside the
    work directory of one of ``task_ids`` are found through ``/proc/<pid>/environ`` (every
    build command gets ``HOME=<work>/<task>-<attempt>/home``) and their groups are killed.
    Where there is no ``/proc`` this does nothing.
    """
    proc = Path("/proc")
    if not task_ids or not proc.is_dir():
        return []
    prefixes = tuple(f"HOME={work_root / tid}-".encode() for tid in task_ids)
    groups: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if any(var.startswith(prefixes) for var in environ.split(b"\0")):
                groups.add(os.getpgid(int(entry.name)))
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile, or not ours to read
    for pgid in groups:
        if pgid != os.getpgrp():
            _signal_group(pgid, signal.SIGKILL)
    return sorted(groups)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, and reap the leader.

    A cancel that lands meanwhile cuts the grace short (SIGKILL at once) and is raised once the
    leader is reaped, or KILL_GRACE after SIGKILL if it is not.
    """
    cancelled = False
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            cancelled = True
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        await run_to_end(asyncio.wait_for(proc.wait(), KILL_GRACE))
    except TimeoutError:
        pass  # the leader is stuck (in uninterruptible sleep): the cgroup's kill ends the rest
    except asyncio.CancelledError:
        cancelled = True
    if cancelled:
        raise asyncio.CancelledError
