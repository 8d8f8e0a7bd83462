"""A minimal static npm registry on loopback, for tests and benchmarks.

``StaticNpmRegistry`` serves, from memory, what `npm ci` and `npm install` read: a packument
(``GET /<name>``, JSON with every version's ``dist.tarball`` and ``dist.integrity``) and the
tarballs (``GET /<name>/-/<base>-<version>.tgz``). Packages come from file contents
(``add_package``) or from tarballs fetched elsewhere (``add_tarball``, the benchmark's real tree).
Every request is recorded with its headers (``requests``), so a test can tell whether it came
through a proxy (``Via``). ``lock`` writes the package-lock.json (v3) a project needs for `npm ci`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote


def pack(name: str, version: str, files: dict[str, str], dependencies: dict[str, str] | None = None) -> bytes:
    """An npm package tarball (everything under ``package/``) with its package.json."""
    manifest = {"name": name, "version": version, "main": "index.js", "dependencies": dependencies or {}}
    contents = {"package.json": json.dumps(manifest, indent=2), **files}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, text in sorted(contents.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"package/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 499162500
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class StaticNpmRegistry:
    """Packuments and tarballs served by http.server on 127.0.0.1 from a daemon thread."""

    def __init__(self) -> None:
        self.packages: dict[str, dict[str, dict[str, Any]]] = {}   # name -> version -> manifest
        self.tarballs: dict[str, bytes] = {}                       # URL path -> bytes
        self.requests: list[tuple[str, dict[str, str]]] = []       # (path, headers) as received
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                registry.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                path = self.path.split("?", 1)[0]
                body: bytes | None = registry.tarballs.get(path)
                kind = "application/octet-stream"
                if body is None:
                    name = unquote(path.lstrip("/"))
                    if name in registry.packages:
                        body, kind = json.dumps(registry.packument(name)).encode(), "application/json"
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="static-npm-registry").start()

    def tarball_path(self, name: str, version: str) -> str:
        return f"/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"

    def add_tarball(self, name: str, version: str, data: bytes, manifest: dict[str, Any] | None = None) -> str:
        """Serve ``data`` as ``name@version``; returns its URL."""
        path = self.tarball_path(name, version)
        self.tarballs[path] = data
        url = self.url.rstrip("/") + quote(path, safe="/@")
        entry = {"name": name, "version": version, **(manifest or {}),
                 "dist": {"tarball": url, "integrity": integrity(data)}}
        self.packages.setdefault(name, {})[version] = entry
        return url

    def add_package(self, name: str, version: str, files: dict[str, str],
                    dependencies: dict[str, str] | None = None) -> str:
        return self.add_tarball(name, version, pack(name, version, files, dependencies),
                                {"dependencies": dependencies or {}})

    def packument(self, name: str) -> dict[str, Any]:
        versions = self.packages[name]
        latest = sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))[-1]
        return {"name": name, "dist-tags": {"latest": latest}, "versions": versions}

    def lock(self, project: str, dependencies: dict[str, str]) -> dict[str, Any]:
        """package-lock.json (v3) for a project depending on ``dependencies`` (name -> exact
        version, no transitive ones), resolved to this registry."""
        packages: dict[str, Any] = {"": {"name": project, "version": "1.0.0", "dependencies": dependencies}}
        for name, version in dependencies.items():
            entry = self.packages[name][version]
            packages[f"node_modules/{name}"] = {"version": version, "resolved": entry["dist"]["tarball"],
                                                "integrity": entry["dist"]["integrity"]}
        return {"name": project, "version": "1.0.0", "lockfileVersion": 3, "requires": True,
                "packages": packages}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
