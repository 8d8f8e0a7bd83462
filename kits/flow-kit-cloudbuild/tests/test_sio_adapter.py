"""server/sio_adapter.py's SocketGate against a real ``socketio.AsyncServer`` (ASGI under uvicorn on
127.0.0.1, in a thread) and real clients (python-socketio's, and a raw websocket one that reads
only when told to). It pins what the gate relies on instead of library internals: the connect
handler's ``environ["asgi.scope"]``, the wire form of a ``message`` event and of a
``CONNECT_ERROR``, and a websocket send that waits while the client reads nothing. An upgrade that
changes one fails here, naming it, instead of the server quietly losing backpressure, its
handshake deadline or the closing of refused sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
from importlib.metadata import version
from typing import Any

import pytest
import socketio
import uvicorn
import websocket
from cloudbuild_server_support import free_port
from socketio.exceptions import ConnectionRefusedError

from flow_kit_cloudbuild.server.http import sio_adapter

INSTALLED = f"python-socketio {version('python-socketio')}, python-engineio {version('python-engineio')}"


class LiveServer:
    """A socketio.AsyncServer behind a SocketGate, served by uvicorn on loopback from a thread."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], logger=False,
                                        engineio_logger=False)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.sids: list[str] = []
        self.conns: dict[str, sio_adapter.Connection] = {}
        self.gate = sio_adapter.SocketGate(socketio.ASGIApp(self.sio), self._open,
                                           lambda conn: self.closed.append(conn.id))

        @self.sio.event
        async def connect(sid: str, environ: dict, auth: Any = None) -> None:
            if isinstance(auth, dict) and auth.get("refuse"):
                raise ConnectionRefusedError("go away", {"code": "auth"})
            conn = sio_adapter.connection_of(environ)
            assert conn is not None, f"{INSTALLED}: the connect handler's environ has no asgi.scope"
            self.gate.bind(sid, conn)
            self.conns[sid] = conn
            self.sids.append(sid)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.server = uvicorn.Server(uvicorn.Config(self.gate, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)

    def _open(self, conn: sio_adapter.Connection, scope: Any) -> bool:
        self.opened.append(conn.id)
        return b"refuse=1" not in scope.get("query_string", b"")

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """A sync function, run on the server's loop (where the gate's state lives)."""
        async def go() -> Any:
            return fn(*args)
        return self.run(go())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.sio.shutdown())
        self.server.should_exit = True
        self.thread.join(10)

        async def rest() -> None:  # engineio's background tasks, so none is destroyed pending
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.loop.run_until_complete(rest())
        self.loop.close()


@pytest.fixture
def live() -> Any:
    server = LiveServer().start()
    try:
        yield server
    finally:
        server.stop()


