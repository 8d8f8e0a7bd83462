"""The Socket.IO connections seen from the ASGI side: handshake limits, closing, and backpressure.

**Decision (issue 21).** The server touches no private attribute of python-socketio or
python-engineio. What it needs beyond their public API it gets one layer down, from the ASGI
interface it already owns: ``SocketGate`` wraps ``socketio.ASGIApp`` and sees every websocket
connection open and end, and every frame python-engineio hands to the ASGI server.

* **Backpressure** counts, per connection, the ``message`` events the bus handed to
  ``sio.emit`` and not yet written to the websocket (a frame is written when the ASGI server's
  ``send`` returned, which for a websocket waits while the client does not read). The bus waits
  while a watcher holds more than ``BACKLOG_LIMIT`` such events or ``REPLAY_QUEUE_BYTES``: the
  same bound the server had when it read engineio's send queue, now from frames it sees itself.
* **Handshake limits** (``access.Handshakes``): a websocket that ``on_open`` refuses is closed
  before it is accepted (the client's handshake gets HTTP 403); ``close(conn)`` ends a
  connection (its websocket closed, python-engineio told the client went away).
* **A refused connect** (Socket.IO ``CONNECT_ERROR``) closes the whole connection once that
  frame was written, so a client cannot try token after token on one socket: the websocket's
  close follows the refusal, with no Engine.IO ``CLOSE`` packet between them. python-engineio's
  threaded client (4.15) answers ``CONNECT_ERROR`` by hanging up itself, and a ``CLOSE``
  packet read while it does so empties its send queue, end marker included: its writer thread
  then waits ``max(pingInterval, pingTimeout) + 5`` s (65 s here) and its ``connect()`` with it.
  A websocket close is read as a transport error, which never empties that queue. Any other
  connection the gate ends (the handshake deadline) gets a ``CLOSE`` packet, then the close.

Rejected: pacing by Socket.IO acknowledgements (``sio.call``) or a credit event, because
docs/protocol.md says a ``message`` expects no ack and clients (``socket.io-client`` in
tests/js, client/session.py) send none; and a hand-written Socket.IO server over plain
websockets, which would reimplement the protocol python-socketio keeps for us.

What it relies on, all public: the ASGI websocket messages; python-engineio passing the ASGI
scope in the connect handler's ``environ["asgi.scope"]`` (``connection_of``); Socket.IO v5's
wire form of an event, ``42["message",...`` for a ``message`` event in namespace ``/``, and
``44`` for a ``CONNECT_ERROR`` (the protocol, not the library). tests/test_sio_adapter.py checks
each against the installed versions with a real server and real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "flowcb.connection"   # the scope entry that carries the Connection to the handlers
MESSAGE_FRAME = '42["message",'   # Engine.IO MESSAGE + Socket.IO EVENT "message" in "/"
CONNECT_ERROR_FRAME = "44"        # Engine.IO MESSAGE + Socket.IO CONNECT_ERROR in "/"
ENGINEIO_CLOSE = "1"              # Engine.IO CLOSE: the server ends the connection
_ids = itertools.count(1)


class Connection:
    """One websocket connection: who opened it and what the bus handed it that is not written yet."""

    def __init__(self) -> None:
        self.id = f"ws{next(_ids)}"
        self.closed = False
        self._in_flight: deque[int] = deque()   # sizes of the message events not yet written
        self._bytes = 0
        self._ending = asyncio.Event()           # close(): the websocket is to end now
        self._say_close = True                   # send an Engine.IO CLOSE before the close

    def handed(self, size: int) -> None:
        """A ``message`` event of about ``size`` bytes went to ``sio.emit`` for this connection."""
        self._in_flight.append(size)
        self._bytes += size

    def written(self) -> None:
        if self._in_flight:
            self._bytes -= self._in_flight.popleft()

    def backlog(self) -> tuple[int, int] | None:
        """(message events, bytes) handed and not yet written; None once the connection ended."""
        if self.closed:
            return None
        return len(self._in_flight), self._bytes

    def end(self, say_close: bool = True) -> None:
        """Close the websocket now (what python-engineio queued after this is dropped);
        ``say_close``: an Engine.IO ``CLOSE`` packet first."""
        self._say_close = self._say_close and say_close
        self._ending.set()


def connection_of(environ: dict[str, Any]) -> Connection | None:
    """The connection of a Socket.IO connect handler's ``environ`` (None outside a SocketGate)."""
    scope = environ.get("asgi.scope")
    conn = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return conn if isinstance(conn, Connection) else None


