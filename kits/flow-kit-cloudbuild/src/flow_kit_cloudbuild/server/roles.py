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
    member: Any = None                 # redis_members.Member, made by ``membership``

    @property
    def serves_clients(self) -> bool:
        return self.role in ("all", "gateway")

    @property
    def runs_builds(self) -> bool:
        return self.role in ("all", "worker")


def check_reachable(url: str) -> str | None:
    """None when Redis answers PING at ``url``, else why not (said before the server starts)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure is reported the same way, with its text
        return str(exc) or type(exc).__name__
    return None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def shared_path(cfg: Any, opts: RedisOptions) -> Path:
    return (opts.shared_dir or cfg.data_dir).expanduser().resolve()


def membership(cfg: Any, opts: RedisOptions) -> Any:
    """This process's ``redis_members.Member`` (made once)."""
    from .redis_members import Member

    if opts.member is None:
        opts.member = Member(opts.process_id, opts.role, opts.runs_builds, shared_path(cfg, opts),
                             slots=cfg.concurrency if opts.runs_builds else 0)
    return opts.member


def join(cfg: Any, opts: RedisOptions) -> None:
    """Before listening: register, and refuse (ServerConfigError) when another live process of
    the deployment does not see this process's shared dir (redis_members, "Shared-dir probe")."""
    from .redis_members import join as join_members

    join_members(opts.url, membership(cfg, opts))


def client_manager(opts: RedisOptions) -> Any:
    """The AsyncServer's client manager: pub/sub across gateways; a worker only writes."""
    from .redis_fanout import task_manager_class

    return task_manager_class()(opts.url, channel="flowcb-socketio", write_only=not opts.serves_clients)


def make_service(cfg: Any, opts: RedisOptions, sio: Any) -> Any:
    """The ``TaskService`` of one process, assembled from the Redis parts for ``opts.role``."""
    import redis.asyncio as aioredis

    from .pipeline import Paths
    from .redis_artifacts import SharedArtifactStore
    from .redis_fanout import TaskFanout
    from .redis_locks import RedisLocks
    from .redis_members import NoWorkerWatch, Presence
    from .redis_queue import RedisStreamQueue
    from .redis_service import RedisBus, RedisPolicy
    from .redis_store import RedisTaskStore
    from .service import TaskService

    shared = shared_path(cfg, opts)
    r = aioredis.Redis.from_url(opts.url, socket_connect_timeout=3, health_check_interval=5,
                                retry_on_timeout=True)
    me = opts.process_id
    # records and logs expire a day after retention-days (the sweep deletes them on time, and
    # keeps prod releases); retention-days 0 keeps them
    store = RedisTaskStore(r, retention=int((cfg.retention_days + 1) * 86400) if cfg.retention_days > 0 else None)
    queue = RedisStreamQueue(r, me, concurrency=cfg.concurrency, heartbeat_timeout=opts.heartbeat_timeout,
                             consume=opts.runs_builds, per_group=cfg.max_builds_per_token)
    artifacts = SharedArtifactStore(shared / "artifacts", r)
    manager = sio.manager
    fanout = None
    if opts.serves_clients:
        fanout = TaskFanout(sio, store, grace=opts.heartbeat_timeout * 2)
        manager.fanout = fanout
    paths = Paths(cfg.data_dir)
    paths.uploads = shared / "uploads"      # gateways store them, workers read them
    paths.artifacts = shared / "artifacts"
    service = TaskService(cfg, store=store, queue=queue, artifacts=artifacts,
                          bus=RedisBus(manager, fanout), paths=paths,
                          policy=RedisPolicy(locks=RedisLocks(r), worker_id=me, max_attempts=opts.max_attempts))
    service.companions.append(Presence(r, membership(cfg, opts), opts.heartbeat_timeout))
    if opts.serves_clients:
        service.companions.append(NoWorkerWatch(service, r, heartbeat_timeout=opts.heartbeat_timeout,
                                                queue_timeout=cfg.queue_timeout))
    return service
