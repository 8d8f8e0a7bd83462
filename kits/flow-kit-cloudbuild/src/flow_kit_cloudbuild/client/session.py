"""The Socket.IO conversation with the build server: submit, attach, cancel, follow.

Following a task never loses or repeats a message: every message carries a per-task ``seq``
(1-based, gapless). The client keeps the last ``seq`` it handed on; when the connection drops it
reconnects (with back-off, for up to :data:`RECONNECT_WINDOW` seconds) and re-``attach``-es with
``afterSeq`` = that ``seq``, and it drops any message whose ``seq`` it has already seen. A gap
(which the server promises never to cause) is repaired the same way, by re-attaching.

socketio is imported inside :meth:`Session.connect` only: this module is imported when
``flow publish`` runs, never by ``flow --help``.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild.client.errors import ConnectError, PublishError, RefusedError
from flow_kit_cloudbuild.client.http import CONNECT_TIMEOUT, probe, seconds, unreachable
from flow_kit_cloudbuild.protocol import (
    ERROR_AUTH,
    EVENT_ATTACH,
    EVENT_CANCEL,
    EVENT_MESSAGE,
    EVENT_PUBLISH,
    TRANSPORTS,
    is_final,
)

__all__ = ["Session", "RECONNECT_WINDOW", "ACK_TIMEOUT"]

#: How long a dropped connection is retried before giving up (seconds).
RECONNECT_WINDOW = 60.0
#: How long to wait for the server to acknowledge an event (seconds).
ACK_TIMEOUT = 30.0
#: How long a message may wait for earlier ones before they count as missed (seconds).
GAP_GRACE = 1.0
#: After a disconnect, how long messages still in the client's handler threads get to arrive
#: (the server's last word, such as "failed" when it stops, comes just before it hangs up).
DROP_GRACE = 0.5

Notify = Callable[[str], None]


#: A refusal from a server before the structured form: the repr of {"code", "message", ...}.
_OLD_REFUSAL = re.compile(r"""^\{'code': '([a-z-]+)'(?:, 'message': '([^'\\]*)')?""")


def _refusal(data: Any) -> dict[str, Any] | None:
    """The server's ``{"code", "message", ...}`` from a connect_error payload, or None.

    The server sends ``{"message": sentence, "data": {"code", "message", "retryAfter"?}}``
    (see docs/protocol.md). Servers before that sent the dict's Python repr as ``message``;
    its code is still read (a pattern match, never an evaluation of what the server sent).
    """
    if not isinstance(data, dict):
        return None
    detail = data.get("data")
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        return {"message": data.get("message"), **detail}
    message = data.get("message")
    if isinstance(message, str):
        old = _OLD_REFUSAL.match(message)
        if old:
            return {"code": old.group(1), "message": old.group(2) or message}
        return {"message": message}
    return None


