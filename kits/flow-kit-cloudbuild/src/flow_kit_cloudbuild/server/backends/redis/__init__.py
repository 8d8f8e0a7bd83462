"""Redis mode's parts: state, queue and fan-out in Redis, files on a shared dir.

``store.RedisTaskStore`` (records, per-task message streams), ``queue.RedisStreamQueue`` (a
stream with a consumer group, per-token slots), ``artifacts.SharedArtifactStore`` (files on the
shared dir, the releases index in Redis), ``streams`` (``RedisBus``: a gateway's one XREAD
reader over the streams its watchers need; a worker's bus does nothing, the stream is the
delivery), ``run_policy.RedisPolicy``
(attempts and retries, cancel through Redis, publish locks, no drain on SIGTERM),
``members`` (presence, the shared-dir probe, the no-worker watch) and ``locks``.
``make_service`` assembles them for one process's role (``roles.RedisOptions``).

redis-py is imported only when a Redis-mode server is made; its client decodes replies
(``decode_responses=True``), so every part reads ``str``.
"""

from __future__ import annotations

from typing import Any

from flow_kit_cloudbuild.server.backends.redis.artifacts import SharedArtifactStore
from flow_kit_cloudbuild.server.backends.redis.locks import RedisLocks
from flow_kit_cloudbuild.server.backends.redis.members import NoWorkerWatch, Presence
from flow_kit_cloudbuild.server.backends.redis.queue import RedisStreamQueue
from flow_kit_cloudbuild.server.backends.redis.releases import RedisReleases
from flow_kit_cloudbuild.server.backends.redis.roles import membership, shared_path
from flow_kit_cloudbuild.server.backends.redis.run_policy import RedisPolicy
from flow_kit_cloudbuild.server.backends.redis.store import RedisTaskStore
from flow_kit_cloudbuild.server.backends.redis.streams import make_bus
from flow_kit_cloudbuild.server.storage.objects import make_object_store
from flow_kit_cloudbuild.server.tasks.bus import TaskLocks
from flow_kit_cloudbuild.server.tasks.pipeline import Paths
from flow_kit_cloudbuild.server.tasks.service import TaskService


def make_service(cfg: Any, opts: Any, sio: Any, gate: Any) -> TaskService:
    """The ``TaskService`` of one process, assembled from the Redis parts for ``opts.role``
    (``gate``: the ``sio_adapter.SocketGate`` in front of ``sio``)."""
    import redis.asyncio as aioredis

    from flow_kit_cloudbuild.server.signing import Signer

    signer = Signer(cfg.secret)  # --secret-file: what this process writes, the others check
    shared = shared_path(cfg, opts)
    r = aioredis.Redis.from_url(opts.url, socket_connect_timeout=3, health_check_interval=5,
                                retry_on_timeout=True, decode_responses=True)
    me = opts.process_id
    # records and logs expire a day after retention-days (the sweep deletes them on time, and
    # keeps prod releases); retention-days 0 keeps them
    store = RedisTaskStore(r, retention=int((cfg.retention_days + 1) * 86400) if cfg.retention_days > 0 else None,
                           signer=signer)
    queue = RedisStreamQueue(r, me, concurrency=cfg.concurrency, heartbeat_timeout=opts.heartbeat_timeout,
                             consume=opts.runs_builds, per_group=cfg.max_builds_per_token, signer=signer)
    objects = make_object_store(cfg.store, shared)  # --store s3://...: no shared dir needed
    artifacts = SharedArtifactStore(shared / "artifacts", r, signer=signer,
                                    objects=objects.child("artifacts") if cfg.store else None)
    locks = TaskLocks()
    bus = make_bus(r, sio, gate, store, locks, serves_clients=opts.serves_clients, process_id=me,
                   grace=opts.heartbeat_timeout * 2)
    paths = Paths(cfg.data_dir, objects)    # uploads: gateways store them, workers fetch them
    if not cfg.store:  # received in the shared dir, where they are stored (with S3: this data dir)
        paths.uploads = shared / "uploads"
    paths.artifacts = shared / "artifacts"
    service = TaskService(cfg, store=store, queue=queue, artifacts=artifacts,
                          bus=bus, locks=locks, paths=paths, releases=RedisReleases(r, signer),
                          policy=RedisPolicy(locks=RedisLocks(r), worker_id=me, max_attempts=opts.max_attempts))
    if service.sandbox is not None:  # one record of build uids for the whole deployment
        from flow_kit_cloudbuild.server.runtime.uids import RedisUidAllocator

        service.sandbox.uids = RedisUidAllocator(r, *cfg.build_uid_range)
    service.companions.append(Presence(r, membership(cfg, opts), opts.heartbeat_timeout))
    if opts.serves_clients:
        service.companions.append(NoWorkerWatch(service, r, heartbeat_timeout=opts.heartbeat_timeout,
                                                queue_timeout=cfg.queue_timeout))
    return service
