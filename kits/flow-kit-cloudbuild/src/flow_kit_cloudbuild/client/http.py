"""The plain HTTP side of the protocol: uploads, task records, artifact downloads (stdlib only)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flow_kit_cloudbuild.client.errors import ConnectError, PublishError
from flow_kit_cloudbuild.client.settings import CONNECT_TIMEOUT
from flow_kit_cloudbuild.protocol import PATH_PROJECTS, PATH_TASKS, PATH_UPLOADS

__all__ = ["CONNECT_TIMEOUT", "probe", "upload", "get_task", "download", "unreachable"]

# CONNECT_TIMEOUT (settings.py; --connect-timeout, connect-timeout in [tool.flow.cloudbuild])
# bounds the TCP probe, the Socket.IO connect (session.py), every HTTP call's connect (TCP,
# TLS) and the whole of the small calls (get_task).
#: How long an upload or download may stall once connected (seconds).
TRANSFER_TIMEOUT = 120.0


def seconds(value: float) -> str:
    """``5`` for 5.0, ``1.5`` for 1.5: how the timeout is spelled in messages."""
    return f"{value:g}"


def unreachable(server: str, reason: object, connect_timeout: float = CONNECT_TIMEOUT) -> ConnectError:
    """The one error for "the build server cannot be reached": one line naming its URL, the
    connect timeout and the option that changes it."""
    text = str(getattr(reason, "reason", reason) or "no answer").strip()
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in text:
        text = f"no answer within {seconds(connect_timeout)} s"
    return ConnectError(
        f"cannot connect to the build server at {server}: {text}",
        "Check the URL (--server, or flow config set cloudbuild.server URL) and that "
        f"flow-cloudbuild-server is running there; the connect timeout is "
        f"{seconds(connect_timeout)} s (--connect-timeout SECONDS)",
    )


def _loopback(host: str | None) -> bool:
    import ipaddress

    if host in ("localhost", None):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe(server: str, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Open (and close) a TCP connection to the server within ``connect_timeout`` seconds.

    Socket.IO reports every failure as "Connection error"; this says which one it was
    (refused, no answer, unknown host) before the handshake is tried.
    """
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # A server on this machine may be starting right now (the README starts one in the
    # background, then publishes): a refused loopback connection is tried again, within the
    # same connect timeout.
    start = time.monotonic()
    deadline = start + (connect_timeout if _loopback(parts.hostname) else 0)
    try:
        while True:
            left = max(connect_timeout - (time.monotonic() - start), 0.05)
            try:
                socket.create_connection((parts.hostname or "", port), timeout=left).close()
                break
            except ConnectionRefusedError:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise
                time.sleep(min(wait, 0.1))
    except socket.gaierror as exc:
        raise unreachable(server, f"unknown host ({exc.strerror})", connect_timeout) from None
    except TimeoutError as exc:
        raise unreachable(server, exc, connect_timeout) from None
    except OSError as exc:
        raise unreachable(server, (exc.strerror or str(exc)).lower(), connect_timeout) from None


class _ConnectTimeout:
    """An http.client connection that connects (TCP and TLS) within ``connect_timeout`` and
    then reads and writes with the request's own timeout."""

    connect_timeout: float
    timeout: Any
    sock: Any

    def connect(self) -> None:
        transfer, self.timeout = self.timeout, self.connect_timeout
        try:
            super().connect()  # type: ignore[misc]
        finally:
            self.timeout = transfer
        self.sock.settimeout(transfer)


class _HTTPConnection(_ConnectTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ConnectTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def http_open(self, req: Any) -> Any:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = _HTTPConnection(host, **kwargs)
        conn.connect_timeout = self.connect_timeout
        return conn


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connect_timeout: float) -> None:
        super().__init__()
        self.connect_timeout = connect_timeout

    def https_open(self, req: Any) -> Any:
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined]

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPSConnection:
        conn = _HTTPSConnection(host, **kwargs)
        conn.connect_timeout = self.connect_timeout
        return conn


