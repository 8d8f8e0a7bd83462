"""Log lines from the build's pipe to ``flow publish``'s handler, without a server.

* ``process.run_command`` cuts output into lines per read (a whole read is decoded and split at
  once); the lines must be exactly what splitting each line by itself gives: CRLF, lines
  over the cap, invalid UTF-8, lines cut across reads.
* ``Session.follow`` hands messages on in seq order even when python-socketio's handler
  threads queue them out of order, and re-attaches only for a gap that stays.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flow_kit_cloudbuild import protocol  # noqa: E402
from flow_kit_cloudbuild.client import session as session_mod  # noqa: E402
from flow_kit_cloudbuild.server.runtime import process  # noqa: E402


def one_line_at_a_time(data: bytes, max_line: int) -> list[str]:
    """What the lines are: every line decoded by itself, capped at max_line bytes."""
    if not data:
        return []
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    out = []
    for part in parts:
        cut = part[:max_line]
        if cut.endswith(b"\r"):
            cut = cut[:-1]
        text = cut.decode("utf-8", "replace")
        out.append(text + protocol.TRUNCATED_MARKER if len(part) > max_line else text)
    return out


WRITER = """
import sys, time
data = open(sys.argv[1], "rb").read()
cuts = [int(x) for x in sys.argv[2].split(",") if x]
pos = 0
for cut in cuts + [len(data)]:
    sys.stdout.buffer.write(data[pos:cut]); sys.stdout.buffer.flush(); pos = cut
    time.sleep(0.002)
"""


def run(tmp_path: Path, data: bytes, cuts: list[int], max_line: int) -> list[str]:
    (tmp_path / "data").write_bytes(data)
    got: list[str] = []

    async def sink(lines: list[str], stream: str) -> None:
        assert stream == "stdout"
        got.extend(lines)

    argv = [sys.executable, "-c", WRITER, str(tmp_path / "data"), ",".join(map(str, cuts))]
    code = asyncio.run(process.run_command(argv, cwd=tmp_path, env={}, on_line=sink,
                                           budget=process.LogBudget(1 << 30), max_line=max_line))
    assert code == 0
    return got


@pytest.mark.parametrize("seed", range(6))
def test_lines_are_the_same_as_one_line_at_a_time(tmp_path, seed):
    rnd = random.Random(seed)
    pieces = [b"a", b"bc", b"\n", b"\r\n", b"\r", "é€".encode(), b"\xe2\x82", b"\xff", b"\n\n",
              b"x" * 30]
    data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(20, 400)))
    cuts = sorted(rnd.sample(range(1, len(data)), min(8, len(data) - 1)))
    max_line = rnd.choice([4, 9, 25, 4096])
    assert run(tmp_path, data, cuts, max_line) == one_line_at_a_time(data, max_line)


def test_many_lines_cut_anywhere_arrive_whole_and_in_order(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(1, 50_001))
    lines = run(tmp_path, data, [7, 1000, 65_537, 200_003], 4096)
    assert lines == [f"line {i}" for i in range(1, 50_001)]


def test_a_long_line_across_reads_is_capped_once(tmp_path):
    data = b"start\n" + b"y" * 10_000 + b"\nend"
    lines = run(tmp_path, data, [3, 100, 5000, 9000], 64)
    assert lines == ["start", "y" * 64 + protocol.TRUNCATED_MARKER, "end"]


def test_the_budget_counts_every_byte(tmp_path):
    (tmp_path / "data").write_bytes(b"12345\n" * 10)

    async def sink(lines: list[str], stream: str) -> None:
        pass

    budget = process.LogBudget(1 << 20)
    argv = [sys.executable, "-c", WRITER, str(tmp_path / "data"), "7,13"]
    asyncio.run(process.run_command(argv, cwd=tmp_path, env={}, on_line=sink, budget=budget))
    assert budget.used == 60
    with pytest.raises(process.LogLimitExceeded):
        asyncio.run(process.run_command(argv, cwd=tmp_path, env={}, on_line=sink,
                                        budget=process.LogBudget(59)))


# -- the client's follow ---------------------------------------------------------------------

def message(seq: int, action: str = "log") -> dict:
    return protocol.make_message("t" * 24, seq, action, f"line {seq}")


class Recorder(session_mod.Session):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", "token")
        self.attaches: list[int] = []
        self.notes: list[str] = []
        self.notify = self.notes.append

    def attach(self, task_id: str, after_seq: int = 0) -> dict:
        self.attaches.append(after_seq)
        return {}


def test_follow_puts_messages_that_overtook_others_back_in_order():
    s = Recorder()
    for seq in (1, 3, 2, 5, 4, 6):
        s._events.put((s._generation, "message", message(seq, "done" if seq == 6 else "log")))
    seen: list[int] = []
    final = s.follow("t" * 24, lambda m: seen.append(m["meta"]["seq"]))
    assert seen == [1, 2, 3, 4, 5, 6] and final["meta"]["seq"] == 6
    assert s.attaches == [] and s.notes == []


def test_follow_reattaches_when_a_gap_stays(monkeypatch):
    monkeypatch.setattr(session_mod, "GAP_GRACE", 0.2)
    s = Recorder()
    s._events.put((s._generation, "message", message(1)))
    s._events.put((s._generation, "message", message(3)))
    original = s.attach

    def attach(task_id: str, after_seq: int = 0) -> dict:  # the replay brings 2 and 3
        original(task_id, after_seq)
        for seq in (2, 3):
            s._events.put((s._generation, "message", message(seq, "done" if seq == 3 else "log")))
        return {}

    s.attach = attach  # type: ignore[method-assign]
    seen: list[int] = []
    t0 = time.monotonic()
    s.follow("t" * 24, lambda m: seen.append(m["meta"]["seq"]))
    assert seen == [1, 2, 3]
    assert s.attaches == [1] and s.notes == ["missed messages 2-2; re-attaching"]
    assert time.monotonic() - t0 >= 0.2


def test_a_final_message_behind_the_disconnect_still_ends_the_follow(monkeypatch):
    """The disconnect is reported from the read loop, each message from a thread of its own: the
    server's last word before it hangs up (a stopping server's "failed") can come after it."""
    monkeypatch.setattr(session_mod, "RECONNECT_WINDOW", 0.5)  # the server is gone
    s = Recorder()
    s._events.put((s._generation, "message", message(1)))
    s._events.put((s._generation, "disconnect", None))
    s._events.put((s._generation, "message", message(2, "failed")))
    seen: list[int] = []
    final = s.follow("t" * 24, lambda m: seen.append(m["meta"]["seq"]))
    assert seen == [1, 2] and final["data"]["action"] == "failed"
    assert s.attaches == [] and s.notes == []


# -- the sandbox-limit hints of a batch ------------------------------------------------------

def test_the_limit_hint_of_a_batch_is_that_of_its_first_line_naming_one():
    import re

    from flow_kit_cloudbuild.server.tasks import pipeline

    def line_by_line(lines: list[str]) -> str:
        for line in lines:
            for hint, words in pipeline._LIMIT_WORDS.items():
                if re.search("|".join(map(re.escape, words)), line, re.I):
                    return hint
        return ""

    rnd = random.Random(5)
    words = ["ok", "x", "EAGAIN", "enomem", "File too LARGE", "fork: retry", "ſ", "é", "out of memory",
             "efbig", "MemoryError", "eagai", "n", "Cannot  allocate memory"]
    for _ in range(5000):
        lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 4))) for _ in range(rnd.randint(1, 5))]
        assert pipeline._limit_hint("\n".join(lines)) == line_by_line(lines), lines
