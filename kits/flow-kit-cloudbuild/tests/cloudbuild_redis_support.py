"""Real parts for the Redis-mode tests: a real ``redis-server`` on a free loopback port (no
persistence, so a restart loses everything: the worst case), and a cluster of real server
processes (gateways and workers) sharing it and one shared directory."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cloudbuild_server_support import ServerProc, _wait_port, free_port

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="the Redis-mode tests need redis-server (.ci/run installs it)")


#: The ACL user of a deployment, as docs/cloud-build.md ("Who may use Redis") makes it: its own
#: keys and Socket.IO channel, no dangerous commands.
ACL_RULES = ("~flowcb:*", "+@all", "-@dangerous")


class RedisServer:
    """``password``: the default user's (``requirepass``); ``users``: ACL users (name, password)
    with the rights docs/cloud-build.md gives the deployment's user (``ACL_RULES``); ``tls``:
    (CA, certificate, key) files, to listen on ``port`` with TLS only (``--port 0 --tls-port``;
    clients need no certificate) and make ``rediss://`` URLs that name the CA (``ssl_ca_certs``)."""

    def __init__(self, base: Path, *, password: str | None = None,
                 users: tuple[tuple[str, str], ...] = (), tls: tuple[Path, Path, Path] | None = None) -> None:
        self.dir = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.users = users
        self.tls = tls
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL with the default user's password, if it has one."""
        return self.url_for(None, self.password)

    def url_for(self, user: str | None, password: str | None) -> str:
        auth = f"{user or ''}:{password}@" if password is not None else (f"{user}@" if user else "")
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        auth: list[str] = ["--requirepass", self.password] if self.password is not None else []
        for name, password in self.users:
            auth += ["--user", name, "on", f">{password}", *ACL_RULES]
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            ca, cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", *listen, "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1", "--dir", str(self.dir), *auth],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT, cwd=str(self.dir))
        try:
            _wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"redis-server did not listen on {self.port}: {self.log()[-2000:]}") from None
        return self

    def log(self) -> str:
        return (self.dir / "redis.log").read_text(errors="replace")

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


def secret_file(where: Path) -> Path:
    """A deployment's --secret-file (every gateway and worker of it gets the same one)."""
    path = where / "flowcb-secret"
    if not path.exists():
        where.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path


class Cluster:
    """Gateways and workers of one deployment (same Redis, same shared dir)."""

    def __init__(self, base: Path, redis: RedisServer, *, heartbeat: float = 3.0,
                 max_attempts: int = 3, config: dict | None = None, extra: tuple[str, ...] = (),
                 shared_dir: bool = True, env: dict[str, str] | None = None) -> None:
        self.base = base
        self.redis = redis
        self.shared = base / "shared"
        self.shared_dir = shared_dir  # False: no --shared-dir (with --store s3://... in ``extra``)
        self.env = dict(env or {})      # for every process (say, the AWS variables of a store)
        self.heartbeat = heartbeat
        self.max_attempts = max_attempts
        self.config = config or {"checks": [], "freeze-windows": []}
        self.extra = extra  # more server options for every process
        self.secret = secret_file(base)
        self.procs: list[ServerProc] = []

    def add(self, role: str, concurrency: int = 1, *, url: str | None = None,
            extra: tuple[str, ...] = ()) -> ServerProc:
        """A process of the deployment; ``url`` (say, with a password) goes in the environment
        (FLOW_CLOUDBUILD_REDIS_URL), as the docs advise, instead of the command line; a
        ``--redis-url`` of its own in ``extra`` replaces the Redis's URL."""
        n = len(self.procs)
        where = ("--redis-url", self.redis.url) if url is None and "--redis-url" not in extra else ()
        proc = ServerProc(self.base / f"{role}{n}" / "data", *where, "--role", role,
                          *(("--shared-dir", str(self.shared)) if self.shared_dir else ()),
                          "--heartbeat-timeout", str(self.heartbeat),
                          "--max-attempts", str(self.max_attempts), "--concurrency", str(concurrency),
                          "--secret-file", str(self.secret), *self.extra, *extra, config=dict(self.config),
                          env={**self.env, **({"FLOW_CLOUDBUILD_REDIS_URL": url} if url is not None else {})})
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


