"""The parts the task service is made of, per mode, side by side.

=============  ===========================================  ==============================================
part           embedded (``embedded.py``)                   Redis (``redis/``)
=============  ===========================================  ==============================================
message bus    ``RoomBus``: Socket.IO rooms in this process  ``redis.fanout.RedisBus``: to every gateway,
                                                             whose ``TaskFanout`` passes it on in seq order
store          ``store.FileTaskStore``                       ``redis.store.RedisTaskStore``
queue          ``queue.InProcessQueue``                      ``redis.queue.RedisStreamQueue``
artifacts      ``artifacts.LocalArtifactStore``              ``redis.artifacts.SharedArtifactStore``
run policy     ``EmbeddedPolicy``: one process runs all      ``redis.run_policy.RedisPolicy``: attempts and
                                                             retries, cancel through Redis, publish locks
companions     none                                          ``redis.members``: presence, no-worker watch
=============  ===========================================  ==============================================

``embedded.make_service`` and ``redis.make_service`` assemble one ``service.TaskService`` from
them (``app.Server`` calls the one for its mode; ``roles.make_service`` is the Redis one).
"""
