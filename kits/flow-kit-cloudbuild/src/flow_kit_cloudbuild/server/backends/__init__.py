"""The parts the task service is made of, per mode, side by side.

=============  ===========================================  ==============================================
part           embedded (``embedded.py``)                   Redis (``redis/``)
=============  ===========================================  ==============================================
message bus    ``bus.Hub``, fed by the service as it stores  ``redis.streams.RedisBus``: a ``bus.Hub`` fed by
                                                             the gateway's one XREAD reader of task streams
store          ``store.FileTaskStore``                       ``redis.store.RedisTaskStore``
queue          ``queue.InProcessQueue``                      ``redis.queue.RedisStreamQueue``
artifacts      ``artifacts.LocalArtifactStore``              ``redis.artifacts.SharedArtifactStore``
run policy     ``EmbeddedPolicy``: one process runs all      ``redis.run_policy.RedisPolicy``: attempts and
                                                             retries, cancel through Redis, publish locks
companions     none                                          ``redis.members``: presence, no-worker watch
=============  ===========================================  ==============================================

``embedded.make_service`` and ``redis.make_service`` assemble one ``service.TaskService`` from
them (``app.Server`` calls the one for its mode; ``backends.redis.make_service`` is the Redis one).
"""