def _connecting_opener(connect_timeout: float, *extra: Any) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment included) whose connects time out after
    ``connect_timeout`` seconds."""
    return urllib.request.build_opener(_HTTPHandler(connect_timeout),
                                       _HTTPSHandler(connect_timeout), *extra)


def _request(server: str, method: str, path: str, token: str, body: bytes | None = None,
             content_type: str | None = None, timeout: float | None = None,
             connect_timeout: float = CONNECT_TIMEOUT) -> Any:
    """One call; it connects within ``connect_timeout`` and then may take ``timeout`` per read
    or write (default: the connect timeout too)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(server + path, data=body, method=method, headers=headers)
    try:
        with _connecting_opener(connect_timeout).open(
                request, timeout=connect_timeout if timeout is None else timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise _http_error(server, path, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        raise unreachable(server, exc, connect_timeout) from None


def _http_error(server: str, path: str, exc: urllib.error.HTTPError) -> PublishError:
    try:
        detail = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        detail = {}
    error = detail.get("error") if isinstance(detail, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if exc.code == 401:
        return ConnectError(f"the build server at {server} refused the token",
                            "Pass a valid token with --token or FLOW_CLOUDBUILD_TOKEN")
    if exc.code == 413:
        return PublishError(f"the build server at {server} refused the upload as too large",
                            message or "Publish from git (--source git) instead")
    return PublishError(f"{path} on {server} answered HTTP {exc.code}: {message or exc.reason}")


def upload(server: str, token: str, archive: bytes,
           connect_timeout: float = CONNECT_TIMEOUT) -> str:
    """POST the .tar.gz; returns the server's ``uploadId``. Connecting has ``connect_timeout``
    seconds, the transfer :data:`TRANSFER_TIMEOUT`."""
    answer = _request(server, "POST", PATH_UPLOADS, token, archive, "application/gzip",
                      timeout=TRANSFER_TIMEOUT, connect_timeout=connect_timeout)
    upload_id = answer.get("uploadId") if isinstance(answer, dict) else None
    if not isinstance(upload_id, str):
        raise PublishError(f"the build server at {server} sent no uploadId for the upload")
    return upload_id


def get_task(server: str, token: str, task_id: str,
             connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """The task record; the whole call within ``connect_timeout`` (per read)."""
    return _request(server, "GET", PATH_TASKS + task_id, token, connect_timeout=connect_timeout)


def promote(server: str, token: str, task_id: str, connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """``POST /api/tasks/<id>/promote``: the server's answer (project, url, previous)."""
    return _request(server, "POST", PATH_TASKS + quote(task_id, safe="") + "/promote", token,
                    body=b"", connect_timeout=connect_timeout)


def releases(server: str, token: str, project: str, connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """``GET /api/projects/<name>/releases``: aliases and history of a project this token owns."""
    return _request(server, "GET", PATH_PROJECTS + quote(project, safe="") + "/releases", token,
                    connect_timeout=connect_timeout)


#: The largest artifact ``download`` writes (the server's own default quota is 1 GiB a task).
MAX_DOWNLOAD_BYTES = 2 * 1024 ** 3
DOWNLOAD_CHUNK = 1024 * 1024


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for any other scheme or a malformed URL."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        return None
    return (scheme, host, port) if scheme in ("http", "https") and host else None


def same_server(url: str, server: str) -> bool:
    """Whether ``url`` is on ``server`` (same scheme, host and port): the only place artifact
    URLs a server sends may point to."""
    origin = _origin(url)
    return origin is not None and origin == _origin(server)


class _SameServerRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the server itself."""

    def __init__(self, server: str) -> None:
        self.server = server

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        if not same_server(newurl, self.server):
            raise PublishError(f"the build server at {self.server} redirected an artifact download to "
                               f"{newurl[:200]}, which is not on that server; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(server: str, connect_timeout: float = CONNECT_TIMEOUT) -> urllib.request.OpenerDirector:
    """http(s) only (urllib's default opener also reads file://, ftp:// and data: URLs)."""
    opener = urllib.request.OpenerDirector()
    for handler in (_HTTPHandler(connect_timeout), _HTTPSHandler(connect_timeout),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    _SameServerRedirects(server)):
        opener.add_handler(handler)
    return opener


def download(url: str, dest: Path, *, server: str, max_bytes: int = MAX_DOWNLOAD_BYTES,
             connect_timeout: float = CONNECT_TIMEOUT) -> int:
    """Download one artifact to ``dest`` (artifact downloads need no token); returns its size.

    Only from ``server`` (the URL ``flow publish`` talks to: same scheme, host and port; no
    file:// or other hosts, no redirect away), streamed to a temporary file beside ``dest`` in
    chunks and stopped past ``max_bytes``, so a hostile server can neither make the client read
    a local file or another host nor fill its memory or disk.
    """
    if not same_server(url, server):
        raise PublishError(f"the build server at {server} sent the artifact URL {url[:200]!r}, which is "
                           "not on that server; refused (artifacts are downloaded only from the server "
                           "flow publish talks to)")
    part = dest.with_name(f".{dest.name}.part")
    written = 0
    try:
        with _opener(server, connect_timeout).open(url, timeout=TRANSFER_TIMEOUT) as response, open(part, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(url, max_bytes)
            while chunk := response.read(DOWNLOAD_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise _too_large(url, max_bytes)
                out.write(chunk)
        part.replace(dest)
    except (urllib.error.URLError, OSError) as exc:
        raise PublishError(f"cannot download {url}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)
    return written


def _too_large(url: str, max_bytes: int) -> PublishError:
    return PublishError(f"the artifact {url[:200]} is larger than {max_bytes} bytes, the most flow publish "
                        "downloads; refused")
