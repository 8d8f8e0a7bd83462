"""Real parts for the Redis-mode tests: a real ``redis-server`` on a free loopback port (no
persistence, so a restart loses everything: the worst case), and a cluster of real server
processes (gateways and workers) sharing it and one shared directory."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cloudbuild_server_support import ServerProc, _wait_port, free_port

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="the Redis-mode tests need redis-server (.ci/run installs it)")


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server for one test (import this fixture into the test module)."""
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


class RedisServer:
    def __init__(self, base: Path) -> None:
        self.dir = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1", "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT, cwd=str(self.dir))
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


class Cluster:
    """Gateways and workers of one deployment (same Redis, same shared dir)."""

    def __init__(self, base: Path, redis: RedisServer, *, heartbeat: float = 3.0,
                 max_attempts: int = 3, config: dict | None = None, extra: tuple[str, ...] = ()) -> None:
        self.base = base
        self.redis = redis
        self.shared = base / "shared"
        self.heartbeat = heartbeat
        self.max_attempts = max_attempts
        self.config = config or {"checks": [], "freeze-windows": []}
        self.extra = extra  # more server options for every process
        self.procs: list[ServerProc] = []

    def add(self, role: str, concurrency: int = 1) -> ServerProc:
        n = len(self.procs)
        proc = ServerProc(self.base / f"{role}{n}" / "data", "--redis-url", self.redis.url, "--role", role,
                          "--shared-dir", str(self.shared), "--heartbeat-timeout", str(self.heartbeat),
                          "--max-attempts", str(self.max_attempts), "--concurrency", str(concurrency),
                          *self.extra, config=dict(self.config))
        # artifact URLs must point at a gateway: every process uses the first gateway's base
        proc.start()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.stop()


def kill(proc: ServerProc) -> None:
    """SIGKILL a server process and the builds it started (they run in their own sessions)."""
    assert proc.proc is not None
    children = subprocess.run(["pgrep", "-P", str(proc.proc.pid)], capture_output=True, text=True).stdout.split()
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    for pid in children:  # builds run in new sessions; they would be orphans of a real crash too
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid), signal.SIGKILL)


WORKER_RE = re.compile(r"running on worker [^:]+:(\d+):")


def worker_pid(msgs: list[dict]) -> list[int]:
    """Pids of the workers that ran the task's attempts, in order (from the log)."""
    return [int(m.group(1)) for msg in msgs
            if (m := WORKER_RE.search(msg["data"]["payload"]["message"]))]


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