class RawClient:
    """Engine.IO v4 + Socket.IO v5 over a plain websocket: reads only when told to."""

    def __init__(self, live: LiveServer, query: str = "", rcvbuf: int | None = None) -> None:
        opts = [(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)] if rcvbuf else []
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{live.port}/socket.io/?EIO=4&transport=websocket{query}", timeout=5, sockopt=opts)
        assert self.ws.recv().startswith("0")   # Engine.IO OPEN
        before = len(live.sids)
        self.ws.send("40")                      # Socket.IO CONNECT to "/"
        assert self.ws.recv().startswith("40")
        wait_until(lambda: len(live.sids) > before, "the server saw no connect")
        self.sid = live.sids[-1]
        self.conn = live.conns[self.sid]

    def events(self, count: int, timeout: float = 30) -> list[Any]:
        """The next ``count`` Socket.IO events, as [name, arg] (pings answered)."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            assert time.monotonic() < deadline, f"got {len(got)} of {count} events"
            frame = self.ws.recv()
            if frame == "2":
                self.ws.send("3")
            elif frame.startswith("42"):
                got.append(json.loads(frame[2:]))
        return got

    def close(self) -> None:
        self.ws.close()


def wait_until(check: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def closed_by_server(ws: websocket.WebSocket, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            opcode, _ = ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return True
        except websocket.WebSocketTimeoutException:
            continue
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return True
    return False


def test_a_message_event_is_counted_until_written_and_arrives_intact(live: LiveServer) -> None:
    """What ``sio.emit("message", ...)`` puts on the wire starts with ``42["message",`` (the
    gate counts those frames); backlog is (0, 0) when idle, counts what was handed and not yet
    written, is back to 0 once written, and None once the connection is gone."""
    got: queue.Queue[Any] = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("message", got.put)
    client.connect(live.url, transports=["websocket"], wait_timeout=5)
    try:
        wait_until(lambda: live.sids, "the server saw no connect")
        sid = live.sids[-1]
        conn = live.call(live.gate.connection, sid)
        assert conn is not None and live.call(conn.backlog) == (0, 0)
        arg = {"meta": {"seq": 1}, "data": {"text": "é ✓", "n": [1, 2.5, None, True]}}

        async def send() -> tuple[int, int] | None:
            conn.handed(100)
            backlog = conn.backlog()
            await live.sio.emit("message", arg, to=sid)
            return backlog
        assert live.run(send()) == (1, 100)
        assert got.get(timeout=5) == arg
        wait_until(lambda: live.call(conn.backlog) == (0, 0),
                   f"{INSTALLED}: the message frame was not seen written (not 42[\"message\",...?)")
        assert live.call(live.gate.any_in_flight) is False
    finally:
        client.disconnect()
    wait_until(lambda: live.call(conn.backlog) is None, "a closed connection still reads as open")
    assert live.call(live.gate.connection, sid) is None


def test_a_client_that_reads_nothing_keeps_messages_in_flight(live: LiveServer) -> None:
    """The bound the bus keeps rests on this: a websocket send waits while the client reads
    nothing, so what the client has not read shows as in flight, and drains when it reads."""
    client = RawClient(live, rcvbuf=4096)
    try:
        conn, sid = client.conn, client.sid
        text = "x" * 64 * 1024
        count = 200  # 12.5 MiB: far past what the kernel's and uvicorn's buffers take

        async def send() -> None:
            for _ in range(count):
                conn.handed(len(text))
                await live.sio.emit("message", text, to=sid)
        live.run(send())
        time.sleep(1.0)  # let engineio's writer push what the socket takes
        pending = live.call(conn.backlog)
        assert pending is not None and pending[0] > count // 2, \
            f"{INSTALLED}: only {pending} in flight while the client reads nothing"
        assert live.call(live.gate.any_in_flight) is True
        assert [e for e in client.events(count)] == [["message", text]] * count
        wait_until(lambda: live.call(conn.backlog) == (0, 0), "the backlog did not drain")
    finally:
        client.close()


def test_end_closes_the_websocket(live: LiveServer) -> None:
    client = RawClient(live)  # never answers anything: the server must close the websocket itself
    live.run(live.gate.end(client.conn.id))
    assert closed_by_server(client.ws), f"{INSTALLED}: the websocket is still open after end()"
    client.close()
    wait_until(lambda: client.conn.id in live.closed, "on_close did not see the connection end")
    assert live.call(client.conn.backlog) is None


def test_on_open_sees_connections_and_refuses_before_the_handshake(live: LiveServer) -> None:
    client = RawClient(live)
    assert client.conn.id in live.opened
    client.close()
    wait_until(lambda: client.conn.id in live.closed, "on_close did not run")
    opened = len(live.opened)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        RawClient(live, query="&refuse=1")
    assert refused.value.status_code == 403
    assert len(live.opened) == opened + 1
    assert len(live.sids) == 1  # python-socketio never saw the refused one


def test_a_refused_connect_closes_the_whole_connection(live: LiveServer) -> None:
    """After the CONNECT_ERROR frame (``44...``) went out the gate closes the websocket: one
    token attempt per connection. Nothing comes between the two, an Engine.IO CLOSE (``1``)
    least of all: python-engineio's threaded client, hanging up after the refusal, could read it
    mid-hang-up and then wait 65 s (see sio_adapter's docstring)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.port}/socket.io/?EIO=4&transport=websocket",
                                     timeout=5)
    try:
        assert ws.recv().startswith("0")
        ws.send("40" + json.dumps({"refuse": True}))
        frame = ws.recv()
        assert frame.startswith("44"), f"{INSTALLED}: a refused connect is {frame[:40]!r}, not 44..."
        opcode, data = ws.recv_data(control_frame=True)  # the next frame: the websocket's close
        assert opcode == websocket.ABNF.OPCODE_CLOSE, f"after the refusal came {data[:40]!r}"
    finally:
        ws.close()
