"""Pins what server/sio_adapter.py relies on in the installed python-socketio / python-engineio,
against a real ``socketio.AsyncServer`` (ASGI under uvicorn on 127.0.0.1, in a thread) and real
clients (python-socketio's, and a raw websocket one that reads only when told to). An upgrade
that removes or changes one of these internals fails here, naming it, instead of the server
quietly losing backpressure, its handshake deadline or the closing of refused sockets."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
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

from flow_kit_cloudbuild.server import sio_adapter

INSTALLED = f"python-socketio {version('python-socketio')}, python-engineio {version('python-engineio')}"
WRITTEN = ", ".join(f"{k} {v}" for k, v in sio_adapter.WRITTEN_AGAINST.items())


class LiveServer:
    """A socketio.AsyncServer served by uvicorn on loopback from a thread with its own loop."""

    def __init__(self, client_manager: Any = None) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], logger=False,
                                        engineio_logger=False, client_manager=client_manager)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.sids: list[str] = []
        sio_adapter.hook_engineio(self.sio, self._open, self.closed.append)

        @self.sio.event
        async def connect(sid: str, environ: dict, auth: Any = None) -> None:
            self.sids.append(sid)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.server = uvicorn.Server(uvicorn.Config(socketio.ASGIApp(self.sio), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)

    def _open(self, eio_sid: str, environ: dict[str, Any]) -> bool:
        self.opened.append(eio_sid)
        return "refuse=1" not in environ.get("QUERY_STRING", "")

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """A sync adapter function, run on the server's loop (where engineio's state lives)."""
        async def go() -> Any:
            return fn(*args)
        return self.run(go())

    def eio_sid(self, sid: str) -> str:
        eio_sid = self.call(sio_adapter.engineio_sid, self.sio, sid)
        assert isinstance(eio_sid, str), f"{INSTALLED}: no Engine.IO sid for Socket.IO sid {sid}"
        return eio_sid

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
        deadline = time.monotonic() + 5
        while len(live.sids) == before:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        self.eio_sid = live.eio_sid(live.sids[-1])

    def events(self, count: int, timeout: float = 20) -> list[Any]:
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


def test_private_attributes_exist(live: LiveServer) -> None:
    """Every internal named in sio_adapter.RELIES_ON is there, with the shape the adapter uses."""
    client = RawClient(live)
    try:
        sock = live.call(lambda: live.sio.eio.sockets.get(client.eio_sid))
        assert sock is not None, f"{INSTALLED}: engineio's sockets dict has no entry for a connected client"
        owners = {
            "socketio.AsyncServer instance": live.sio,
            "engineio.AsyncServer instance": getattr(live.sio, "eio", None),
            "engineio.AsyncSocket instance": sock,
            "asyncio.Queue instance": getattr(sock, "queue", None),
            "socketio manager": live.sio.manager,
            "socketio.AsyncRedisManager": socketio.AsyncRedisManager,
        }
        for what, attr in sio_adapter.RELIES_ON:
            assert what in owners, f"test_sio_adapter does not know how to check {what}"
            assert hasattr(owners[what], attr), (
                f"{INSTALLED}: {what} has no attribute {attr!r}; server/sio_adapter.py (written against "
                f"{WRITTEN}) relies on it; update the adapter for this version")
        assert {"connect", "disconnect"} <= set(live.sio.eio.handlers), \
            f"{INSTALLED}: python-socketio no longer registers engineio connect/disconnect handlers"
        assert isinstance(sock.queue, asyncio.Queue) and isinstance(sock.closed, bool), \
            f"{INSTALLED}: an engineio socket's queue/closed changed type"
        handle_emit = socketio.AsyncRedisManager._handle_emit
        assert inspect.iscoroutinefunction(handle_emit) and \
            list(inspect.signature(handle_emit).parameters) == ["self", "message"], \
            f"{INSTALLED}: AsyncRedisManager._handle_emit(message) changed"
        from socketio import packet
        assert isinstance(packet.EVENT, int)
    finally:
        client.close()


def test_encoded_event_arrives_as_the_event(live: LiveServer) -> None:
    got: queue.Queue[Any] = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("message", got.put)
    client.connect(live.url, transports=["websocket"], wait_timeout=5)
    try:
        wait_until(lambda: live.sids, "the server saw no connect")
        eio_sid = live.eio_sid(live.sids[-1])
        arg = {"meta": {"seq": 1}, "data": {"text": "é ✓", "n": [1, 2.5, None, True]}}
        encoded = sio_adapter.event_encoder(live.sio)("message", arg)
        assert live.run(sio_adapter.send_encoded(live.sio, eio_sid, encoded)) is True
        assert got.get(timeout=5) == arg
        live.run(sio_adapter.send_encoded(live.sio, "no-such-sid", encoded))  # engineio ignores it: no raise
    finally:
        client.disconnect()


def test_backlog_counts_queued_packets_and_drains(live: LiveServer) -> None:
    """0 for an idle socket, the packets and bytes queued before engineio's writer ran, 0 again
    once the client read them, None once the connection is gone. (Growth while a client reads
    nothing is not reproducible here: uvicorn's websocket takes the writer's data without waiting.)"""
    client = RawClient(live)
    try:
        sio, eio_sid = live.sio, client.eio_sid
        assert live.call(sio_adapter.queued_packets, sio, eio_sid) == 0
        assert live.call(sio_adapter.queued_bytes, sio, eio_sid) == 0
        assert live.call(sio_adapter.any_queued, sio) is False
        encoded = sio_adapter.event_encoder(sio)("message", "x" * 1000)

        async def send(n: int) -> tuple[int | None, int, bool]:
            for _ in range(n):  # no await that yields: engineio's writer has not run in between
                assert await sio_adapter.send_encoded(sio, eio_sid, encoded)
            return (sio_adapter.queued_packets(sio, eio_sid), sio_adapter.queued_bytes(sio, eio_sid),
                    sio_adapter.any_queued(sio))

        packets, size, busy = live.run(send(5))
        assert (packets, size, busy) == (5, 5 * len(encoded), True), \
            f"{INSTALLED}: queued {packets} packets, {size} bytes, any_queued {busy}"
        assert [e for e in client.events(5)] == [["message", "x" * 1000]] * 5
        wait_until(lambda: live.call(sio_adapter.queued_packets, sio, eio_sid) == 0, "the queue did not drain")
        assert live.call(sio_adapter.any_queued, sio) is False
    finally:
        client.close()
    wait_until(lambda: live.call(sio_adapter.queued_packets, sio, eio_sid) is None,
               "a closed connection still reads as open")


def test_close_connection_closes_the_websocket(live: LiveServer) -> None:
    client = RawClient(live)  # never answers the CLOSE packet: the server must close the websocket itself
    live.run(sio_adapter.close_connection(live.sio, client.eio_sid, timeout=2))
    deadline = time.monotonic() + 5
    closed = False
    while not closed:
        assert time.monotonic() < deadline, f"{INSTALLED}: the websocket is still open after close_connection"
        try:
            opcode, _ = client.ws.recv_data(control_frame=True)
            closed = opcode == websocket.ABNF.OPCODE_CLOSE
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            closed = True
    client.close()
    wait_until(lambda: client.eio_sid in live.closed, "the disconnect hook did not see the connection end")
    assert live.call(sio_adapter.queued_packets, live.sio, client.eio_sid) is None


def test_hook_sees_connections_and_refuses(live: LiveServer) -> None:
    client = RawClient(live)
    assert client.eio_sid in live.opened
    client.close()
    wait_until(lambda: client.eio_sid in live.closed, "the disconnect hook did not run")
    opened = len(live.opened)
    with pytest.raises((websocket.WebSocketException, ConnectionError, AssertionError)):
        RawClient(live, query="&refuse=1")
    assert len(live.opened) == opened + 1
    assert len(live.sids) == 1  # python-socketio never saw the refused one


def test_redis_manager_hook_gets_what_an_emitter_publishes() -> None:
    """What a (write-only) manager publishes, fed to a gateway's manager, reaches ``on_emit`` as
    (event, room, [arg]); returning False lets python-socketio deliver it as usual."""
    cls = sio_adapter.redis_manager_class()
    published: list[dict] = []
    seen: list[tuple[Any, Any, Any]] = []

    async def main() -> None:
        emitter = cls("redis://127.0.0.1:1/0", write_only=True)

        async def publish(message: dict) -> None:  # instead of Redis: keep what would go there
            published.append(message)
        emitter._publish = publish
        await emitter.emit("message", {"seq": 3}, namespace="/", room="task-1")
        assert len(published) == 1

        gateway = cls("redis://127.0.0.1:1/0", write_only=True)
        socketio.AsyncServer(async_mode="asgi", client_manager=gateway)

        async def on_emit(event: Any, room: Any, data: Any) -> bool:
            seen.append((event, room, data))
            return event == "message"
        gateway.on_emit = on_emit
        await gateway._handle_emit(published[0])
        await gateway._handle_emit({**published[0], "event": "other"})  # not handled: plain delivery

    asyncio.run(main())
    assert seen == [("message", "task-1", [{"seq": 3}]), ("other", "task-1", [{"seq": 3}])], \
        f"{INSTALLED}: the Redis manager's emit messages changed shape"
