"""The plain HTTP side of the protocol: uploads, task records, artifact downloads (stdlib only)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.client.errors import ConnectError, PublishError
from flow_kit_cloudbuild.protocol import PATH_TASKS, PATH_UPLOADS

__all__ = ["CONNECT_TIMEOUT", "probe", "upload", "get_task", "download", "unreachable"]

CONNECT_TIMEOUT = 5.0
TRANSFER_TIMEOUT = 120.0


def unreachable(server: str, reason: object) -> ConnectError:
    """The one error for "the build server cannot be reached", naming its URL."""
    text = str(getattr(reason, "reason", reason) or "no answer").strip()
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in text:
        text = f"no answer within {CONNECT_TIMEOUT:.0f} s"
    return ConnectError(
        f"cannot connect to the build server at {server}: {text}",
        "Check the URL (--server, or flow config set cloudbuild.server URL) and that "
        "flow-cloudbuild-server is running there",
    )


LOOPBACK_START_GRACE = 10.0  # seconds a refused loopback server gets to finish starting


def _loopback(host: str | None) -> bool:
    import ipaddress

    if host in ("localhost", None):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe(server: str) -> None:
    """Open (and close) a TCP connection to the server within CONNECT_TIMEOUT seconds.

    Socket.IO reports every failure as "Connection error"; this says which one it was
    (refused, no answer, unknown host) before the handshake is tried.
    """
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # A server on this machine may be starting right now (the README starts one in the
    # background, then publishes): give a refused loopback connection a few seconds.
    deadline = time.monotonic() + (LOOPBACK_START_GRACE if _loopback(parts.hostname) else 0)
    try:
        while True:
            try:
                socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT).close()
                break
            except ConnectionRefusedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    except socket.gaierror as exc:
        raise unreachable(server, f"unknown host ({exc.strerror})") from None
    except TimeoutError as exc:
        raise unreachable(server, exc) from None
    except OSError as exc:
        raise unreachable(server, (exc.strerror or str(exc)).lower()) from None


def _request(server: str, method: str, path: str, token: str, body: bytes | None = None,
             content_type: str | None = None, timeout: float = CONNECT_TIMEOUT) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(server + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise _http_error(server, path, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        raise unreachable(server, exc) from None


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


def upload(server: str, token: str, archive: bytes) -> str:
    """POST the .tar.gz; returns the server's ``uploadId``."""
    answer = _request(server, "POST", PATH_UPLOADS, token, archive, "application/gzip",
                      timeout=TRANSFER_TIMEOUT)
    upload_id = answer.get("uploadId") if isinstance(answer, dict) else None
    if not isinstance(upload_id, str):
        raise PublishError(f"the build server at {server} sent no uploadId for the upload")
    return upload_id


def get_task(server: str, token: str, task_id: str) -> dict[str, Any]:
    return _request(server, "GET", PATH_TASKS + task_id, token)


def download(url: str, dest: Path) -> None:
    """Download one artifact to ``dest`` (artifact downloads need no token)."""
    try:
        with urllib.request.urlopen(url, timeout=TRANSFER_TIMEOUT) as response:
            dest.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as exc:
        raise PublishError(f"cannot download {url}: {exc}") from None
