"""The install step's only way out: an HTTP proxy that reaches the package registries and nothing else.

Why: the install step runs a project's install scripts (npm ``preinstall``, a PEP 517 backend).
With the host's network they reached the deployment's Redis and the server's own port on
loopback. Now install runs in a network namespace with only loopback (bubblewrap
``--unshare-net``, like the build step), and its one way out is this proxy:

- For each install command the pipeline opens a listener on a fresh unix socket (``listening``)
  in a private directory of the server; the sandbox binds that socket into the build as
  ``/run/flow-egress.sock`` and starts ``egress_relay`` in front of the command, which exposes
  it inside the namespace as ``127.0.0.1:3128``; npm, pip and uv are pointed at
  ``http://127.0.0.1:3128`` (``proxy_env``). No extra daemon, no routing, no firewall rules:
  the kernel gives the namespace nothing but loopback, and the socket is the only door.
- The proxy speaks ``CONNECT host:port`` (TLS tunnels: https registries, end to end, the proxy
  never sees the plaintext) and plain-HTTP forwarding (``GET http://host/...``: http:// registries;
  keep-alive, with every request checked on its own and each message's end found from its
  framing, so no request reaches an upstream unchecked), nothing else.
- A target is allowed only if its host is on the registry allowlist (``--registry-host``, config
  ``registry-hosts``; default ``DEFAULT_REGISTRY_HOSTS``), checked *before* any DNS lookup. The
  proxy resolves the name itself, drops every answer that is loopback, private, link-local,
  shared, multicast, reserved or one of the server's own addresses (IPv4-mapped, NAT64, 6to4 and
  Teredo IPv6 addresses are judged by the IPv4 address inside), and connects to a checked
  address, never to the name again, so DNS cannot point an allowed name at Redis.
- An operator's private mirror on a private address must be named as an address
  (``10.1.2.3:8081``, ``127.0.0.1:4873``) or pinned (``mirror.corp:443=10.1.2.3``): only then is
  that address (and port) allowed. The server's own port is refused even then.

It runs in the server's event loop (pure asyncio; DNS in the loop's executor), started and stopped
with each install command, so there is nothing to start with the server and nothing listening
between installs. Everything a build sends is hostile: the request head is bounded in size,
header count and time, connections per command and per process are capped, and an idle tunnel
is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from flow_kit_cloudbuild.server.cancelling import cancel_and_wait
from flow_kit_cloudbuild.server.registry_hosts import (
    DEFAULT_REGISTRY_HOSTS,
    IP,
    RegistryHost,
    parse_registry_hosts,
    split_authority,
)

__all__ = ["DEFAULT_REGISTRY_HOSTS", "EgressPolicy", "EgressProxy", "Refused", "RegistryHost", "address_problem",
           "parse_registry_hosts", "proxy_env", "trust_env", "trust_paths"]

log = logging.getLogger("flow_kit_cloudbuild.server.runtime.egress")

#: Where the proxy's socket appears inside the sandbox, and the relay's port there.
SANDBOX_SOCKET = "/run/flow-egress.sock"
RELAY_PORT = 3128
RELAY_SOURCE = Path(__file__).with_name("egress_relay.py")

MAX_HEAD = 16 * 1024          # bytes of request line + headers
MAX_HEADERS = 100
HEAD_TIMEOUT = 15.0           # seconds to send the request head
DNS_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0
IDLE_TIMEOUT = 120.0          # seconds without a byte either way before a tunnel is closed
MAX_PER_COMMAND = 128         # connections one install command may have open at once (uv opens up to 50 downloads)
MAX_PER_PROCESS = 512         # connections all installs of this server process may have open
MAX_REFUSALS_LOGGED = 20      # refusals told in one command's log (the rest are counted)
CHUNK = 256 * 1024

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Request headers the proxy never passes on (hop-by-hop, or the proxy's own business).
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
                "te", "trailer", "upgrade", "host"}
TRUST_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE")


class Refused(Exception):
    """A request the proxy answers with an error status; ``str()`` says why (shown to the build)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


# -- addresses -----------------------------------------------------------------------------------
def _embedded(ip: IP) -> list[IP]:
    """The IPv4 addresses an IPv6 address carries to somewhere else, then ``ip`` itself (so a
    mapped loopback address is called loopback, not just reserved)."""
    found: list[IP] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip.teredo is not None:
            found.extend(ip.teredo)
        if ip in _NAT64:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [*found, ip]


