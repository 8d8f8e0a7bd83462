"""Redis mode: what a server process is made of, by role.

``--role all`` (the default) serves clients and runs builds; ``gateway`` serves clients only
(Socket.IO, HTTP, uploads, artifact downloads) and puts jobs on the queue; ``worker`` runs
builds only (it refuses Socket.IO clients and answers /healthz and the read-only HTTP routes).
Every process of one deployment points at the same Redis and the same shared directory.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("all", "gateway", "worker")


@dataclass
class RedisOptions:
    url: str
    role: str = "all"
    shared_dir: Path | None = None     # uploads/ and artifacts/; default: the data dir
    heartbeat_timeout: float = 30.0    # seconds without a heartbeat before a job is retried
    max_attempts: int = 3              # deliveries of one job before the task fails
    process_id: str = field(default_factory=lambda: worker_id())
    member: Any = None                 # backends.redis.members.Member, made by ``membership``

    @property
    def serves_clients(self) -> bool:
        return self.role in ("all", "gateway")

    @property
    def runs_builds(self) -> bool:
        return self.role in ("all", "worker")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def shared_path(cfg: Any, opts: RedisOptions) -> Path:
    return (opts.shared_dir or cfg.data_dir).expanduser().resolve()


def membership(cfg: Any, opts: RedisOptions) -> Any:
    """This process's ``backends.redis.members.Member`` (made once)."""
    from flow_kit_cloudbuild.server.backends.redis.members import Member

    if opts.member is None:
        opts.member = Member(opts.process_id, opts.role, opts.runs_builds, shared_path(cfg, opts),
                             slots=cfg.concurrency if opts.runs_builds else 0, store=cfg.store or "")
    return opts.member


def join(cfg: Any, opts: RedisOptions) -> None:
    """Before listening: register, and refuse (ServerConfigError) when another live process of
    the deployment does not see this process's shared dir (backends.redis.members, "Shared-dir probe")."""
    from flow_kit_cloudbuild.server.backends.redis.members import join as join_members

    join_members(opts.url, membership(cfg, opts))
