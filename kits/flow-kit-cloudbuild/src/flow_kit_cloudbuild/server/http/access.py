"""Who may stay connected: the failed-token limiter and the handshake deadline.

* ``FailureLimiter``: each client address gets ``limit`` failed token attempts per ``window``
  seconds (Socket.IO connects and HTTP bearer routes together); past that every attempt from the
  address is refused with a ``retryAfter`` without looking at the token, so guessing runs at
  ``limit`` per window. Its table of addresses is capped (the oldest entries go first). IPv6
  clients count per /64, the block one subscriber usually holds.
* ``Handshakes``: an Engine.IO connection that has not authenticated within ``timeout`` seconds
  is closed, and one address may hold only ``per_address`` such connections at once, so
  unauthenticated sockets cannot use up the server's file descriptors.

* ``Signer``: HMAC-SHA256 under the server secret (``--secret-file``), for what a process reads
  back from a store others can write to (Redis: dashboard sessions, task records, job entries,
  cancel flags, prod releases), so a write into that store cannot mint a session or a job.

Client addresses come from the ASGI scope: the TCP peer, or what a proxy named with
``--forwarded-allow-ips`` put in ``X-Forwarded-For`` (uvicorn's proxy headers, configured in
cli.py; by default no peer is trusted, since a build can reach the server's port from loopback).

What reaches below python-socketio's public API (the Engine.IO connect/disconnect hooks that
feed ``Handshakes``, closing a connection down to its websocket) is in ``sio_adapter``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

MAX_ADDRESSES = 10_000                   # addresses the failure table remembers
MAX_UNAUTHENTICATED_PER_ADDRESS = 16     # open connections without a valid token, per address


def address_key(host: Any) -> str:
    """The key an address is limited by: the IPv4 address, or the /64 of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(str(host))
    except ValueError:
        return str(host)[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def scope_address(scope: Mapping[str, Any] | None) -> str:
    """The client address of an ASGI scope: the peer, or the client a trusted proxy named
    (uvicorn rewrites ``client`` only for peers in ``--forwarded-allow-ips``)."""
    client = (scope or {}).get("client")
    return address_key(client[0]) if client else "unknown"


def environ_address(environ: dict[str, Any]) -> str:
    """The client address of an Engine.IO environ: engineio's ASGI driver sets REMOTE_ADDR to a
    fixed 127.0.0.1, so take the ASGI scope it keeps."""
    return scope_address(environ.get("asgi.scope"))


class FailureLimiter:
    def __init__(self, limit: int, window: float, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_addresses, self.clock = limit, window, max_addresses, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try a token again; 0 when it may now."""
        times = self._failures.get(address)
        if times is None:
            return 0
        now = self.clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return 0
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str) -> None:
        times = self._failures.get(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(self.clock())

    def refusal(self, address: str, retry_after: int) -> str:
        return (f"too many failed token attempts from {address} ({self.limit} per {self.window:g} s); "
                f"retry in {retry_after} s with a valid token")

    def __len__(self) -> int:
        return len(self._failures)


class Handshakes:
    """Engine.IO connections without a valid token yet: closed after ``timeout`` seconds."""

    def __init__(self, timeout: float, close: Callable[[str], Awaitable[None]],
                 per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS) -> None:
        self.timeout, self.close, self.per_address = timeout, close, per_address
        self._pending: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        self._count: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def opened(self, eio_sid: str, address: str) -> bool:
        """A connection opened; False when ``address`` already holds too many unauthenticated ones."""
        if self._count.get(address, 0) >= self.per_address:
            return False
        self._count[address] = self._count.get(address, 0) + 1
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, eio_sid)
        self._pending[eio_sid] = (address, timer)
        return True

    def authenticated(self, eio_sid: str | None) -> None:
        self._forget(eio_sid)

    def closed(self, eio_sid: str) -> None:
        self._forget(eio_sid)

    def _forget(self, eio_sid: str | None) -> None:
        entry = self._pending.pop(eio_sid, None) if eio_sid is not None else None
        if entry is None:
            return
        address, timer = entry
        timer.cancel()
        left = self._count.get(address, 1) - 1
        if left > 0:
            self._count[address] = left
        else:
            self._count.pop(address, None)

    def _expire(self, eio_sid: str) -> None:
        if eio_sid not in self._pending:
            return
        self._forget(eio_sid)
        task = asyncio.ensure_future(self.close(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def __len__(self) -> int:
        return len(self._pending)
