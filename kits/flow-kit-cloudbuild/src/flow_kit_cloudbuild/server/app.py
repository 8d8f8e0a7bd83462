"""The ASGI application: Socket.IO events (publish, attach, cancel) and the HTTP routes.

Every handler answers: a malformed, oversized or unknown request gets an error reply with a
protocol error code, and nothing a client sends can stop other tasks (handler errors are caught
and answered with "internal").
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__, protocol
from . import access, housekeeping, policy, sio_adapter
from .artifacts import ArtifactStore
from .config import ServerConfig
from .dashboard import Dashboard
from .errors import RequestError, bad_request
from .http_headers import ARTIFACT_SECURITY_HEADERS, artifact_headers
from .queue import JobQueue
from .service import TaskService, public
from .store import TaskStore

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
            from . import roles

            self.service: TaskService = roles.make_service(cfg, redis, self.sio, self.gate)
        else:
            from .backends import embedded

            self.service = embedded.make_service(cfg, self.sio, self.gate, store=store, queue=queue,
                                                 artifacts=artifacts)
        self._tokens = [t.encode("utf-8") for t in cfg.tokens]
        self._sessions: dict[str, str] = {}  # sid -> token hash
        self.failures = access.FailureLimiter(cfg.auth_failures, cfg.auth_window)
        self.handshakes = access.Handshakes(cfg.auth_timeout, self.gate.end)
        self._receiving: dict[str, dict[str, int]] = {}  # token hash -> {upload id: bytes so far}
        self._background: set[asyncio.Future[Any]] = set()
        self._register_events()
        self.dashboard = Dashboard(self)  # the web dashboard under / (dashboard.py)
        self.gate.app = socketio.ASGIApp(self.sio, other_asgi_app=self.http, on_startup=self.service.start,
                                         on_shutdown=self.service.stop)
        self.asgi = self.gate

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

    # -- HTTP ----------------------------------------------------------------------------------
    async def http(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except RequestError as exc:
            status = {protocol.ERROR_AUTH: 401, protocol.ERROR_NOT_FOUND: 404, protocol.ERROR_FORBIDDEN: 403,
                      protocol.ERROR_BAD_REQUEST: 400}.get(exc.code, 400)
            await _json(send, status, exc.ack())
        except _HTTPError as exc:
            await _json(send, exc.status, {**protocol.error(exc.code, exc.message), **exc.extra},
                        headers=exc.headers)
        except Exception as exc:
            log.exception("HTTP %s %s failed", scope.get("method"), scope.get("path"))
            await _json(send, 500, protocol.error(protocol.ERROR_INTERNAL, f"internal error ({type(exc).__name__})"))

    def _bearer(self, scope: Scope) -> str:
        token = None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    token = text[7:].strip()
                break
        address = access.scope_address(scope)
        token_hash, wait = self.check_token(token, address)
        if wait:
            raise _HTTPError(429, protocol.ERROR_REFUSED, self.failures.refusal(address, wait),
                             headers=[(b"retry-after", str(wait).encode())], retryAfter=wait)
        if token_hash is None:
            raise RequestError(protocol.ERROR_AUTH, "missing or invalid token; send Authorization: Bearer <token>")
        return token_hash

    async def _route(self, scope: Scope, receive: Callable, send: Callable) -> None:
        method, path = scope["method"], scope["path"]
        if await self.dashboard.route(scope, receive, send):
            return None
        if path == protocol.PATH_HEALTH:
            _allow(method, "GET")
            return await _json(send, 200, {"ok": True, "version": __version__})
        if path == protocol.PATH_UPLOADS:
            _allow(method, "POST")
            token_hash = self._bearer(scope)
            return await self._upload(scope, receive, send, token_hash)
        if path.startswith(protocol.PATH_TASKS):
            _allow(method, "GET")
            token_hash = self._bearer(scope)
            record = await self.service.owned(path[len(protocol.PATH_TASKS):], token_hash)
            return await _json(send, 200, public(record))
        if path.startswith(protocol.PATH_ARTIFACTS):
            _allow(method, "GET")
            rest = path[len(protocol.PATH_ARTIFACTS):]
            task_id, _, name = rest.partition("/")
            if not policy.is_id(task_id):
                raise _HTTPError(404, protocol.ERROR_NOT_FOUND, "no such task; check the URL")
            listed = await self.service.artifacts.list(task_id)
            if listed is None:
                raise _HTTPError(404, protocol.ERROR_NOT_FOUND, "this task has no artifacts; check the URL")
            if not name:
                base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{task_id}/"
                return await _json(send, 200, [{"name": a["name"], "url": base + quote(a["name"]),
                                                "size": a["size"]} for a in listed], ARTIFACT_SECURITY_HEADERS)
            opened = await self.service.artifacts.open(task_id, name)
            if opened is None:
                raise _HTTPError(404, protocol.ERROR_NOT_FOUND, f"no artifact {name[:100]!r} in this task")
            size, chunks = opened
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-length", str(size).encode()), *artifact_headers(name)]})
            async for block in chunks:
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return None
        raise _HTTPError(404, protocol.ERROR_NOT_FOUND, f"no route {path[:100]}; see the protocol for the routes")

    async def _upload(self, scope: Scope, receive: Callable, send: Callable, token_hash: str) -> None:
        limit = self.cfg.max_upload_bytes
        declared = 0
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _HTTPError(400, protocol.ERROR_BAD_REQUEST, "bad Content-Length") from None
                if declared > limit:
                    raise _HTTPError(413, protocol.ERROR_BAD_REQUEST,
                                     f"upload is larger than {limit} bytes; upload fewer files")
        uploads = self.service.paths.uploads
        receiving = self._receiving.setdefault(token_hash, {})
        upload_id = secrets.token_hex(12)
        receiving[upload_id] = 0
        try:
            quota = self._upload_quota(uploads, token_hash, receiving)
            quota(max(declared, 0))
            uploads.mkdir(parents=True, exist_ok=True)
            target = uploads / f"{upload_id}.tar.gz"
            tmp = uploads / f".{upload_id}.part"
            size = 0
            try:
                with open(tmp, "wb") as fh:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            raise _HTTPError(400, protocol.ERROR_BAD_REQUEST, "upload interrupted")
                        body = message.get("body", b"")
                        size += len(body)
                        if size > limit:
                            raise _HTTPError(413, protocol.ERROR_BAD_REQUEST,
                                             f"upload is larger than {limit} bytes; upload fewer files")
                        receiving[upload_id] = size
                        quota(0)
                        fh.write(body)
                        if not message.get("more_body"):
                            break
                with open(tmp, "rb") as fh:
                    if fh.read(2) != b"\x1f\x8b":
                        raise _HTTPError(400, protocol.ERROR_BAD_REQUEST, "upload must be a .tar.gz archive")
                (uploads / f"{upload_id}.json").write_text(json.dumps(
                    {"tokenHash": token_hash, "size": size, "createdAt": protocol.now_ms()}), encoding="utf-8")
                os.replace(tmp, target)
            finally:
                if tmp.exists():
                    tmp.unlink()
        finally:
            receiving.pop(upload_id, None)
            if not receiving:
                self._receiving.pop(token_hash, None)
        await _json(send, 201, {"uploadId": upload_id})

    def _upload_quota(self, uploads: Path, token_hash: str, receiving: dict[str, int]) -> Callable[[int], None]:
        """A check that the token's pending uploads (stored and being received) fit its quota."""
        count, stored = housekeeping.pending_uploads(uploads, token_hash)
        max_count, max_bytes = self.cfg.max_pending_uploads, self.cfg.max_pending_upload_bytes
        later = (f"publish them, or wait until they expire ({self.cfg.upload_retention_hours:g} h "
                 "after upload)")
        if count + len(receiving) > max_count:
            raise _HTTPError(429, protocol.ERROR_REFUSED,
                             f"this token already holds {max_count} uploads no task used yet; {later}")

        def check(more: int) -> None:
            if max_bytes and stored + sum(receiving.values()) + more > max_bytes:
                raise _HTTPError(429, protocol.ERROR_REFUSED,
                                 f"this token's uploads that no task used yet would exceed {max_bytes} bytes; "
                                 f"{later}")
        return check


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> None:
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = headers or [], extra
        super().__init__(message)


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _HTTPError(405, protocol.ERROR_BAD_REQUEST, f"method {method[:10]} not allowed here; use {allowed}")


async def _json(send: Callable, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def create_app(cfg: ServerConfig, redis: Any = None) -> Server:
    """Build the server for ``cfg``; serve ``create_app(cfg).asgi`` with any ASGI server.

    ``redis`` (a ``roles.RedisOptions``) moves state, queue and fan-out to Redis.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Server(cfg, redis=redis)
