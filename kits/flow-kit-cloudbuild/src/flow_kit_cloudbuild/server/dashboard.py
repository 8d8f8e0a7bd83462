"""The build dashboard: web pages under ``/`` on the server's own port (gateways and embedded).

Routes (``Dashboard.route`` answers them; the app's router hands every request here first):

``GET /``, ``GET /tasks/<id>``        the single-page app (``dashboard_static/index.html``)
``GET /ui/static/<file>``              its script and style sheet (shipped in the package)
``POST /ui/api/login``                 ``{"token"}`` -> a session cookie (HttpOnly, SameSite=Strict)
``POST /ui/api/logout``                ends the session (CSRF header)
``GET /ui/api/session``                who is signed in, and the session's CSRF token
``GET /ui/api/tasks``                  the token's tasks, newest first (``project``, ``state``,
                                       ``cursor``, ``limit``)
``GET /ui/api/tasks/<id>``             one task (the same ownership check as the API)
``GET /ui/api/tasks/<id>/events``      its messages as server-sent events; ``id`` = seq, so a
                                       lost connection resumes with ``Last-Event-ID``
``GET /ui/api/tasks/<id>/log``         the whole log as a text file
``POST /ui/api/tasks/<id>/cancel``     cancel (CSRF header)

Security: the token is only ever sent in a POST body and never stored (sessions keep its hash);
every state-changing request needs the session's CSRF token in ``X-CSRF-Token`` and an
``Origin`` equal to the server's own URL (``--public-url``, else the bind address; never the
request's ``Host``, which a DNS-rebinding page controls); API requests a browser marks as
cross-site (``Sec-Fetch-Site``) are refused; pages carry a strict Content-Security-Policy (no
inline script, ``script-src 'self'``) and the script renders all data with ``textContent``.
Sessions live in memory (embedded) or in Redis (every gateway of a deployment accepts them),
keyed by a hash of the cookie value and signed with the server secret (``access.Signer``): a
record written into Redis by anyone else is no session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import parse_qs, quote, urlsplit

from .. import protocol
from .access import Signer
from .dashboard_events import BATCH_BYTES, events, tail_of
from .errors import RequestError
from .http_headers import SECURITY_HEADERS
from .store import FileTaskStore

log = logging.getLogger("flow_kit_cloudbuild.server")
Scope = dict[str, Any]

STATIC_DIR = Path(__file__).with_name("dashboard_static")
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
COOKIE = "flowcb_session"
SESSION_TTL = 12 * 3600          # seconds a sign-in lasts
MAX_MEMORY_SESSIONS = 10_000
PAGE_SIZE, MAX_PAGE = 50, 200
SCAN_BUDGET = 2000               # records one list request may look at for a state filter
RUNNING_STATES = tuple(s for s in protocol.STEPS if s != "queued")
def label(token_hash: str | None) -> str:
    """How the dashboard names a token: never the token, a short prefix of its hash."""
    return f"token {str(token_hash or '')[:8] or '?'}"


class _Reply(Exception):
    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


# -- sessions -------------------------------------------------------------------------------------
class MemorySessions:
    def __init__(self) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._items[key] = value
        now = time.time()
        while len(self._items) > MAX_MEMORY_SESSIONS:
            self._items.popitem(last=False)
        for k in [k for k, v in list(self._items.items())[:100] if v["exp"] < now]:
            self._items.pop(k, None)

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self._items.get(key)
        if value is None or value["exp"] < time.time():
            self._items.pop(key, None)
            return None
        return value

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


class RedisSessions:
    """Sessions every gateway of the deployment sees: ``flowcb:dash:session:<hash>``."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await self.redis.set(f"flowcb:dash:session:{key}", json.dumps(value), ex=SESSION_TTL)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"flowcb:dash:session:{key}")
        if raw is None:
            return None
        value = json.loads(raw)
        return value if value.get("exp", 0) >= time.time() else None

    async def delete(self, key: str) -> None:
        await self.redis.delete(f"flowcb:dash:session:{key}")


