"""``flow publish``'s connect timeout (issue 22 item 9): 5 s by default, ``--connect-timeout`` or
``connect-timeout`` in ``[tool.flow.cloudbuild]`` to change it; it bounds the Socket.IO connect
and the HTTP calls' connects.

The servers here are not build servers: a *black hole* is a plain socket listener on loopback that
accepts every connection and reads nothing (a server that hangs, or a wrong port behind a
firewall that completes the handshake); a *closed port* has nobody listening; a *full backlog*
never completes the TCP handshake (the kernel drops the SYNs). Each must fail within the timeout
plus a small margin, in one error line that names the server URL, the timeout and the option
that changes it. ``flow publish`` runs as the real CLI with the kit installed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from cloudbuild_publish_support import error_lines, free_port, make_site

from flow_kit_cloudbuild.client import http
from flow_kit_cloudbuild.client.errors import ConnectError

#: flow's own start (Python, click, the kit's import) on a busy machine, on top of the timeout.
MARGIN = 3.0


class BlackHole:
    """Accepts every TCP connection on a loopback port and never reads or writes a byte."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A loopback port whose listen queue is full: new connects get no SYN-ACK and hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # more than the queue holds; the rest stay half-open
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel completes connects beyond a full listen queue")
    except (TimeoutError, OSError):
        pass
    finally:
        probe.close()
    yield f"http://127.0.0.1:{port}"
    for s in (*fillers, listener):
        s.close()


def _publish(flow, project, url: str, *args: str):
    start = time.monotonic()
    result = flow("publish", "--server", url, "--token", "x", "--source", "upload", *args,
                  cwd=project, timeout=60)
    return result, time.monotonic() - start


