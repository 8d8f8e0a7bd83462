"""The parts the task service is made of, per mode, side by side.

=============  ===========================================  ==============================================
part           embedded (``embedded.py``)                   Redis (``redis/``)
=============  ===========================================  ==============================================
message bus    ``RoomBus``: Socket.IO rooms in this process  ``RedisBus``: published to every gateway,
                                                             ``fanout.TaskFanout`` passes it on in seq order
store          ``store.FileTaskStore``                       ``redis.store.RedisTaskStore``
queue          ``queue.InProcessQueue``                      ``redis.queue.RedisStreamQueue``
artifacts      ``artifacts.LocalArtifactStore``              ``redis.artifacts.SharedArtifactStore``
run policy     ``EmbeddedPolicy``: one process runs all      ``redis.policy.RedisPolicy``: attempts and
                                                             retries, cancel through Redis, publish locks
companions     none                                          ``redis.members``: presence, no-worker watch
=============  ===========================================  ==============================================

``embedded.make_service`` and ``redis.make_service`` assemble one ``service.TaskService`` from
them (``app.Server`` calls the one for its mode).
"""
