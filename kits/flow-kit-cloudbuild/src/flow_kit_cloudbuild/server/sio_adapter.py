"""Everything the server needs from python-socketio / python-engineio that they offer no public API for.

Written against python-socketio 5.18.1 and python-engineio 4.15.1 (``WRITTEN_AGAINST``); the rest
of the server calls these functions and touches no private attribute of either library.
kits/flow-kit-cloudbuild/tests/test_sio_adapter.py pins each reliance below against the
installed versions with a real server and client, so an upgrade that changes one fails there
with a clear message instead of the server quietly losing backpressure or leaving sockets open.

What each function relies on (``sio`` is a ``socketio.AsyncServer``):

* ``event_encoder``: ``sio.packet_class`` (the serializer the server was made with) and
  ``socketio.packet.EVENT``; ``Packet(EVENT, namespace=, data=[event, arg]).encode()`` gives what
  ``sio.emit`` would put on the wire, so a message to many sockets is encoded once.
* ``send_encoded``: ``sio.eio`` (the Engine.IO server) and its ``send(eio_sid, data)``, which
  sends an already encoded Socket.IO packet as one Engine.IO MESSAGE.
* ``queued_packets`` / ``queued_bytes`` / ``any_queued``: ``sio.eio.sockets`` (eio_sid -> socket),
  a socket's ``closed`` flag and its send queue ``queue`` (an ``asyncio.Queue`` of engineio
  packets whose ``data`` is the encoded text; bytes are counted from the queue's ``_queue`` deque).
  Unreadable internals read as 0 (no backpressure) rather than failing a build.
* ``engineio_sid``: the manager's ``eio_sid_from_sid(sid, namespace)``.
* ``close_connection``: ``sio.eio.disconnect`` (public) queues a CLOSE packet but leaves the
  websocket open until the client closes it; a ``None`` put in the socket's send queue ends
  engineio's writer, which then closes the websocket.
* ``hook_engineio``: python-socketio's own "connect"/"disconnect" handlers in ``sio.eio.handlers``,
  which are wrapped (``eio.on()`` alone would replace them); a False from "connect" refuses the
  handshake.
* ``redis_manager_class``: ``socketio.AsyncRedisManager._handle_emit(message)``, called with each
  emit received from Redis as a dict with "event", "room" and "data" (the emit's arguments as a list).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

WRITTEN_AGAINST = {"python-socketio": "5.18.1", "python-engineio": "4.15.1"}
CLOSE_TIMEOUT = 5.0   # seconds to flush a refused connection's last packets

# the private names read below, for the test that pins them: (what, attribute)
RELIES_ON = (
    ("socketio.AsyncServer instance", "packet_class"),
    ("socketio.AsyncServer instance", "eio"),
    ("engineio.AsyncServer instance", "sockets"),
    ("engineio.AsyncServer instance", "handlers"),
    ("engineio.AsyncSocket instance", "queue"),
    ("engineio.AsyncSocket instance", "closed"),
    ("asyncio.Queue instance", "_queue"),
    ("socketio manager", "eio_sid_from_sid"),
    ("socketio.AsyncRedisManager", "_handle_emit"),
)


def event_encoder(sio: Any, namespace: str = "/") -> Callable[[str, Any], Any]:
    """``encode(event, arg)``: the encoded Socket.IO EVENT packet ``sio.emit(event, arg)`` would send.

    Raises RuntimeError when the installed python-socketio has no such packet class.
    """
    try:
        from socketio import packet

        packet_class, event_type = sio.packet_class, packet.EVENT
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"python-socketio offers no packet class to encode with: {exc}") from exc

    def encode(event: str, arg: Any) -> Any:
        return packet_class(event_type, namespace=namespace, data=[event, arg]).encode()

    return encode


async def send_encoded(sio: Any, eio_sid: str, encoded: Any) -> bool:
    """Send an encoded packet to one Engine.IO connection; False if engineio raised (the socket
    went away meanwhile). engineio ignores an unknown sid (True): the queue reads tell it is gone."""
    try:
        await sio.eio.send(eio_sid, encoded)
    except Exception:  # noqa: BLE001 - a socket that went away meanwhile (engineio raises several kinds)
        return False
    return True


def _socket(sio: Any, eio_sid: str) -> Any:
    return sio.eio.sockets.get(eio_sid)


def queued_packets(sio: Any, eio_sid: str) -> int | None:
    """Packets queued for the connection and not yet written; None once it is gone or closed."""
    try:
        sock = _socket(sio, eio_sid)
        if sock is None or sock.closed:
            return None
        return int(sock.queue.qsize())
    except Exception:  # noqa: BLE001 - engineio internals: no backlog known, no backpressure
        return 0


def queued_bytes(sio: Any, eio_sid: str) -> int:
    """Bytes of the text/binary packets queued for the connection (0 if gone or unknown)."""
    try:
        sock = _socket(sio, eio_sid)
        if sock is None:
            return 0
        return sum(len(p.data) for p in list(sock.queue._queue)
                   if isinstance(getattr(p, "data", None), (str, bytes)))
    except Exception:  # noqa: BLE001 - engineio internals: no backlog known, no backpressure
        return 0


def any_queued(sio: Any) -> bool:
    """Whether any open connection still has packets queued (False if unknown)."""
    try:
        return any(not sock.closed and sock.queue.qsize() for sock in list(sio.eio.sockets.values()))
    except Exception:  # noqa: BLE001 - engineio internals must not fail a flush
        return False


def engineio_sid(sio: Any, sid: str, namespace: str = "/") -> str | None:
    """The Engine.IO connection of a Socket.IO session (None if unknown)."""
    try:
        return sio.manager.eio_sid_from_sid(sid, namespace)
    except Exception:  # noqa: BLE001 - socketio internals: an unknown sid or a changed mapping means no connection
        return None


async def close_connection(sio: Any, eio_sid: str | None, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close a whole Engine.IO connection, down to its websocket, after what is queued for it."""
    if eio_sid is None:
        return
    try:
        sock = _socket(sio, eio_sid)
    except Exception:  # noqa: BLE001 - engineio internals: fall back to the public disconnect alone
        sock = None
    try:
        await asyncio.wait_for(sio.eio.disconnect(eio_sid), timeout)
    except Exception:  # noqa: BLE001 - already gone, or a client that reads nothing (its pings time out)
        pass
    try:
        if sock is not None:
            sock.queue.put_nowait(None)
    except Exception:  # noqa: BLE001 - engineio internals (its send queue): closing is best effort
        pass