class SocketGate:
    """ASGI middleware around ``socketio.ASGIApp``: sees websocket connections and their frames.

    ``on_open(conn, scope)`` is asked when a websocket opens (False: refused, HTTP 403);
    ``on_close(conn)`` is told when it ended; ``end(conn.id)`` closes it. ``bind(sid, conn)``
    names a Socket.IO session's connection, which ``connection(sid)`` then finds for the bus.
    Anything but a websocket passes straight through.
    """

    def __init__(self, app: ASGIApp | None = None,
                 on_open: Callable[[Connection, Scope], bool] | None = None,
                 on_close: Callable[[Connection], None] | None = None) -> None:
        self.app = app  # socketio.ASGIApp (settable later: the server is made after the gate)
        self.on_open = on_open or (lambda conn, scope: True)
        self.on_close = on_close or (lambda conn: None)
        self._open: set[Connection] = set()
        self._by_sid: dict[str, Connection] = {}

    def bind(self, sid: str, conn: Connection | None) -> None:
        if conn is not None and not conn.closed:
            self._by_sid[sid] = conn

    def connection(self, sid: str) -> Connection | None:
        conn = self._by_sid.get(sid)
        if conn is not None and conn.closed:
            self._by_sid.pop(sid, None)
            return None
        return conn

    async def end(self, conn_id: str) -> None:
        """Close the connection ``conn_id`` (a handshake deadline passed); gone already: nothing."""
        for conn in list(self._open):
            if conn.id == conn_id:
                conn.end()

    def any_in_flight(self) -> bool:
        """Whether any open connection has message events not yet written."""
        return any((conn.backlog() or (0, 0))[0] for conn in self._open)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "SocketGate.app is not set"
        if scope.get("type") != "websocket":
            await self.app(scope, receive, send)
            return
        conn = Connection()
        if not self.on_open(conn, scope):
            with contextlib.suppress(Exception):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            conn.closed = True
            return
        self._open.add(conn)
        scope = dict(scope)
        scope[SCOPE_KEY] = conn
        sent_close = False

        async def gated_receive() -> Message:
            if conn._ending.is_set():
                return {"type": "websocket.disconnect", "code": 1000}
            got = asyncio.ensure_future(receive())
            ending = asyncio.ensure_future(conn._ending.wait())
            try:
                await asyncio.wait((got, ending), return_when=asyncio.FIRST_COMPLETED)
            finally:
                ending.cancel()
            if got.done():
                return got.result()
            got.cancel()
            await close_websocket(say_close=conn._say_close)
            return {"type": "websocket.disconnect", "code": 1000}

        async def close_websocket(say_close: bool = True) -> None:
            nonlocal sent_close
            if not sent_close:
                sent_close = True
                with contextlib.suppress(Exception):
                    if say_close:  # Engine.IO CLOSE first, as engineio's own disconnect would
                        await send({"type": "websocket.send", "text": ENGINEIO_CLOSE})
                    await send({"type": "websocket.close", "code": 1000})

        async def gated_send(message: Message) -> None:
            kind = message.get("type")
            if sent_close or conn._ending.is_set() and kind == "websocket.send":
                return  # ended by us: python-engineio's writer may still be flushing
            if kind == "websocket.close":
                await close_websocket(say_close=False)
                return
            await send(message)
            text = message.get("text") if kind == "websocket.send" else None
            if text is None:
                return
            if text.startswith(MESSAGE_FRAME):
                conn.written()
            elif text.startswith(CONNECT_ERROR_FRAME):
                # the refusal is out: one token attempt per connection; no CLOSE packet, which
                # would race the client's own hang-up (see the module's docstring)
                conn.end(say_close=False)

        try:
            await self.app(scope, gated_receive, gated_send)
        finally:
            conn.closed = True
            self._open.discard(conn)
            for sid in [s for s, c in self._by_sid.items() if c is conn]:
                del self._by_sid[sid]
            self.on_close(conn)
