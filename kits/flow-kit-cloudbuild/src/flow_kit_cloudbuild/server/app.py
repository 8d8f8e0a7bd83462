"""The server: Socket.IO events (publish, attach, cancel), put together with the HTTP routes
(http_api.py, dashboard.py) on the one Starlette app of http.py.

Every handler answers: a malformed, oversized or unknown request gets an error reply with a
protocol error code, and nothing a client sends can stop other tasks (handler errors are caught
and answered with "internal").
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.dashboard.pages import Dashboard
from flow_kit_cloudbuild.server.errors import RequestError, bad_request
from flow_kit_cloudbuild.server.http import access, sio_adapter
from flow_kit_cloudbuild.server.http import responses as http
from flow_kit_cloudbuild.server.http.api import ApiRoutes
from flow_kit_cloudbuild.server.http.deployments import Deployments, HostRouter
from flow_kit_cloudbuild.server.storage.artifacts import ArtifactStore
from flow_kit_cloudbuild.server.tasks.queue import JobQueue
from flow_kit_cloudbuild.server.tasks.service import TaskService, public
from flow_kit_cloudbuild.server.tasks.store import TaskStore

log = logging.getLogger("flow_kit_cloudbuild.server")
Scope = dict[str, Any]
#: What a connect with a missing or wrong token is told (connect_error, code "auth").
AUTH_REFUSAL = 'missing or invalid token; connect with auth {"token": "<token>"}'


class Server:
    """What create_app builds: the ASGI app plus the service behind it (handy in tests)."""

    def __init__(self, cfg: ServerConfig, *, store: TaskStore | None = None,
                 queue: JobQueue | None = None, artifacts: ArtifactStore | None = None,
                 redis: Any = None) -> None:
        import socketio

        self.cfg = cfg
        self.redis = redis  # roles.RedisOptions in Redis mode, else None (embedded)
        self.sio = socketio.AsyncServer(
            async_mode="asgi", cors_allowed_origins=[], transports=["websocket"],
            max_http_buffer_size=max(cfg.max_event_bytes * 4, 1_000_000), logger=False,
            engineio_logger=False, ping_interval=25, ping_timeout=60)
        # the websocket connections seen from ASGI: handshake limits, closing, backpressure
        self.gate = sio_adapter.SocketGate(
            on_open=lambda conn, scope: self.handshakes.opened(conn.id, access.scope_address(scope)),
            on_close=lambda conn: self.handshakes.closed(conn.id))
        if redis is not None:  # the service's parts, per mode (backends/)
            from flow_kit_cloudbuild.server.backends import redis as redis_backend

            self.service: TaskService = redis_backend.make_service(cfg, redis, self.sio, self.gate)
        else:
            from flow_kit_cloudbuild.server.backends import embedded

            self.service = embedded.make_service(cfg, self.sio, self.gate, store=store, queue=queue,
                                                 artifacts=artifacts)
        self._tokens = [t.encode("utf-8") for t in cfg.tokens]
        self._sessions: dict[str, str] = {}  # sid -> token hash
        self.failures = access.FailureLimiter(cfg.auth_failures, cfg.auth_window)
        self.handshakes = access.Handshakes(cfg.auth_timeout, self.gate.end)
        self._background: set[asyncio.Future[Any]] = set()
        self._register_events()
        self.dashboard = Dashboard(self)  # the web dashboard under / (dashboard.py)
        self.api = ApiRoutes(self)  # the client API's HTTP routes (http_api.py)
        # Socket.IO in front (the gate sees websockets first), the one HTTP app (http.py) behind it
        self.gate.app = socketio.ASGIApp(self.sio, other_asgi_app=http.build([*self.dashboard.routes(),
                                                                               *self.api.routes()]),
                                         on_startup=self.service.start, on_shutdown=self.service.stop)
        # deployments at their own origins (<id>.<deploy-domain>) in front; the rest to the gate
        self.deployments = Deployments(self.service, cfg.deploy_origin[1])
        if cfg.targets:  # prod releases copied to S3 targets (storage/targets.py)
            from flow_kit_cloudbuild.server.http.deployments import content_type
            from flow_kit_cloudbuild.server.storage.targets import Targets

            self.targets = Targets(cfg.targets, self.service.artifacts, content_type)
            self.service.on_prod_changed.append(self.targets.on_prod_changed)
        self.asgi = HostRouter(self.gate, self.deployments)

    # -- auth ----------------------------------------------------------------------------------
    def check_token(self, token: Any, address: str) -> tuple[str | None, int]:
        """(token hash, 0) for a valid token; (None, 0) for a refused one, counted against
        ``address``; (None, seconds) while ``address`` has used up its failed attempts."""
        wait = self.failures.retry_after(address)
        if wait:
            return None, wait
        if self.token_ok(token):
            return protocol.token_hash(token), 0
        self.failures.failed(address)
        return None, 0

    def token_ok(self, token: Any) -> bool:
        if not isinstance(token, str) or not token or len(token) > 1024:
            return False
        given = token.encode("utf-8")
        found = False
        for t in self._tokens:  # compare against every token, so timing says nothing
            found |= hmac.compare_digest(given, t)
        return found

    # -- Socket.IO -----------------------------------------------------------------------------
    def _later(self, coro_fn: Callable[[], Awaitable[Any]]) -> None:
        """Run after the current handler returned, so its ack goes out before what this sends."""
        def start() -> None:
            fut = asyncio.ensure_future(coro_fn())
            self._background.add(fut)
            fut.add_done_callback(self._background.discard)
        asyncio.get_running_loop().call_soon(start)

    def _register_events(self) -> None:
        from socketio.exceptions import ConnectionRefusedError

        sio = self.sio

        @sio.event
        async def connect(sid: str, environ: dict, auth: Any = None) -> None:
            conn = sio_adapter.connection_of(environ)

            def refuse(code: str, message: str, **extra: Any) -> ConnectionRefusedError:
                # the gate closes the whole connection once the refusal went out, so a client
                # cannot try token after token on one socket (sio_adapter.SocketGate)
                # CONNECT_ERROR {"message": sentence, "data": {"code", "message", ...}}: plain
                # JSON that any Socket.IO client reads (err.message, err.data in JavaScript)
                return ConnectionRefusedError(message, protocol.refusal(code, message, **extra))

            if self.redis is not None and not self.redis.serves_clients:
                raise refuse(protocol.ERROR_REFUSED, "this is a build worker; connect to a gateway")
            token = auth.get("token") if isinstance(auth, dict) else None
            address = access.environ_address(environ)
            token_hash, wait = self.check_token(token, address)
            if wait:
                raise refuse(protocol.ERROR_REFUSED, self.failures.refusal(address, wait), retryAfter=wait)
            if token_hash is None:
                raise refuse(protocol.ERROR_AUTH, AUTH_REFUSAL)
            self.handshakes.authenticated(conn.id if conn is not None else None)
            self.gate.bind(sid, conn)
            self._sessions[sid] = token_hash

        @sio.event
        async def disconnect(sid: str, *args: Any) -> None:
            self._sessions.pop(sid, None)

        def handler(fn: Callable[[str, str, dict], Awaitable[dict]]) -> Callable[..., Awaitable[dict]]:
            async def wrapped(sid: str, *args: Any) -> dict:
                try:
                    token_hash = self._sessions.get(sid)
                    if token_hash is None:
                        raise RequestError(protocol.ERROR_AUTH, "not authenticated; reconnect with a valid token")
                    if len(args) != 1 or not isinstance(args[0], dict):
                        raise bad_request(f"{fn.__name__} takes one object payload")
                    try:
                        size = len(json.dumps(args[0]))
                    except (TypeError, ValueError):
                        raise bad_request("payload must be plain JSON") from None
                    if size > self.cfg.max_event_bytes:
                        raise bad_request(f"payload is larger than {self.cfg.max_event_bytes} bytes; send less")
                    return await fn(sid, token_hash, args[0])
                except RequestError as exc:
                    return exc.ack()
                except Exception as exc:  # never let one request disturb the server
                    log.exception("%s handler failed", fn.__name__)
                    return protocol.error(protocol.ERROR_INTERNAL,
                                          f"internal error ({type(exc).__name__}); see the server log")
            wrapped.__name__ = fn.__name__
            return wrapped

        async def publish(sid: str, token_hash: str, data: dict) -> dict:
            task_id = await self.service.submit(data, token_hash)
            await self.service.bus.watch(sid, task_id)
            self._later(lambda: self.service.enqueue(task_id))
            return protocol.ok(taskId=task_id)

        async def attach(sid: str, token_hash: str, data: dict) -> dict:
            unknown = sorted(str(k)[:40] for k in data if k not in ("taskId", "afterSeq"))
            if unknown:
                raise bad_request(f"unknown field(s) {', '.join(unknown)}; send taskId and afterSeq")
            after = data.get("afterSeq", 0)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise bad_request("afterSeq must be an integer >= 0")
            record = await self.service.owned(data.get("taskId"), token_hash)
            task_id = record["taskId"]

            async def replay() -> None:
                await self.service.replay(sid, task_id, after)
            self._later(replay)
            return protocol.ok(task=public(record))

        async def cancel(sid: str, token_hash: str, data: dict) -> dict:
            if set(data) != {"taskId"}:
                raise bad_request("cancel takes exactly {\"taskId\": ...}")
            return await self.service.cancel(data["taskId"], token_hash)

        for name, fn in ((protocol.EVENT_PUBLISH, publish), (protocol.EVENT_ATTACH, attach),
                         (protocol.EVENT_CANCEL, cancel)):
            sio.on(name, handler(fn))

        @sio.on("*")
        async def unknown_event(event: str, sid: str, *args: Any) -> dict:
            return protocol.error(protocol.ERROR_BAD_REQUEST,
                                  f"unknown event {str(event)[:40]!r}; use publish, attach or cancel")


def create_app(cfg: ServerConfig, redis: Any = None) -> Server:
    """Build the server for ``cfg``; serve ``create_app(cfg).asgi`` with any ASGI server.

    ``redis`` (a ``roles.RedisOptions``) moves state, queue and log delivery to Redis.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Server(cfg, redis=redis)
