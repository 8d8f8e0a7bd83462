"""A cancel that lands while the server cleans up is raised after the cleanup, never dropped.

The server's coroutines cancel what they started (output readers, the disk watch, a proxied
connection's two halves) and wait for it to end. Waiting with ``suppress(BaseException)``
also swallowed a cancel of the waiting coroutine itself: a build cancelled (or timed out) in
that moment went on as if nothing happened, to its next step or to "done" and a release.
``server/cancelling.py`` waits to the end and raises the cancel afterwards; these tests hold it
to that in-process, and through ``run_command`` with a real process group. A cancel that lands
in such a window cannot be timed from outside a real server, so no server test does it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flow_kit_cloudbuild.server.cancelling import cancel_and_wait, run_to_end, wait_ended  # noqa: E402
from flow_kit_cloudbuild.server.runtime import process  # noqa: E402


async def _slow_to_stop(stopping: asyncio.Event, ended: list[str]) -> None:
    """A started task that needs a moment to end once cancelled (as a killed process group does)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        stopping.set()
        await asyncio.sleep(0.2)
        ended.append("cleaned up")
        raise


def test_a_cancel_landing_while_started_tasks_end_is_raised_after_they_ended():
    async def main() -> tuple[str, list[str]]:
        stopping, ended = asyncio.Event(), []
        child = asyncio.create_task(_slow_to_stop(stopping, ended))
        await asyncio.sleep(0)

        async def owner() -> str:
            try:
                return "carried on"  # the owner's own work ended normally...
            finally:
                await cancel_and_wait(child)  # ...and it stops what it started

        task = asyncio.create_task(owner())
        await stopping.wait()
        task.cancel()  # lands while the child is still ending
        try:
            outcome = await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        assert child.done()
        return outcome, ended

    outcome, ended = asyncio.run(main())
    assert outcome == "cancelled"
    assert ended == ["cleaned up"]  # the cancel did not cut the child's cleanup short


def test_cancel_and_wait_does_not_raise_what_the_tasks_ended_with():
    async def main() -> None:
        async def fails() -> None:
            raise ValueError("a reader's error, of no interest once it is stopped")

        done_already = asyncio.create_task(fails())
        running = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        await cancel_and_wait(done_already, running, None)
        assert running.cancelled() and isinstance(done_already.exception(), ValueError)

    asyncio.run(main())


def test_run_to_end_finishes_the_work_then_raises_the_cancel():
    async def main() -> list[str]:
        steps: list[str] = []

        async def finish() -> str:
            await asyncio.sleep(0.2)
            steps.append("finished")
            return "outcome"

        async def caller() -> str:
            return await run_to_end(finish())

        task = asyncio.create_task(caller())
        await asyncio.sleep(0.05)
        task.cancel()
        task.cancel()  # a second cancel is held back the same way
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await run_to_end(finish()) == "outcome"  # not cancelled: its result
        return steps

    assert asyncio.run(main()) == ["finished", "finished"]


def test_wait_ended_neither_cancels_nor_raises():
    async def main() -> None:
        async def fails_later() -> None:
            await asyncio.sleep(0.05)
            raise RuntimeError("a pipeline's own failure, already reported by its owner")

        short = asyncio.create_task(asyncio.sleep(0.1, "result"))
        failing = asyncio.create_task(fails_later())
        await wait_ended(short, failing)
        assert short.result() == "result" and isinstance(failing.exception(), RuntimeError)

    asyncio.run(main())


def test_a_cancel_while_a_command_past_its_log_budget_is_killed_is_not_lost(tmp_path):
    """The command prints past its budget and ignores SIGTERM: run_command kills its group and
    waits out the grace before SIGKILL. A cancel landing then (the user's, or the task's
    timeout) cuts the grace short and is what the caller gets, not the log limit: the task ends
    as cancelled, and no process of the group is left."""
    pid_file = tmp_path / "pid"
    script = (f"trap '' TERM; echo $$ > {pid_file}; "
              "i=0; while [ $i -lt 400 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done; "
              "sleep 30")

    async def sink(lines: list[str], stream: str) -> None:
        pass

    async def main() -> BaseException | int:
        run = asyncio.create_task(process.run_command(
            ["sh", "-c", script], cwd=tmp_path, env={"PATH": os.environ["PATH"]}, on_line=sink,
            budget=process.LogBudget(1024)))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the budget is spent and SIGTERM ignored: within the grace
        run.cancel()
        try:
            return await run
        except BaseException as exc:  # noqa: BLE001 - which one it is, is the point
            return exc

    outcome = asyncio.run(main())
    assert isinstance(outcome, asyncio.CancelledError), outcome
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    assert live_members_of_group(pid) == []  # its `sleep` went with it


def live_members_of_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies (an orphaned child that was killed is
    a zombie until this container's init reaps it, and still counts for killpg)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
