"""Concurrent and interrupted writers of config.json: nothing lost, never half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from offline import FLOW, offline_env


def test_ten_concurrent_writers_keep_every_key(flow_home: Path, tmp_path: Path) -> None:
    env = offline_env(flow_home)
    procs = [
        subprocess.Popen([*FLOW, "config", "set", f"writer{i}", str(i)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(10)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    data = json.loads((flow_home / "config.json").read_text())
    assert {f"writer{i}": i for i in range(10)}.items() <= data.items()


WRITER = """
import sys
from flowcore.config import update_global
big = "x" * 2_000_000
i = 0
while True:
    i += 1
    update_global(lambda d: d.update(counter=i, payload=big + str(i)))
    print(i, flush=True)
"""


def test_writer_killed_mid_write_leaves_old_or_new_file(flow_home: Path, tmp_path: Path) -> None:
    env = offline_env(flow_home)
    path = flow_home / "config.json"
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one complete write happened
        time.sleep(0.005 * attempt)  # on purpose: each attempt kills the writer at another point
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text())  # never truncated
        assert data["payload"] == "x" * 2_000_000 + str(data["counter"])
    # a later writer still works (the lock died with its holder)
    result = subprocess.run([*FLOW, "config", "set", "after", "1"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text())["after"] == 1
    # and it swept the temp files the killed writers left behind
    assert list(flow_home.glob(".config.json.*.tmp")) == []
