"""The server's one HTTP layer: a Starlette app for the API, artifacts and dashboard, Socket.IO inside.

Why Starlette: routing, request bodies and (streaming) responses were written twice by hand
(the API's router in app.py and the dashboard's), each with its own JSON helper and its own
map from error to status, and the two maps disagreed. Here there is one of each:

* ``json_response``: every JSON reply (``application/json``, ``Content-Length``).
* ``HTTPError``: a refusal with an explicit status (405, 413, 415, 429, the dashboard's 403s).
* ``STATUS`` / ``error_response``: how a ``RequestError`` of the service becomes a reply. Another
  token's task is **404 ``not-found``**, worded as a task that does not exist, on every route
  (``/api/tasks/<id>`` and ``/ui/api/tasks/<id>/...``): a reply that differed would confirm to
  any token holder that a guessed id exists. (Socket.IO acks keep the ``forbidden`` code that
  docs/protocol.md documents for them.)
* Every error reply carries ``Cache-Control: no-store`` and the page security headers, so an
  error is never cached nor rendered as a page, whichever route it came from.
* ``route``: a Starlette ``Route`` whose handler never lets an exception escape as anything but
  a JSON reply (500 ``internal`` for the unexpected, logged here), so one bad request cannot
  disturb the server; Starlette's own 404 (no route) and 405 (method) come out the same way.

``build`` assembles the app from the routes. Socket.IO stays in front of it (app.py):
python-socketio's public ``socketio.ASGIApp(sio, other_asgi_app=<this app>)`` inside
``sio_adapter.SocketGate``, so the gate sees every websocket first and frame by frame (its
refusal-then-close relies on being the outermost layer of a websocket), Engine.IO answers
``/socket.io/`` and hands every other request here, and runs the service's start and stop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.errors import RequestError
from flow_kit_cloudbuild.server.http.headers import SECURITY_HEADERS

log = logging.getLogger("flow_kit_cloudbuild.server")
#: Every method: routes that check the method themselves, after checks that must come first.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: The one map from a service error code to an HTTP status (another token's task: see module doc).
STATUS = {protocol.ERROR_AUTH: 401, protocol.ERROR_NOT_FOUND: 404, protocol.ERROR_FORBIDDEN: 404,
          protocol.ERROR_BAD_REQUEST: 400, protocol.ERROR_NAME_TAKEN: 403, protocol.ERROR_EXISTS: 409}
Headers = Iterable[tuple[bytes, bytes]]
Handler = Callable[[Request], Awaitable[Response]]


class HTTPError(Exception):
    """A refusal with its own status; ``extra`` goes into the error body (``retryAfter``)."""

    def __init__(self, status: int, code: str, message: str, *, headers: Headers = (), **extra: Any) -> None:
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = list(headers), extra
        super().__init__(message)


def with_headers(response: Response, headers: Headers) -> Response:
    """``response`` with raw ASGI header pairs added (repeated names kept, e.g. Set-Cookie)."""
    for name, value in headers:
        response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
    return response


def json_response(body: Any, status: int = 200, headers: Headers = ()) -> Response:
    """The server's JSON reply: ``application/json`` with a ``Content-Length``."""
    return with_headers(Response(json.dumps(body).encode("utf-8"), status, media_type="application/json"), headers)


def _error_reply(status: int, body: dict[str, Any], headers: Headers = ()) -> Response:
    return json_response(body, status, [(b"cache-control", b"no-store"), *SECURITY_HEADERS, *headers])


def error_response(exc: RequestError) -> Response:
    """The reply to a service error: ``STATUS``, with another token's task shown as missing."""
    shown = exc.over_http or exc
    return _error_reply(STATUS.get(shown.code, 400), shown.ack())


def allow(request: Request, *methods: str) -> None:
    """Refuse a method a route does not take (405), for routes registered with ``ANY_METHOD``."""
    if request.method not in methods:
        raise HTTPError(405, protocol.ERROR_BAD_REQUEST,
                        f"method {request.method[:10]} not allowed here; use {' or '.join(methods)}")


async def chunks(request: Request, limit: int, too_large: str) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused with 413 past ``limit`` bytes (counted as they
    come, whatever ``Content-Length`` said) and with 400 when the client goes away."""
    size = 0
    try:
        async for block in request.stream():
            size += len(block)
            if size > limit:
                raise HTTPError(413, protocol.ERROR_BAD_REQUEST, too_large)
            if block:
                yield block
    except ClientDisconnect:
        raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "request interrupted") from None


class RawResponse(Response):
    """A reply written by ``write(receive, send)`` on the ASGI channel itself: a long-lived stream
    (server-sent events) that watches for the client going away while it waits."""

    def __init__(self, write: Callable[[Receive, Send], Awaitable[None]]) -> None:
        super().__init__()
        self.write = write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.write(receive, send)


def _answering(handler: Handler) -> Handler:
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc)
        except HTTPError as exc:
            return _error_reply(exc.status, {**protocol.error(exc.code, exc.message), **exc.extra}, exc.headers)
        except Exception as exc:  # never let one request disturb the server
            log.exception("HTTP %s %s failed", request.method, request.url.path)
            return _error_reply(500, protocol.error(protocol.ERROR_INTERNAL, f"internal error ({type(exc).__name__})"))
    answer.__name__ = getattr(handler, "__name__", "answer")
    return answer


def route(path: str, handler: Handler, methods: Sequence[str] = ("GET",)) -> Route:
    """A Starlette route whose every failure is a JSON error reply (see the module docstring)."""
    return Route(path, _answering(handler), methods=list(methods))


async def _starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals: no route (404), a method the route does not take (405)."""
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    if status == 404:
        return _error_reply(404, protocol.error(protocol.ERROR_NOT_FOUND,
                                                f"no route {request.url.path[:100]}; see the protocol for the routes"))
    if status == 405:
        allowed = (exc.headers or {}).get("Allow", "") if isinstance(exc, StarletteHTTPException) else ""
        return _error_reply(405, protocol.error(protocol.ERROR_BAD_REQUEST,
                                                f"method {request.method[:10]} not allowed here; use "
                                                f"{' or '.join(m.strip() for m in allowed.split(',') if m.strip())}"),
                            [(b"allow", allowed.encode("latin-1"))])
    return _error_reply(status, protocol.error(protocol.ERROR_BAD_REQUEST, str(getattr(exc, "detail", "bad request"))))


def build(routes: Sequence[BaseRoute]) -> Starlette:
    """The server's HTTP app: ``routes``, with Starlette's own 404/405 as JSON error replies."""
    app = Starlette(routes=list(routes), exception_handlers={StarletteHTTPException: _starlette_error})
    app.router.redirect_slashes = False  # "/healthz/" is no route, as before; never a redirect
    return app
