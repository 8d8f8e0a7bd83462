"""The client API's HTTP routes (docs/protocol.md, "HTTP routes"): health, uploads, task records
and artifacts. The dashboard's routes are in dashboard.py; both go on the one app of http.py.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from flow_kit_cloudbuild import __version__, attestation, protocol
from flow_kit_cloudbuild.server import policy
from flow_kit_cloudbuild.server.http import access
from flow_kit_cloudbuild.server.http.headers import ARTIFACT_SECURITY_HEADERS, artifact_headers
from flow_kit_cloudbuild.server.http.responses import HTTPError, json_response, route, with_headers
from flow_kit_cloudbuild.server.storage.objects import ObjectStore
from flow_kit_cloudbuild.server.tasks import housekeeping
from flow_kit_cloudbuild.server.tasks.service import public


class ApiRoutes:
    """The routes of ``server`` (an ``app.Server``: its config, service and token check)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.cfg = server.cfg
        self.service = server.service
        self._receiving: dict[str, dict[str, int]] = {}  # token hash -> {upload id: bytes so far}

    def routes(self) -> list[BaseRoute]:
        return [
            route(protocol.PATH_HEALTH, self.health),
            route(attestation.KEY_PATH, self.provenance_key),
            route(protocol.PATH_UPLOADS, self.upload, ["POST"]),
            route(protocol.PATH_TASKS + "{task_id}/promote", self.promote, ["POST"]),
            route(protocol.PATH_PROJECTS + "{name:path}/releases", self.releases),
            route(protocol.PATH_TASKS + "{task_id:path}", self.task),
            route(protocol.PATH_ARTIFACTS + "{rest:path}", self.artifacts),
        ]

    def _bearer(self, request: Request) -> str:
        """The token hash of ``Authorization: Bearer <token>``; 401, or 429 past the failure limit."""
        token = None
        text = request.headers.get("authorization")
        if text is not None and text[:7].lower() == "bearer ":
            token = text[7:].strip()
        address = access.scope_address(request.scope)
        token_hash, wait = self.server.check_token(token, address)
        if wait:
            raise HTTPError(429, protocol.ERROR_REFUSED, self.server.failures.refusal(address, wait),
                            headers=[(b"retry-after", str(wait).encode())], retryAfter=wait)
        if token_hash is None:
            raise HTTPError(401, protocol.ERROR_AUTH, "missing or invalid token; send Authorization: Bearer <token>")
        return token_hash

    async def health(self, request: Request) -> Response:
        return json_response({"ok": True, "version": __version__})

    async def provenance_key(self, request: Request) -> Response:
        """The public key that checks this server's provenance (PEM). Public: a user fetches it once
        over a channel they trust and keeps it for ``flow verify --key`` (which never fetches it)."""
        import asyncio

        key = await asyncio.to_thread(self.service.provenance_key)
        return Response(attestation.public_pem(key), media_type="application/x-pem-file",
                        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})

    async def task(self, request: Request) -> Response:
        token_hash = self._bearer(request)
        return json_response(public(await self.service.owned(request.path_params["task_id"], token_hash)))

    async def promote(self, request: Request) -> Response:
        """``flow promote``: point the project's prod alias at this task (TaskService.promote)."""
        token_hash = self._bearer(request)
        return json_response(await self.service.promote(token_hash, request.path_params["task_id"]))

    async def releases(self, request: Request) -> Response:
        """``flow releases``: the project's aliases and release history, for its owner."""
        token_hash = self._bearer(request)
        return json_response(await self.service.project_releases(token_hash, request.path_params["name"]))

    async def artifacts(self, request: Request) -> Response:
        task_id, _, name = request.path_params["rest"].partition("/")
        if not policy.is_id(task_id):
            raise HTTPError(404, protocol.ERROR_NOT_FOUND, "no such task; check the URL")
        listed = await self.service.artifacts.list(task_id)
        if listed is None:
            raise HTTPError(404, protocol.ERROR_NOT_FOUND, "this task has no artifacts; check the URL")
        if not name:
            base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{task_id}/"
            return json_response([{"name": a["name"], "url": base + quote(a["name"]), "size": a["size"]}
                                  for a in listed], headers=ARTIFACT_SECURITY_HEADERS)
        opened = await self.service.artifacts.open(task_id, name)
        if opened is None:
            raise HTTPError(404, protocol.ERROR_NOT_FOUND, f"no artifact {name[:100]!r} in this task")
        size, chunks = opened
        response = StreamingResponse(chunks)  # no media type: artifact_headers names it
        return with_headers(response, [(b"content-length", str(size).encode()), *artifact_headers(name)])

    # -- uploads -------------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        """Store a ``.tar.gz`` for a later publish: bounded by ``max-upload-bytes`` (declared and
        as received) and by the token's quota of pending uploads, written as it arrives."""
        token_hash = self._bearer(request)
        limit = self.cfg.max_upload_bytes
        too_large = f"upload is larger than {limit} bytes; upload fewer files"
        declared = 0
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "bad Content-Length") from None
            if declared > limit:
                raise HTTPError(413, protocol.ERROR_BAD_REQUEST, too_large)
        spool = self.service.paths.uploads  # received here, then stored (Paths.upload_store)
        store = self.service.paths.upload_store
        receiving = self._receiving.setdefault(token_hash, {})
        upload_id = secrets.token_hex(12)
        receiving[upload_id] = 0
        try:
            quota = await self._upload_quota(store, token_hash, receiving)
            quota(max(declared, 0))
            spool.mkdir(parents=True, exist_ok=True)
            tmp = spool / f".{upload_id}.part"
            size = 0
            try:
                with open(tmp, "wb") as fh:
                    try:
                        async for block in request.stream():
                            size += len(block)
                            if size > limit:
                                raise HTTPError(413, protocol.ERROR_BAD_REQUEST, too_large)
                            receiving[upload_id] = size
                            quota(0)
                            fh.write(block)
                    except ClientDisconnect:
                        raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "upload interrupted") from None
                with open(tmp, "rb") as fh:
                    if fh.read(2) != b"\x1f\x8b":
                        raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "upload must be a .tar.gz archive")
                    fh.seek(0)
                    # the archive first, its record last: no publish finds a record without sources
                    await store.put_file(f"{upload_id}.tar.gz", fh, limit=size)
                await store.put_bytes(f"{upload_id}.json", json.dumps(
                    {"tokenHash": token_hash, "size": size, "createdAt": protocol.now_ms()}).encode("utf-8"),
                    content_type="application/json")
            finally:
                if tmp.exists():
                    tmp.unlink()
        finally:
            receiving.pop(upload_id, None)
            if not receiving:
                self._receiving.pop(token_hash, None)
        return json_response({"uploadId": upload_id}, 201)

    async def _upload_quota(self, store: ObjectStore, token_hash: str,
                            receiving: dict[str, int]) -> Callable[[int], None]:
        """A check that the token's pending uploads (stored and being received) fit its quota."""
        count, stored = await housekeeping.pending_uploads(store, token_hash)
        max_count, max_bytes = self.cfg.max_pending_uploads, self.cfg.max_pending_upload_bytes
        later = (f"publish them, or wait until they expire ({self.cfg.upload_retention_hours:g} h "
                 "after upload)")
        if count + len(receiving) > max_count:
            raise HTTPError(429, protocol.ERROR_REFUSED,
                            f"this token already holds {max_count} uploads no task used yet; {later}")

        def check(more: int) -> None:
            if max_bytes and stored + sum(receiving.values()) + more > max_bytes:
                raise HTTPError(429, protocol.ERROR_REFUSED,
                                f"this token's uploads that no task used yet would exceed {max_bytes} bytes; "
                                f"{later}")
        return check