class Dashboard:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.cfg = server.cfg
        self.service = server.service
        self.store = self.service.store
        self.redis_mode = server.redis is not None
        self.serves = server.redis is None or server.redis.serves_clients
        redis = getattr(self.store, "redis", None) if self.redis_mode else None
        self.sessions: Any = RedisSessions(redis) if redis is not None else MemorySessions()
        self._token_hashes = frozenset(protocol.token_hash(t) for t in self.cfg.tokens)
        self.signer = Signer(self.cfg.secret)
        self._final_records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES
                        if (STATIC_DIR / name).is_file()}
        self._index_html = (STATIC_DIR / "index.html").read_bytes()
        if isinstance(self.store, FileTaskStore):
            from .dashboard_index import FileIndex

            self.index: Any = FileIndex(self.cfg.data_dir, self.store.root)
            self.index.build_if_needed()
        elif redis is not None:
            from .dashboard_index import RedisIndex

            self.index = RedisIndex(redis)
        else:
            self.index = None
        self._hook_store()

    # -- keeping the index and the start time --------------------------------------------------
    def _hook_store(self) -> None:
        """Record each new task in the index, and when its build started (``startedAt``)."""
        store, index = self.store, self.index
        create, update = store.create, store.update

        async def create_indexed(record: dict[str, Any]) -> None:
            await create(record)
            if index is not None:
                try:
                    await index.add(record)
                except Exception:  # the dashboard must never fail a publish
                    log.exception("dashboard: could not index task %s", record.get("taskId"))

        async def update_started(task_id: str, **fields: Any) -> dict[str, Any]:
            if fields.get("step") == "prepare" and "startedAt" not in fields:
                fields["startedAt"] = protocol.now_ms()
            return await update(task_id, **fields)

        store.create, store.update = create_indexed, update_started

    # -- HTTP plumbing -------------------------------------------------------------------------
    async def route(self, scope: Scope, receive: Callable, send: Callable) -> bool:
        """Answer a dashboard request; False when ``scope`` is not one (the app goes on)."""
        path, method = scope["path"], scope["method"]
        if not self.serves:
            return False
        is_page = path == "/" or (path.startswith("/tasks/") and path.count("/") == 2)
        if not (is_page or path.startswith("/ui/")):
            return False
        try:
            if is_page:
                self._allow(method, "GET", "HEAD")
                await self._respond(send, 200, self._index_html, "text/html; charset=utf-8",
                                    cache="no-cache")
            elif path.startswith("/ui/static/"):
                self._allow(method, "GET", "HEAD")
                name = path[len("/ui/static/"):]
                if name not in self._static:
                    raise _Reply(404, protocol.ERROR_NOT_FOUND, "no such file")
                await self._respond(send, 200, self._static[name], STATIC_FILES[name], cache="no-cache")
            elif path.startswith("/ui/api/"):
                await self._api(scope, receive, send, path[len("/ui/api/"):], method)
            else:
                raise _Reply(404, protocol.ERROR_NOT_FOUND, "no such page")
        except RequestError as exc:
            status = {protocol.ERROR_AUTH: 401, protocol.ERROR_NOT_FOUND: 404,
                      protocol.ERROR_FORBIDDEN: 404, protocol.ERROR_BAD_REQUEST: 400}.get(exc.code, 400)
            # another token's task looks exactly like a missing one: ids are not confirmed
            message = "no such task; check the task id" if exc.code == protocol.ERROR_FORBIDDEN else exc.message
            code = protocol.ERROR_NOT_FOUND if exc.code == protocol.ERROR_FORBIDDEN else exc.code
            await self._json(send, status, protocol.error(code, message))
        except _Reply as exc:
            await self._json(send, exc.status, protocol.error(exc.code, exc.message), exc.headers)
        return True

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _Reply(405, protocol.ERROR_BAD_REQUEST, f"use {' or '.join(allowed)}")

    @staticmethod
    async def _respond(send: Callable, status: int, body: bytes, ctype: str, *, cache: str = "no-store",
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
            (b"cache-control", cache.encode()), *SECURITY_HEADERS, *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send: Callable, status: int, body: Any,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self._respond(send, status, json.dumps(body).encode(), "application/json", headers=headers)

    @staticmethod
    def _headers(scope: Scope) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        return out

    def _same_origin(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Whether the request's ``Origin`` is this server's own (see ``origins``)."""
        origin = headers.get("origin")
        return origin is not None and _origin(origin) in self.origins()

    def origins(self) -> frozenset[str]:
        """The origins the dashboard's pages are served from: the ``--public-url``'s, else the
        bind address's, plus ``localhost``/``127.0.0.1``/``[::1]`` when that is a loopback one.

        Never derived from the request's ``Host``: a page on evil.example whose name an attacker
        pointed at this server (DNS rebinding) sends ``Host`` and ``Origin`` that agree.
        """
        if self.cfg.public_url:
            return frozenset({_origin(self.cfg.public_url)})
        host, port = self.cfg.host.strip("[]"), self.cfg.port
        names = {f"[{host}]" if ":" in host else host}
        if host in ("localhost", "::1") or host.startswith("127."):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        return frozenset(_origin(f"http://{name}:{port}") for name in names)

    async def _session(self, headers: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
        cookie = headers.get("cookie", "")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                key = hashlib.sha256(value.encode()).hexdigest()
                sess = await self.sessions.get(key)
                if sess is not None and sess.get("th") in self._token_hashes and self._signed(key, sess):
                    return key, sess
        return None

    def _signed(self, key: str, sess: dict[str, Any]) -> bool:
        """Whether ``sess`` is the session this server made under ``key`` (not one written into
        its store by someone else, nor a real one copied under another key or edited)."""
        return self.signer.check(sess.get("sig"), "session", key, sess.get("th"), sess.get("csrf"), sess.get("exp"))

    async def _body(self, receive: Callable, limit: int = 8192) -> Any:
        data = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reply(400, protocol.ERROR_BAD_REQUEST, "request interrupted")
            data += message.get("body", b"")
            if len(data) > limit:
                raise _Reply(413, protocol.ERROR_BAD_REQUEST, "request body too large")
            if not message.get("more_body"):
                break
        try:
            return json.loads(data or b"{}")
        except ValueError:
            raise _Reply(400, protocol.ERROR_BAD_REQUEST, "send a JSON body") from None

    def _cookie(self, scope: Scope, value: str, max_age: int) -> tuple[bytes, bytes]:
        secure = scope.get("scheme") == "https" or self.cfg.base_url.startswith("https:")
        attrs = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        return b"set-cookie", (attrs + ("; Secure" if secure else "")).encode()

    # -- API -----------------------------------------------------------------------------------
    async def _api(self, scope: Scope, receive: Callable, send: Callable, rest: str, method: str) -> None:
        headers = self._headers(scope)
        # a browser says where a request comes from: nothing cross-site (another site, a sandboxed
        # published page) may use the API with the cookie, whatever SameSite does
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise _Reply(403, protocol.ERROR_FORBIDDEN, "cross-site requests are refused")
        if method == "POST":
            if not self._same_origin(scope, headers):
                raise _Reply(403, protocol.ERROR_FORBIDDEN, "cross-origin request refused (Origin)")
            if not headers.get("content-type", "").startswith("application/json"):
                raise _Reply(415, protocol.ERROR_BAD_REQUEST, "send application/json")
        if rest == "login":
            self._allow(method, "POST")
            return await self._login(scope, receive, send)
        found = await self._session(headers)
        if found is None:
            raise _Reply(401, protocol.ERROR_AUTH, "sign in first",
                         [self._cookie(scope, "", 0)] if COOKIE in headers.get("cookie", "") else None)
        key, sess = found
        if method == "POST" and not secrets.compare_digest(headers.get("x-csrf-token", ""), sess["csrf"]):
            raise _Reply(403, protocol.ERROR_FORBIDDEN, "missing or wrong CSRF token; reload the page")
        th = sess["th"]
        if rest == "session":
            self._allow(method, "GET")
            return await self._json(send, 200, {"ok": True, "who": label(th), "csrf": sess["csrf"],
                                                "redis": self.redis_mode})
        if rest == "logout":
            self._allow(method, "POST")
            await self.sessions.delete(key)
            return await self._json(send, 200, {"ok": True}, [self._cookie(scope, "", 0)])
        if rest == "tasks":
            self._allow(method, "GET")
            return await self._json(send, 200, await self._list(th, parse_qs(scope.get("query_string", b"").decode())))
        if rest.startswith("tasks/"):
            task_id, _, action = rest[len("tasks/"):].partition("/")
            record = await self.service.owned(task_id, th)
            if action == "":
                self._allow(method, "GET")
                return await self._json(send, 200, self._detail(record))
            if action == "events":
                self._allow(method, "GET")
                query = parse_qs(scope.get("query_string", b"").decode())
                after = headers.get("last-event-id") or (query.get("after") or ["0"])[0]
                try:
                    after_seq = max(0, int(after))
                except ValueError:
                    raise _Reply(400, protocol.ERROR_BAD_REQUEST, "after must be a seq") from None
                return await self._events(receive, send, record, after_seq, key)
            if action == "log":
                self._allow(method, "GET")
                return await self._download(send, record)
            if action == "cancel":
                self._allow(method, "POST")
                return await self._json(send, 200, await self.service.cancel(task_id, th))
        raise _Reply(404, protocol.ERROR_NOT_FOUND, "no such API route")

    async def _login(self, scope: Scope, receive: Callable, send: Callable) -> None:
        body = await self._body(receive)
        token = body.get("token") if isinstance(body, dict) else None
        from . import access

        address = access.scope_address(scope)
        th, wait = self.server.check_token(token, address)
        if wait:
            raise _Reply(429, protocol.ERROR_REFUSED, self.server.failures.refusal(address, wait),
                         [(b"retry-after", str(wait).encode())])
        if th is None:
            raise _Reply(401, protocol.ERROR_AUTH, "invalid token")
        value = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        key = hashlib.sha256(value.encode()).hexdigest()
        exp = int(time.time()) + SESSION_TTL
        await self.sessions.put(key, {"th": th, "csrf": csrf, "exp": exp,
                                      "sig": self.signer.sign("session", key, th, csrf, exp)})
        await self._json(send, 200, {"ok": True, "who": label(th), "csrf": csrf},
                         [self._cookie(scope, value, SESSION_TTL)])

    # -- tasks ---------------------------------------------------------------------------------
    def _summary(self, rec: dict[str, Any]) -> dict[str, Any]:
        req = rec.get("request") or {}
        if req.get("source") == "git":
            source = {"kind": "git", "repo": str(req.get("repo") or ""), "ref": str(req.get("ref") or "")}
        else:
            source = {"kind": "upload"}
        return {"taskId": rec.get("taskId"), "name": rec.get("name"), "version": rec.get("version"),
                "channel": "prod" if rec.get("prod") else "preview", "source": source,
                "state": rec.get("state"), "step": rec.get("step"), "who": label(rec.get("tokenHash")),
                "createdAt": rec.get("createdAt"), "startedAt": rec.get("startedAt"),
                "finishedAt": rec.get("finishedAt"),
                "attempt": rec.get("attempt") if self.redis_mode else None, "error": rec.get("error")}

    def _detail(self, rec: dict[str, Any]) -> dict[str, Any]:
        base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{rec['taskId']}/"
        artifacts: list[_Artifact] = [{"name": str(a.get("name")), "size": a.get("size"),
                      "path": f"{protocol.PATH_ARTIFACTS}{rec['taskId']}/{quote(str(a.get('name')))}"}
                     for a in rec.get("artifacts") or [] if isinstance(a, dict)]
        # the site's index page first, then by name
        artifacts.sort(key=lambda a: (not a["name"].endswith("index.html"), a["name"].count("/"), a["name"]))
        return {**self._summary(rec), "lastSeq": rec.get("lastSeq"), "artifacts": artifacts,
                "url": base if artifacts else None, "attach": f"flow publish --attach {rec['taskId']}"}

    async def _records(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        want = []
        for task_id in ids:
            cached = self._final_records.get(task_id)
            if cached is not None:
                out[task_id] = cached
            else:
                want.append(task_id)
        if isinstance(self.store, FileTaskStore):
            def read() -> dict[str, dict[str, Any]]:
                got = {}
                for task_id in want:
                    try:
                        with open(self.store.root / task_id / "task.json", encoding="utf-8") as fh:
                            got[task_id] = json.load(fh)
                    except (OSError, ValueError):
                        pass
                return got
            fresh = await asyncio.to_thread(read) if len(want) > 20 else read()
        elif hasattr(self.store, "redis") and want:
            from .backends.redis.store import _decode, key

            async with self.store.redis.pipeline(transaction=False) as pipe:
                for task_id in want:
                    pipe.hgetall(key(task_id))
                raws = await pipe.execute()
            fresh = {}
            for task_id, raw in zip(want, raws, strict=True):  # one reply per HGETALL
                rec = _decode(raw) if raw else {}
                if rec.get("taskId") == task_id and self.store.verified(rec):  # signed by this deployment
                    fresh[task_id] = rec
        else:
            fresh = {t: r for t in want if (r := await self.store.get(t)) is not None}
        for task_id, rec in fresh.items():
            out[task_id] = rec
            if rec.get("state") in protocol.FINAL:
                self._final_records[task_id] = rec
                while len(self._final_records) > 20_000:
                    self._final_records.popitem(last=False)
        return out

    async def _list(self, th: str, query: dict[str, list[str]]) -> dict[str, Any]:
        project = _first(query, "project") or None
        state = _first(query, "state") or None
        cursor = _first(query, "cursor")
        try:
            limit = min(MAX_PAGE, max(1, int(_first(query, "limit") or PAGE_SIZE)))
        except ValueError:
            limit = PAGE_SIZE
        if self.index is None:
            return {"tasks": [], "next": None, "projects": []}
        tasks: list[dict[str, Any]] = []
        scanned, next_cursor = 0, None
        while len(tasks) < limit:
            batch = await self.index.page(th, project, cursor, limit if state is None else 200)
            if not batch:
                next_cursor = None
                break
            records = await self._records([e[1] for e in batch])
            for e in batch:
                cursor = f"{e[0]}:{e[1]}"
                scanned += 1
                rec = records.get(e[1])
                if rec is None:
                    with contextlib.suppress(Exception):
                        await self.index.forget(th, e[1])
                    continue
                if rec.get("tokenHash") != th:
                    continue  # never trust an index entry for ownership
                if state and not _state_matches(rec.get("state"), state):
                    continue
                tasks.append(self._summary(rec))
                if len(tasks) >= limit:
                    break
            next_cursor = cursor
            if len(tasks) >= limit or scanned >= SCAN_BUDGET:
                break
        if next_cursor is not None and len(tasks) < limit and scanned < SCAN_BUDGET:
            next_cursor = None
        return {"tasks": tasks, "next": next_cursor, "projects": await self.index.projects(th),
                "scanned": scanned}

    # -- the log (dashboard_events) -------------------------------------------------------------
    async def _events(self, receive: Callable, send: Callable, record: dict[str, Any], after: int,
                      session_key: str) -> None:
        await events(self, receive, send, record, after, session_key)

    async def _download(self, send: Callable, record: dict[str, Any]) -> None:
        task_id = record["taskId"]
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
            (b"content-disposition", f'attachment; filename="{task_id}.log"'.encode()), *SECURITY_HEADERS]})
        tail = tail_of(self.store, task_id, 0)
        while True:
            got = tail.read(BATCH_BYTES)
            lines, _seq, final = (await got) if asyncio.iscoroutine(got) else got
            if not lines:
                break
            out = []
            for text in lines:
                msg = json.loads(text)
                data = msg.get("data") or {}
                action, payload = data.get("action"), data.get("payload") or {}
                if action == protocol.ACTION_LOG:
                    out.append(str(payload.get("message", "")) + "\n")
                else:
                    out.append(f"==> {action}: {payload.get('message', '')}\n")
            await send({"type": "http.response.body", "body": "".join(out).encode("utf-8"), "more_body": True})
            if final:
                break
        await send({"type": "http.response.body", "body": b""})


class _Artifact(TypedDict):
    """One artifact of a task's detail: its name, size and path on this server."""

    name: str
    size: Any  # as the task record has it (an int from this server)
    path: str


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` as a browser sends it in ``Origin`` (lower case, no
    default port, no path)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _first(query: dict[str, list[str]], key: str) -> str | None:
    """The first value of ``key`` in a parsed query string, if it has one."""
    values = query.get(key)
    return values[0] if values else None


def _state_matches(state: Any, wanted: str) -> bool:
    if wanted == "running":
        return state in RUNNING_STATES
    return state == wanted


def dashboard_url(base_url: str, task_id: str) -> str:
    return f"{base_url.rstrip('/')}/tasks/{task_id}"
