"""Deployments, each at its own origin: ``http://<deployment>.<deploy-domain>/`` (the task id),
``http://<project>.<deploy-domain>/`` (the project's prod release) and
``http://<project>--<branch>.<deploy-domain>/`` (a branch's latest build), by default under
``localhost:<port>``, which every browser resolves, with each subdomain, to loopback.

Why an origin per deployment rather than a path under the server: a published site is other
people's HTML and JavaScript. Under ``/artifacts/<id>/`` it shares the dashboard's origin, so it
had to be served with ``Content-Security-Policy: sandbox`` (no scripts) and its root-relative
paths (``/assets/app.js``, as Vite, Astro and most front-end tools write) missed. At its own
origin it runs its scripts and finds its assets, and the browser's same-origin policy keeps it
from the dashboard: host-only cookies are never sent to or readable by another host, and the
API answers no cross-origin request (no CORS headers), so a deployment cannot act with the
dashboard's session or call the API with credentials.

``HostRouter`` is the outermost ASGI layer: a request whose ``Host`` is under the deploy domain
goes to ``Deployments`` (GET and HEAD only; a websocket is closed), everything else to the
server's own app (Socket.IO gate, API, dashboard) unchanged.

A response: the file at the path (``/`` and ``…/`` -> ``index.html``; a directory without its
slash is redirected to it), else with ``spa = true`` in the project's ``[tool.flow.cloudbuild]``
``index.html`` for a path without a file extension, else the deployment's ``404.html`` with
status 404, else a plain 404. Files are read only through ``ArtifactStore.list`` and ``open``.
``ETag`` (the deployment id, the name, the size: a deployment's files never change);
``Cache-Control: public, max-age=31536000, immutable`` for content-hashed names
(``index-B3xk9a_Q.js``), ``no-cache`` for the rest (an alias's ``index.html`` changes with a
release; revalidating costs a 304). Text-like files of 1 KB to 8 MB are compressed when the
client accepts it: brotli when the ``brotli`` package is importable, else gzip; compressed
bodies are kept in a bounded cache.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
import re
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from flow_kit_cloudbuild.attestation import PROVENANCE_PATH
from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.storage.artifacts import safe_artifact_name
from flow_kit_cloudbuild.server.storage.releases import is_label

try:  # optional: brotli beats gzip by 15-25 % on JS and CSS; gzip when it is not installed
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None


#: A content-hashed file name: a dot or dash, then 8+ characters of base64url or hex with a
#: digit among them, then the extension (``app.3f2a9c1b.css``, ``index-B3xk9a_Q.js``).
HASHED_RE = re.compile(r"[.-](?=[A-Za-z0-9_]*\d)[A-Za-z0-9_]{8,}\.[A-Za-z0-9]{1,8}$")
IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
COMPRESS_MIN, COMPRESS_MAX = 1024, 8 * 1024 * 1024
COMPRESSED_CACHE_BYTES = 64 * 1024 * 1024
MANIFEST_CACHE = 512          # deployments whose file list is kept in memory
MANIFEST_TTL = 60.0           # seconds; a deployment's files never change, retention may delete them
MAX_PATH = 2048
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".htm": "text/html", ".json": "application/json", ".map": "application/json",
          ".webmanifest": "application/manifest+json", ".svg": "image/svg+xml", ".wasm": "application/wasm",
          ".txt": "text/plain", ".xml": "application/xml", ".ico": "image/x-icon", ".png": "image/png",
          ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
          ".avif": "image/avif", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
          ".otf": "font/otf", ".mp4": "video/mp4", ".webm": "video/webm", ".pdf": "application/pdf"}
_COMPRESSIBLE = ("text/", "application/json", "application/manifest+json", "application/xml",
                 "image/svg+xml", "application/wasm")


def content_type(name: str) -> str:
    """The Content-Type of a published file (charset for text); unknown types are bytes."""
    dot = name.rfind(".")
    ctype = _TYPES.get(name[dot:].lower()) if dot >= 0 else None
    if ctype is None:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/json", "application/manifest+json",
                                              "application/xml", "image/svg+xml"):
        return ctype + "; charset=utf-8"
    return ctype


def _accepts(header: str, coding: str) -> bool:
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == coding:
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


class _Site:
    """What serving one deployment needs, cached: its files (name -> size) and SPA choice."""

    __slots__ = ("files", "spa", "until")

    def __init__(self, files: dict[str, int], spa: bool, until: float) -> None:
        self.files, self.spa, self.until = files, spa, until


class Deployments:
    """Serves deployments and aliases from the server's ``service`` (artifacts, store, releases)."""

    def __init__(self, service: Any, domain: str) -> None:
        self.service = service
        self.domain = domain.lower()  # host[:port] of the deploy domain
        self.suffix = "." + self.domain.partition(":")[0]
        self._sites: OrderedDict[str, _Site] = OrderedDict()
        self._compressed: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._compressed_bytes = 0
        self.encodings = ("br", "gzip") if _brotli is not None else ("gzip",)

    def label_of(self, host: str) -> str | None:
        """The label of a Host under the deploy domain (``abc.localhost:7001`` -> ``abc``), else None."""
        name = host.lower().rsplit(":", 1)[0] if not host.startswith("[") else host
        if not name.endswith(self.suffix):
            return None
        return name[:-len(self.suffix)]

    async def _task_of(self, label: str) -> str | None:
        if is_id(label):
            return label
        if not is_label(label):
            return None
        project, sep, branch = label.partition("--")
        found: str | None = await self.service.releases.resolve(project, branch if sep else None)
        return found

    async def _site(self, task_id: str) -> _Site | None:
        site = self._sites.get(task_id)
        now = time.monotonic()
        if site is not None and site.until > now:
            self._sites.move_to_end(task_id)
            return site
        listed = await self.service.artifacts.list(task_id)
        if listed is None:
            self._sites.pop(task_id, None)
            return None
        record = await self.service.store.get(task_id)
        spa = bool(((record or {}).get("request") or {}).get("spa"))
        site = _Site({a["name"]: int(a["size"]) for a in listed}, spa, now + MANIFEST_TTL)
        self._sites[task_id] = site
        while len(self._sites) > MANIFEST_CACHE:
            self._sites.popitem(last=False)
        return site

    async def __call__(self, scope: Scope, receive: Receive, send: Send, label: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, "only GET and HEAD are served on deployments\n", [(b"allow", b"GET, HEAD")])
            return
        task_id = await self._task_of(label)
        site = await self._site(task_id) if task_id else None
        if task_id is None or site is None:
            await _plain(send, 404, f"no deployment {label[:80]} on this server; check the URL\n")
            return
        raw = scope.get("path", "/")
        if len(raw) > MAX_PATH:
            await _plain(send, 414, "path too long\n")
            return
        if raw == PROVENANCE_PATH:  # never an artifact's: artifact names never start with "."
            await self._provenance(send, task_id, method == "HEAD")
            return
        name = raw.lstrip("/")  # the ASGI path is percent-decoded already: never twice
        if name == "" or name.endswith("/"):
            name += "index.html"
        status = 200
        if name not in site.files:
            if name + "/index.html" in site.files:
                query = scope.get("query_string", b"")
                location = quote(raw).encode("ascii") + b"/" + (b"?" + query if query else b"")
                await _plain(send, 301, "moved\n", [(b"location", location)])
                return
            last = name.rsplit("/", 1)[-1]
            if site.spa and "." not in last and "index.html" in site.files:
                name = "index.html"
            elif "404.html" in site.files:
                name, status = "404.html", 404
            else:
                await _plain(send, 404, f"no file /{name[:200]} in this deployment\n")
                return
        if not safe_artifact_name(name):
            await _plain(send, 404, "no such file\n")
            return
        await self._file(scope, send, task_id, name, site.files[name], status, method == "HEAD")

    async def _provenance(self, send: Send, task_id: str, head: bool) -> None:
        """The deployment's signed provenance (a DSSE envelope; attestation.py), public like the
        deployment it describes; ``flow verify`` checks it against the server's key offline."""
        body = await self.service.artifacts.provenance(task_id)
        if body is None:
            await _plain(send, 404, "this deployment has no provenance (built before the server signed "
                                    "provenance)\n")
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", REVALIDATE),
                                (b"x-content-type-options", b"nosniff"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _file(self, scope: Scope, send: Send, task_id: str, name: str, size: int, status: int,
                    head: bool) -> None:
        ctype = content_type(name)
        headers = _headers(scope)
        coding = None
        if COMPRESS_MIN <= size <= COMPRESS_MAX and ctype.startswith(_COMPRESSIBLE):
            accept = headers.get(b"accept-encoding", b"").decode("latin-1")
            coding = next((c for c in self.encodings if _accepts(accept, c)), None)
        tag = hashlib.sha256(f"{task_id}\n{name}\n{size}".encode()).hexdigest()[:24]
        etag = f'"{tag}{"-" + coding if coding else ""}"'.encode()
        out = [(b"content-type", ctype.encode()), (b"etag", etag),
               (b"cache-control", IMMUTABLE if HASHED_RE.search(name) else REVALIDATE),
               (b"x-content-type-options", b"nosniff"), (b"vary", b"Accept-Encoding")]
        if status == 200 and etag in [t.strip() for t in headers.get(b"if-none-match", b"").split(b",")]:
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return
        if coding is not None:
            body = await self._compress(task_id, name, coding)
            if body is None:
                await _plain(send, 404, "no such file\n")
                return
            out += [(b"content-encoding", coding.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": b"" if head else body})
            return
        opened = None if head else await self.service.artifacts.open(task_id, name)
        if not head and opened is None:
            await _plain(send, 404, "no such file\n")
            return
        out.append((b"content-length", str(opened[0] if opened else size).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        if opened is None:
            await send({"type": "http.response.body", "body": b""})
            return
        chunks = opened[1]
        pending: bytes | None = None
        async for block in chunks:  # one body message per block, the last one says so
            if pending is not None:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
            pending = block
        await send({"type": "http.response.body", "body": pending or b""})

    async def _compress(self, task_id: str, name: str, coding: str) -> bytes | None:
        key = (task_id, name, coding)
        got = self._compressed.get(key)
        if got is not None:
            self._compressed.move_to_end(key)
            return got
        opened = await self.service.artifacts.open(task_id, name)
        if opened is None:
            return None
        data = b"".join([block async for block in opened[1]])
        body = await asyncio.to_thread(_encode, data, coding)
        self._compressed[key] = body
        self._compressed_bytes += len(body)
        while self._compressed_bytes > COMPRESSED_CACHE_BYTES and self._compressed:
            _, dropped = self._compressed.popitem(last=False)
            self._compressed_bytes -= len(dropped)
        return body


def _encode(data: bytes, coding: str) -> bytes:
    if coding == "br" and _brotli is not None:
        return bytes(_brotli.compress(data, quality=5))
    return gzip.compress(data, compresslevel=6)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
                            (b"x-content-type-options", b"nosniff"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class HostRouter:
    """The outermost ASGI app: deploy-domain hosts to ``deployments``, the rest to ``app``."""

    def __init__(self, app: ASGIApp, deployments: Deployments) -> None:
        self.app = app
        self.deployments = deployments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
            label = self.deployments.label_of(host.decode("latin-1")) if host else None
            if label is not None:
                await self.deployments(scope, receive, send, label)
                return
        await self.app(scope, receive, send)