def hook_engineio(sio: Any, on_open: Callable[[str, dict[str, Any]], bool],
                  on_close: Callable[[str], None]) -> None:
    """Call ``on_open(eio_sid, environ)`` when an Engine.IO connection opens (False refuses it)
    and ``on_close(eio_sid)`` when it ends; python-socketio's own handlers run after them."""
    eio = sio.eio
    inner_connect, inner_disconnect = eio.handlers["connect"], eio.handlers["disconnect"]

    async def connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        if not on_open(eio_sid, environ):
            return False  # engineio answers the handshake with 401 and closes
        return await inner_connect(eio_sid, environ)

    async def disconnect(eio_sid: str, reason: Any = None) -> Any:
        on_close(eio_sid)
        return await inner_disconnect(eio_sid, reason)

    eio.on("connect", connect)
    eio.on("disconnect", disconnect)


EmitHook = Callable[[Any, Any, Any], Awaitable[bool]]


def redis_manager_class() -> type:
    """``socketio.AsyncRedisManager`` whose instance attribute ``on_emit`` (if set) sees each emit
    received from Redis first, as ``await on_emit(event, room, args)``; True means it was handled
    and python-socketio does not deliver it."""
    import socketio

    class HookedRedisManager(socketio.AsyncRedisManager):
        on_emit: EmitHook | None = None

        async def _handle_emit(self, message: dict) -> None:
            hook = self.on_emit
            if hook is not None and await hook(message.get("event"), message.get("room"), message.get("data")):
                return
            await super()._handle_emit(message)

    return HookedRedisManager