class Session:
    """One client's connection to one build server, re-established as needed."""

    def __init__(self, server: str, token: str, notify: Notify | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.server = server
        self.token = token
        self.connect_timeout = connect_timeout
        self.notify = notify or (lambda text: None)
        self._events: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        self._client: Any = None
        self._generation = 0
        self._attached: str | None = None  # the task the current connection is subscribed to

    # -- connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect within ``connect_timeout`` seconds (5 by default: the TCP probe, the
        websocket handshake and the Socket.IO connect share it); raises :class:`ConnectError`
        naming the server URL and the timeout."""
        import socketio
        from socketio import exceptions

        deadline = time.monotonic() + self.connect_timeout
        probe(self.server, self.connect_timeout)
        left = max(deadline - time.monotonic(), 0.1)
        self._generation += 1
        generation = self._generation
        # websocket-client checks every received text frame's UTF-8 in pure Python, byte by
        # byte (about 0.2 s per MB: most of what a long log cost this client); the frame is
        # decoded strictly right after that check anyway, so skipping it loses no check.
        # handle_sigint=False: by default (python-)engineio disconnects every client on SIGINT,
        # so Ctrl-C followed by "cancel the task" had no connection left to send the cancel on.
        client = socketio.Client(reconnection=False, request_timeout=left,
                                 handle_sigint=False,
                                 websocket_extra_options={"skip_utf8_validation": True})

        def on_message(data: Any) -> None:
            self._events.put((generation, "message", data))

        def on_disconnect(*_args: Any) -> None:
            self._events.put((generation, "disconnect", None))

        refusal: list[Any] = []
        settled = threading.Event()  # the server answered the Socket.IO connect, either way

        def on_connect_error(data: Any = None) -> None:
            refusal.append(data)
            settled.set()

        client.on(EVENT_MESSAGE, on_message)
        client.on("disconnect", on_disconnect)
        client.on("connect", settled.set)
        client.on("connect_error", on_connect_error)
        # wait=False, and the answer awaited here: after a refusal python-socketio's own wait
        # hangs up before it raises, and that hang-up can take python-engineio's ping timeout
        # (60 s and more) when the server's close crosses it; this one is left to a thread.
        try:
            client.connect(self.server, auth={"token": self.token}, transports=TRANSPORTS,
                           wait=False)
        except exceptions.ConnectionError as exc:
            timed_out = time.monotonic() >= deadline - 0.1  # the handshake used up the time
            detail = exc.args[0] if exc.args else ""
            raise self._connect_error(detail, refusal[0] if refusal else None, timed_out) from None
        if not settled.wait(max(deadline - time.monotonic(), 0.0)) or refusal:
            client.start_background_task(client.disconnect)  # never waited for
            raise self._connect_error("", refusal[0] if refusal else None, not refusal)
        self._client = client
        self._attached = None

    def _connect_error(self, detail: Any, refused: Any, timed_out: bool = False) -> ConnectError:
        refused = _refusal(refused)
        if isinstance(refused, dict) and refused.get("code") == ERROR_AUTH:
            return ConnectError(
                f"the build server at {self.server} refused the token",
                "Pass a valid token with --token, FLOW_CLOUDBUILD_TOKEN or "
                "'flow config set cloudbuild.token TOKEN'",
            )
        if isinstance(refused, dict) and refused.get("message"):
            return ConnectError(f"the build server at {self.server} refused the connection: "
                                f"{refused['message']}")
        if timed_out:
            detail = f"no answer within {seconds(self.connect_timeout)} s"
        elif isinstance(detail, str) and detail.lower().startswith("connection error"):
            detail = "the Socket.IO handshake failed (is it a flow-cloudbuild-server?)"
        return unreachable(self.server, detail or "connection failed", self.connect_timeout)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - closing a broken socket is best effort
                pass

    # -- events ----------------------------------------------------------------------------

    def call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Emit ``event`` and return the ack's fields; a refused ack raises RefusedError."""
        from socketio import exceptions

        if self._client is None or not self._client.connected:
            self.connect()  # the connection dropped meanwhile (follow re-attaches on this one)
        try:
            ack = self._client.call(event, payload, timeout=ACK_TIMEOUT)
        except exceptions.TimeoutError:
            raise PublishError(f"the build server at {self.server} did not answer '{event}' "
                               f"within {ACK_TIMEOUT:.0f} s", "Try again later") from None
        except exceptions.SocketIOError as exc:
            raise unreachable(self.server, exc, self.connect_timeout) from None
        if not isinstance(ack, dict):
            raise PublishError(f"the build server answered '{event}' with {ack!r}")
        if not ack.get("ok"):
            error = ack.get("error") or {}
            raise RefusedError(str(error.get("code") or "internal"),
                               str(error.get("message") or f"'{event}' was refused"))
        return ack

    def publish(self, payload: dict[str, Any]) -> str:
        """Submit a task; returns its id (the socket is subscribed to it from seq 1)."""
        self._attached = task_id = str(self.call(EVENT_PUBLISH, payload)["taskId"])
        return task_id

    def attach(self, task_id: str, after_seq: int = 0) -> dict[str, Any]:
        task = self.call(EVENT_ATTACH, {"taskId": task_id, "afterSeq": after_seq}).get("task")
        self._attached = task_id
        return task or {}

    def cancel(self, task_id: str) -> None:
        self.call(EVENT_CANCEL, {"taskId": task_id})

    # -- following -------------------------------------------------------------------------

    def follow(self, task_id: str, on_message: Callable[[dict[str, Any]], None],
               after_seq: int = 0) -> dict[str, Any]:
        """Hand every message of ``task_id`` after ``after_seq`` to ``on_message``, in order,
        once each, until the final one, which is returned.

        python-socketio's sync client runs each received message's handler in a thread of its
        own, so two messages can reach the queue in the wrong order: a message ahead of the
        next expected seq waits (up to :data:`GAP_GRACE` seconds) for the ones before it
        instead of being taken for a gap at once.
        """
        self.last_seq = after_seq
        if self._client is not None and self._attached != task_id:
            self.attach(task_id, after_seq)  # a call reconnected (after Ctrl-C): subscribe it
        ahead: dict[int, dict[str, Any]] = {}  # seq -> message that arrived before its turn
        gap_since = 0.0
        dropped_at: float | None = None  # when the connection dropped, until reconnecting
        while True:
            try:
                generation, kind, data = self._events.get(
                    timeout=0.1 if ahead or dropped_at is not None else 0.5)
            except queue.Empty:
                if dropped_at is not None:
                    if time.monotonic() - dropped_at >= DROP_GRACE:
                        dropped_at = None
                        ahead.clear()
                        self._reconnect(task_id)
                    continue
                if ahead and time.monotonic() - gap_since > GAP_GRACE:
                    self.notify(f"missed messages {self.last_seq + 1}-{min(ahead) - 1}; "
                                "re-attaching")
                    ahead.clear()
                    self.attach(task_id, self.last_seq)
                continue
            if generation != self._generation:
                continue  # from a connection that has since been replaced
            if kind == "disconnect":
                self._client = None
                dropped_at = time.monotonic()  # messages sent before it may still come in
                continue
            meta = data.get("meta", {}) if isinstance(data, dict) else {}
            if meta.get("taskId") != task_id or not isinstance(meta.get("seq"), int):
                continue
            seq = meta["seq"]
            if seq <= self.last_seq:
                continue  # already handed on (replay overlap)
            if seq > self.last_seq + 1:
                if not ahead:
                    gap_since = time.monotonic()
                ahead[seq] = data
                continue
            while True:
                self.last_seq += 1
                on_message(data)
                if is_final(str(data.get("data", {}).get("action"))):
                    return data
                data = ahead.pop(self.last_seq + 1, None)
                if data is None:
                    break
            if ahead:  # the gap moved on: its grace starts again
                gap_since = time.monotonic()

    def _reconnect(self, task_id: str) -> None:
        self.notify(f"connection to {self.server} lost; reconnecting")
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 0.25
        while True:
            try:
                self.connect()
                self.attach(task_id, self.last_seq)
            except ConnectError as exc:
                if "refused the token" in exc.cause or time.monotonic() + delay > deadline:
                    raise ConnectError(
                        f"lost the connection to the build server at {self.server} and could "
                        f"not reconnect within {RECONNECT_WINDOW:.0f} s",
                        f"The task keeps running; follow it with: flow publish --attach {task_id}",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 3.0)
                continue
            self.notify(f"reconnected; resuming after message {self.last_seq}")
            return