def address_problem(ip: IP, own: frozenset[IP] = frozenset()) -> str | None:
    """Why an install may not connect to ``ip`` (None: it may): judged with ``ipaddress``, not by
    the name that led there."""
    for a in _embedded(ip):
        if a.is_unspecified:
            return f"{ip} is the unspecified address (this host)"
        if a.is_loopback:
            return f"{ip} is a loopback address"
        if a.is_link_local:
            return f"{ip} is a link-local address"
        if a.is_multicast:
            return f"{ip} is a multicast address"
        if a in own:
            return f"{ip} is an address of the build server"
        if not a.is_global:
            return f"{ip} is a private or reserved address"
    return None


def own_addresses() -> frozenset[IP]:
    """Every address of this machine's interfaces (Linux ``/proc``), plus what its host name
    resolves to: a public address of the server is otherwise just a global address."""
    found: set[IP] = set()
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in zip(lines, lines[1:], strict=False):
            if line.strip() == "/32 host LOCAL":
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(prev.strip().split()[-1]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hexaddr = line.split()[0]
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv6Address(int(hexaddr, 16)))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    return frozenset(found)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, in the loop's executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EgressPolicy:
    """Which (host, port) an install may reach, and at which addresses."""

    def __init__(self, registries: Iterable[RegistryHost], *, own_ports: Iterable[int] = (),
                 own: frozenset[IP] | None = None, resolver: Resolver | None = None) -> None:
        self.registries = tuple(registries)
        self.own_ports = frozenset(own_ports)
        self._own = own
        self._own_at = 0.0
        self.resolver = resolver or system_resolver

    async def own(self) -> frozenset[IP]:
        """The server's addresses, looked up again at most once a minute (interfaces change),
        in a thread (the host name's lookup may ask DNS)."""
        if self._own is not None and (self._own_at == 0.0 or time.monotonic() - self._own_at < 60):
            return self._own
        self._own, self._own_at = await asyncio.to_thread(own_addresses), time.monotonic()
        return self._own

    def entry(self, host: str, port: int) -> RegistryHost:
        """The allowlist entry for ``host:port``; Refused (no DNS asked) when there is none."""
        for reg in self.registries:
            if reg.host == host and port in reg.ports():
                return reg
        if any(reg.host == host for reg in self.registries):
            raise Refused(403, "Forbidden", f"{host} is an allowed registry, but not on port {port}")
        raise Refused(403, "Forbidden", f"{host}:{port} is not an allowed package registry; installs reach "
                                        "only the registries the server allows (its operator: --registry-host)")

    async def addresses(self, host: str, port: int) -> list[IP]:
        """Checked addresses to connect to for ``host:port`` (the first is tried first)."""
        reg = self.entry(host, port)
        if reg.address is not None:  # the operator named this address: range checks waived
            local = reg.address in await self.own() or reg.address.is_loopback or reg.address.is_unspecified
            if local and port in self.own_ports:
                raise Refused(403, "Forbidden", f"{host}:{port} is the build server itself")
            return [reg.address]
        try:
            async with asyncio.timeout(DNS_TIMEOUT):
                answers = await self.resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise Refused(502, "Bad Gateway", f"cannot resolve {host}: {exc}") from None
        good: list[IP] = []
        problems: list[str] = []
        own = await self.own()
        for text in answers:
            try:
                ip = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                continue
            problem = address_problem(ip, own)
            if problem is None:
                if ip not in good:
                    good.append(ip)
            else:
                problems.append(problem)
        if not good:
            why = "; ".join(sorted(set(problems))) or "no address"
            raise Refused(403, "Forbidden", f"{host} resolves to no address an install may reach ({why})")
        return good