def _assert_one_line(result, url: str, seconds: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines == [line for line in result.stderr.splitlines() if line], \
        result.stderr
    line = lines[0]
    assert f"cannot connect to the build server at {url}" in line, line
    assert f"{seconds} s" in line and "--connect-timeout" in line, line
    return line


# -- flow publish ---------------------------------------------------------------------------------
def test_a_black_hole_server_fails_within_the_default_5_s(flow, black_hole, tmp_path):
    project = make_site(tmp_path / "site")
    result, took = _publish(flow, project, black_hole.url)
    line = _assert_one_line(result, black_hole.url, "5")
    assert "no answer within 5 s" in line, line
    assert 4.5 <= took < 5 + MARGIN, f"took {took:.1f} s"
    assert black_hole.accepted  # it was reached: the time went to waiting for an answer


def test_a_port_nobody_listens_on_fails_within_the_default_5_s(flow, tmp_path):
    project = make_site(tmp_path / "site")
    closed = f"http://127.0.0.1:{free_port()}"
    result, took = _publish(flow, project, closed)
    line = _assert_one_line(result, closed, "5")
    assert "connection refused" in line, line
    assert took < 5 + MARGIN, f"took {took:.1f} s"


@pytest.mark.parametrize("target", ["black hole", "closed port"])
def test_connect_timeout_1_is_respected(flow, black_hole, tmp_path, target):
    project = make_site(tmp_path / "site")
    url = black_hole.url if target == "black hole" else f"http://127.0.0.1:{free_port()}"
    result, took = _publish(flow, project, url, "--connect-timeout", "1")
    _assert_one_line(result, url, "1")
    assert took < 1 + MARGIN, f"took {took:.1f} s"


def test_connect_timeout_from_the_project_settings(flow, black_hole, tmp_path):
    toml = ('[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n\n[tool.flow.cloudbuild]\n'
            'connect-timeout = 1.5\n')
    project = make_site(tmp_path / "site", flow_toml=toml)
    result, took = _publish(flow, project, black_hole.url)
    assert "no answer within 1.5 s" in _assert_one_line(result, black_hole.url, "1.5")
    assert took < 1.5 + MARGIN, f"took {took:.1f} s"
    # the command line wins over the project
    result, took = _publish(flow, project, black_hole.url, "--connect-timeout", "1")
    assert "no answer within 1 s" in _assert_one_line(result, black_hole.url, "1")


@pytest.mark.parametrize("args, toml_value, expected", [
    (("--connect-timeout", "0"), None, "--connect-timeout"),
    (("--connect-timeout", "soon"), None, "--connect-timeout"),
    ((), '"soon"', "connect-timeout"),
    ((), "0", "connect-timeout"),
])
def test_a_bad_connect_timeout_is_a_usage_error(flow, tmp_path, args, toml_value, expected):
    toml = '[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n'
    if toml_value is not None:
        toml += f"\n[tool.flow.cloudbuild]\nconnect-timeout = {toml_value}\n"
    project = make_site(tmp_path / "site", flow_toml=toml)
    result, _ = _publish(flow, project, f"http://127.0.0.1:{free_port()}", *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


# -- the HTTP calls -------------------------------------------------------------------------------
def _timed(call) -> tuple[ConnectError, float]:
    start = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        call()
    return caught.value, time.monotonic() - start


def test_http_calls_connect_within_the_connect_timeout(full_backlog, black_hole):
    """The upload's connect (its transfer has a longer limit of its own) and the task lookup
    (all of it) are bounded by the connect timeout."""
    for call in (lambda: http.upload(full_backlog, "x", b"\x1f\x8b", connect_timeout=1),
                 lambda: http.get_task(full_backlog, "x", "0" * 24, connect_timeout=1),
                 lambda: http.get_task(black_hole.url, "x", "0" * 24, connect_timeout=1)):
        error, took = _timed(call)
        assert took < 1 + 1.0, f"took {took:.1f} s"
        assert "no answer within 1 s" in str(error) and "--connect-timeout" in str(error), error


def test_the_tcp_probe_gives_a_starting_local_server_the_connect_timeout_only():
    closed = f"http://127.0.0.1:{free_port()}"
    error, took = _timed(lambda: http.probe(closed, connect_timeout=0.5))
    assert 0.45 <= took < 0.5 + 1.0, f"took {took:.2f} s"
    assert "connection refused" in str(error) and "0.5 s" in str(error), error


# -- the Socket.IO connect ------------------------------------------------------------------------
class RefusingServer:
    """A websocket endpoint on loopback that opens an Engine.IO session, refuses the Socket.IO
    connect at once (CONNECT_ERROR, code "auth") and then neither sends nor reads a byte: it
    never answers the client's hang-up, as when the server's close crosses it."""

    REFUSAL = ('44{"message":"missing or invalid token","data":{"code":"auth",'
               '"message":"missing or invalid token"}}')

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _frame(text: str) -> bytes:
        data = text.encode()
        assert len(data) < 126
        return bytes([0x81, len(data)]) + data

    def _serve(self) -> None:
        import base64
        import hashlib

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            with contextlib.suppress(OSError):
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                if b"\r\n\r\n" not in request:
                    continue  # the client's TCP probe
                key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(
                    key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                conn.sendall(self._frame('0{"sid":"s1","upgrades":[],"pingInterval":25000,'
                                         '"pingTimeout":20000,"maxPayload":1000000}'))
                conn.sendall(self._frame(self.REFUSAL))

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def refusing_server() -> Iterator[RefusingServer]:
    server = RefusingServer()
    yield server
    server.close()


def test_a_refused_connect_fails_at_once_whatever_the_hang_up_costs(refusing_server):
    """A refused token is reported as soon as the refusal arrived: the client does not wait for
    its own hang-up to finish (python-socketio's connect() did, which could take python-engineio's
    ping timeout, 60 s and more, when the server's close crossed it; here the server never
    answers the hang-up, so that wait would be websocket-client's 3 s close timeout at least)."""
    from flow_kit_cloudbuild.client.session import Session

    error, took = _timed(lambda: Session(refusing_server.url, "wrong", connect_timeout=30).connect())
    assert "refused the token" in error.cause and "--token" in error.fix, error
    assert took < 2.0, f"took {took:.1f} s"