# -- the proxy -----------------------------------------------------------------------------------
class EgressProxy:
    """One per server process: the policy and the process-wide connection count."""

    def __init__(self, policy: EgressPolicy, *, max_per_process: int = MAX_PER_PROCESS,
                 max_per_command: int = MAX_PER_COMMAND, idle_timeout: float = IDLE_TIMEOUT,
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        self.policy = policy
        self.max_per_process = max_per_process
        self.max_per_command = max_per_command
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.open = 0

    @contextlib.asynccontextmanager
    async def listening(self, *, owner: tuple[int, int] | None = None,
                        on_refusal: Callable[[str], Awaitable[None]] | None = None) -> AsyncIterator[Path]:
        """A listener on a fresh unix socket for one install command; yields its path.

        The socket lives in a new mode-0700 directory of the server's (host users cannot reach
        it) and belongs to ``owner`` (the build's uid on a root server) with mode 0600: only that
        build can connect. On exit the listener and every connection it accepted are closed.
        """
        folder = Path(tempfile.mkdtemp(prefix="flow-egress-"))
        path = folder / "proxy.sock"
        session = _Session(self, on_refusal)
        server = await asyncio.start_unix_server(session.serve, path=str(path), limit=MAX_HEAD)
        try:
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
            yield path
        finally:
            server.close()
            await session.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
            shutil.rmtree(folder, ignore_errors=True)
            if session.refused > MAX_REFUSALS_LOGGED and on_refusal is not None:
                await on_refusal(f"egress: {session.refused - MAX_REFUSALS_LOGGED} more request(s) refused")


class _Session:
    """The connections of one install command."""

    def __init__(self, proxy: EgressProxy, on_refusal: Callable[[str], Awaitable[None]] | None) -> None:
        self.proxy = proxy
        self.on_refusal = on_refusal
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    async def close(self) -> None:
        await cancel_and_wait(*self.tasks)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        proxy = self.proxy
        if len(self.tasks) >= proxy.max_per_command or proxy.open >= proxy.max_per_process:
            await _answer(writer, Refused(503, "Service Unavailable", "too many connections through the proxy"))
            return
        self.tasks.add(task)
        proxy.open += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(proxy.head_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, ValueError):
                raise Refused(431, "Request Header Fields Too Large",
                              f"the request head is larger than {MAX_HEAD} bytes") from None
            except TimeoutError:
                raise Refused(408, "Request Timeout", "the request head did not arrive in time") from None
            except asyncio.IncompleteReadError:
                return
            method, target, version, headers = _parse_head(head)
            if method != "CONNECT":
                upstream = await self._forward(reader, writer, method, target, version, headers)
                return
            try:
                host, port = split_authority(target, default_port=None)
            except ValueError:
                raise Refused(400, "Bad Request", f"CONNECT needs host:port, not {target[:100]!r}") from None
            if port is None:
                raise Refused(400, "Bad Request", "CONNECT needs host:port")
            up_reader, upstream = await self._open(method, host, port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _pipe(reader, writer, up_reader, upstream, proxy.idle_timeout)
        except Refused as exc:
            self.refused += 1
            log.info("egress: %s", exc)
            if self.on_refusal is not None and self.refused <= MAX_REFUSALS_LOGGED:
                with contextlib.suppress(Exception):
                    await self.on_refusal(f"egress: {exc}")
            await _answer(writer, exc)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            proxy.open -= 1
            self.tasks.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()


    async def _open(self, method: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check ``host:port``, resolve it, and connect to a checked address."""
        where = f"{method} {host}:{port}"
        try:
            ips = await self.proxy.policy.addresses(host, port)
        except Refused as exc:
            raise Refused(exc.status, exc.reason, f"refused {where}: {exc}") from None
        return await _connect(ips, port, where)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, target: str,
                       version: str, headers: list[tuple[str, str]]) -> asyncio.StreamWriter | None:
        """Plain-HTTP forwarding with keep-alive: every request is checked against the policy on its
        own (a request for another host gets a new upstream connection), and each message's end
        is found from its framing (Content-Length or chunked), so the next request on the
        connection is read by the proxy and never reaches an upstream unchecked. A message it
        cannot frame (a chunked request body, a response ended by closing) ends the connection.
        Returns the upstream connection still open, for the caller to close."""
        idle = self.proxy.idle_timeout
        current: tuple[str, int] | None = None
        up_r: asyncio.StreamReader | None = None
        up_w: asyncio.StreamWriter | None = None
        while True:
            host, port, path = _absolute_http(target)
            if up_w is None or current != (host, port):
                if up_w is not None:
                    up_w.close()
                up_r, up_w = await self._open(method, host, port)
                current = (host, port)
            assert up_r is not None
            names = {k.lower(): v for k, v in headers}
            chunked_body = "transfer-encoding" in names
            length = _content_length(names.get("content-length", "0"), "request")
            client_closes = version == "HTTP/1.0" or "close" in names.get("connection", "").lower() \
                or "close" in names.get("proxy-connection", "").lower()
            authority = f"[{host}]" if ":" in host else host
            if port != 80:
                authority += f":{port}"
            lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}"]
            named = {n.strip().lower() for k, v in headers if k.lower() == "connection" for n in v.split(",")}
            lines += [f"{k}: {v}" for k, v in headers
                      if k.lower() not in _HOP_HEADERS and k.lower() not in named and k.lower() != "via"]
            lines.append("Via: 1.1 flow-egress")
            if chunked_body:
                lines.append("Connection: close")
            up_w.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if chunked_body:  # not framed here: one request, then both ways until the end
                await _relay_response_head(up_r, writer, idle)
                await _pipe(reader, writer, up_r, up_w, idle)
                return up_w
            await _copy_exact(reader, up_w, length, idle)
            while True:   # interim 1xx answers go on as they are
                status, resp_version, resp = await _response_head(up_r, idle)
                if not 100 <= status < 200 or status == 101:
                    break
                writer.write(("\r\n".join(resp) + "\r\n\r\n").encode("latin-1"))
            rnames = {line.partition(":")[0].strip().lower(): line.partition(":")[2].strip() for line in resp[1:]}
            no_body = method == "HEAD" or status in (204, 304)
            chunked = not no_body and "chunked" in rnames.get("transfer-encoding", "").lower()
            framed = no_body or chunked or "content-length" in rnames
            upstream_closes = resp_version == "HTTP/1.0" or "close" in rnames.get("connection", "").lower()
            close_after = client_closes or not framed or status == 101
            rnamed = {n.strip().lower() for n in rnames.get("connection", "").split(",")}
            kept = [line for line in resp[1:] if (name := line.partition(":")[0].strip().lower())
                    not in ("connection", "keep-alive", "proxy-connection") and name not in rnamed]
            if close_after:
                kept.append("Connection: close")
            writer.write(("\r\n".join([resp[0], *kept]) + "\r\n\r\n").encode("latin-1"))
            if not framed or status == 101:
                await _pipe(reader, writer, up_r, up_w, idle)
                return up_w
            if chunked:
                await _copy_chunked(up_r, writer, idle)
            elif not no_body:
                await _copy_exact(up_r, writer, _content_length(rnames["content-length"], "response"), idle)
            await writer.drain()
            if close_after:
                return up_w
            if upstream_closes:
                up_w.close()
                up_w = None
            try:
                async with asyncio.timeout(idle):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return up_w                      # the client is done
            except (asyncio.LimitOverrunError, ValueError):
                raise Refused(431, "Request Header Fields Too Large",
                              f"the request head is larger than {MAX_HEAD} bytes") from None
            method, target, version, headers = _parse_head(head)
            if method == "CONNECT":
                raise Refused(400, "Bad Request", "CONNECT on a connection that forwarded plain HTTP")


def _content_length(value: str, what: str) -> int:
    if not value.strip().isdigit() or len(value.strip()) > 18:
        raise Refused(400 if what == "request" else 502, "Bad Request" if what == "request" else "Bad Gateway",
                      f"a {what} with a malformed Content-Length")
    return int(value.strip())


async def _response_head(up: asyncio.StreamReader, timeout: float) -> tuple[int, str, list[str]]:
    """The upstream response's head: (status, HTTP version, lines), bounded in size and time."""
    try:
        async with asyncio.timeout(timeout):
            head = await up.readuntil(b"\r\n\r\n")
    except (asyncio.LimitOverrunError, ValueError):
        raise Refused(502, "Bad Gateway", "the registry's response head is too large") from None
    except TimeoutError:
        raise Refused(504, "Gateway Timeout", "the registry did not answer in time") from None
    lines = head.decode("latin-1")[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Refused(502, "Bad Gateway", "the registry's answer is not HTTP/1")
    return int(parts[1]), parts[0], lines


async def _copy_exact(src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int, idle: float) -> None:
    while n > 0:
        async with asyncio.timeout(idle):
            data = await src.read(min(n, CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        dst.write(data)
        await dst.drain()
        n -= len(data)


async def _copy_chunked(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: float) -> None:
    """Copy one chunked body as it is, trailers included, stopping exactly at its end."""
    while True:
        async with asyncio.timeout(idle):
            line = await src.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise Refused(502, "Bad Gateway", "the registry sent a malformed chunk")
        dst.write(line)
        size = int(size_text, 16)
        if size == 0:
            while True:   # trailers, up to the empty line
                async with asyncio.timeout(idle):
                    trailer = await src.readuntil(b"\r\n")
                dst.write(trailer)
                if trailer == b"\r\n":
                    return
        await _copy_exact(src, dst, size + 2, idle)


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise Refused(400, "Bad Request", "the request head is not text") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha() or not parts[0].isupper():
        raise Refused(400, "Bad Request", f"not an HTTP/1 request line: {lines[0][:100]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise Refused(431, "Request Header Fields Too Large", f"more than {MAX_HEADERS} header lines")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t\0\n\r") \
                or any(c in value for c in "\0\n\r"):
            raise Refused(400, "Bad Request", "a malformed header line")
        headers.append((name, value.strip()))
    return parts[0], parts[1], parts[2], headers


def _absolute_http(target: str) -> tuple[str, int, str]:
    """An absolute-form ``http://`` request target -> (host, port, origin-form path)."""
    if not target.lower().startswith("http://"):
        raise Refused(400, "Bad Request", "only CONNECT and absolute http:// requests are proxied")
    try:
        parts = urlsplit(target)
        host, port = split_authority(parts.netloc, default_port=80)
    except ValueError:
        raise Refused(400, "Bad Request", f"not a valid URL: {target[:100]!r}") from None
    if "@" in parts.netloc or port is None:
        raise Refused(400, "Bad Request", "URLs with credentials are not proxied")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in " \0\r\n"):
        raise Refused(400, "Bad Request", "a malformed request target")
    return host, port, path


async def _relay_response_head(up: asyncio.StreamReader, client: asyncio.StreamWriter, timeout: float) -> None:
    """Pass the upstream response's head on with ``Connection: close``: one request per
    connection, so the client must not send its next request on this one (it would reach the
    same upstream unchecked, or a closed socket)."""
    _, _, lines = await _response_head(up, timeout)
    named = {n.strip().lower() for line in lines[1:] if line.lower().startswith("connection:")
             for n in line.partition(":")[2].split(",")}
    kept = [line for line in lines[1:]
            if (name := line.partition(":")[0].strip().lower()) not in ("connection", "keep-alive",
                                                                         "proxy-connection") and name not in named]
    client.write(("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))


async def _connect(ips: list[IP], port: int,
                   where: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first checked address that answers (never to a name: no second lookup)."""
    last: Exception | None = None
    for ip in ips:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(str(ip), port, limit=CHUNK)
        except (OSError, TimeoutError) as exc:
            last = exc
    raise Refused(502, "Bad Gateway", f"{where}: cannot connect ({last})")


async def _pipe(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter, idle: float) -> None:
    """Copy both ways until both sides ended; close when neither moved a byte for ``idle`` seconds."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        data = await src.read(CHUNK)
                except TimeoutError:
                    if loop.time() - last[0] < idle:
                        continue   # the other direction is busy (a long download): wait on
                    raise
                if not data:
                    break
                last[0] = loop.time()
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    ups = asyncio.ensure_future(copy(client_r, up_w))
    downs = asyncio.ensure_future(copy(up_r, client_w))
    try:
        await asyncio.gather(ups, downs)
    except (OSError, TimeoutError, ConnectionError):
        pass
    finally:
        await cancel_and_wait(ups, downs)


async def _answer(writer: asyncio.StreamWriter, exc: Refused) -> None:
    body = f"flow build server: {exc}\n".encode()
    head = (f"HTTP/1.1 {exc.status} {exc.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError, RuntimeError):
        writer.write(head + body)
        async with asyncio.timeout(5):
            await writer.drain()
    writer.close()


# -- what the pipeline and the sandbox need ------------------------------------------------------
def proxy_env() -> dict[str, str]:
    """What points npm, pip, uv (and git, curl) inside the sandbox at the relay."""
    url = f"http://127.0.0.1:{RELAY_PORT}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "npm_config_proxy": url, "npm_config_https_proxy": url}


def trust_env(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, str]:
    """The server's TLS trust settings (a proxy's CA, a private registry's CA) for its builds."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in TRUST_ENV if environ.get(k)}


def trust_paths(env: dict[str, str]) -> tuple[Path, ...]:
    """The files and directories the trust settings in ``env`` name (the sandbox mounts them)."""
    found: list[Path] = []
    for key in TRUST_ENV:
        value = env.get(key)
        if value and os.path.isabs(value) and os.path.exists(value):
            p = Path(value)
            if p not in found:
                found.append(p)
    return tuple(found)


@functools.cache
def _relay_source() -> str:
    return RELAY_SOURCE.read_text(encoding="utf-8")


def relay_argv(python: str) -> list[str]:
    """The command prefix that runs the relay in front of an install command in the sandbox."""
    return [python, "-I", "-S", "-c", _relay_source(), SANDBOX_SOCKET, str(RELAY_PORT), "--"]


_proxies: dict[int, tuple[object, EgressProxy]] = {}


def proxy_for(cfg: object, registries: Iterable[str], own_ports: Iterable[int]) -> EgressProxy:
    """The process's proxy for a server config (made on first use, then shared by its pipelines)."""
    found = _proxies.get(id(cfg))
    if found is None or found[0] is not cfg:
        found = (cfg, EgressProxy(EgressPolicy(parse_registry_hosts(registries), own_ports=own_ports)))
        _proxies[id(cfg)] = found
    return found[1]
