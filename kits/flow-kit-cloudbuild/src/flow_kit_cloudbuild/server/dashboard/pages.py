"""The build dashboard: web pages under ``/`` on the server's own port (gateways and embedded).

Routes (``Dashboard.routes``, on the server's one Starlette app, see http.py):

``GET /``, ``GET /tasks/<id>``        the single-page app (``dashboard/static/index.html``)
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
``POST /ui/api/tasks/<id>/retry``      the same source as a new task (CSRF header; owner only)
``POST /ui/api/tasks/<id>/promote``    point the project's prod at this build (CSRF header)

Security: the token is only ever sent in a POST body and never stored (sessions keep its hash);
every state-changing request needs the session's CSRF token in ``X-CSRF-Token`` and an
``Origin`` equal to the server's own URL (``--public-url``, else the bind address; never the
request's ``Host``, which a DNS-rebinding page controls); API requests a browser marks as
cross-site (``Sec-Fetch-Site``) are refused; pages carry a strict Content-Security-Policy (no
inline script, ``script-src 'self'``) and the script renders all data with ``textContent``.
Sessions live in memory (embedded) or in Redis (every gateway of a deployment accepts them),
keyed by a hash of the cookie value and signed with the server secret (``signing.Signer``): a
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.dashboard.events import BATCH_BYTES, events, tail_of
from flow_kit_cloudbuild.server.http import access
from flow_kit_cloudbuild.server.http.headers import SECURITY_HEADERS
from flow_kit_cloudbuild.server.http.responses import (
    ANY_METHOD,
    Headers,
    HTTPError,
    RawResponse,
    allow,
    chunks,
    json_response,
    route,
    with_headers,
)
from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.signing import Signer
from flow_kit_cloudbuild.server.storage.releases import project_label
from flow_kit_cloudbuild.server.tasks.store import CREATED, FileTaskStore

log = logging.getLogger("flow_kit_cloudbuild.server")

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
COOKIE = "flowcb_session"
SESSION_TTL = 12 * 3600          # seconds a sign-in lasts
MAX_MEMORY_SESSIONS = 10_000
PAGE_SIZE, MAX_PAGE = 50, 200
SCAN_BUDGET = 2000               # records one list request may look at for a state filter
LOGIN_BODY_BYTES = 8192          # a sign-in's JSON body at most
RUNNING_STATES = tuple(s for s in protocol.STEPS if s != "queued")
def label(token_hash: str | None, names: dict[str, str] | None = None) -> str:
    """How the dashboard names a token: never the token; its name (``name:token`` in the tokens
    file, ``--token-label``), else a short prefix of its hash."""
    name = (names or {}).get(str(token_hash or ""))
    return name if name else f"token {str(token_hash or '')[:8] or '?'}"


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
            from flow_kit_cloudbuild.server.dashboard.index import FileIndex

            self.index: Any = FileIndex(self.cfg.data_dir, self.store.root)
            self.index.build_if_needed()
        elif redis is not None:
            from flow_kit_cloudbuild.server.dashboard.index import RedisIndex

            self.index = RedisIndex(redis)
        else:
            self.index = None
        if self.index is not None:
            self.store.listeners.append(self._task_written)

    async def _task_written(self, event: str, record: dict[str, Any]) -> None:
        """The store's change event: a new task goes into the index (``startedAt`` is the
        service's, written when the build enters its first step)."""
        if event == CREATED:
            await self.index.add(record)

    def _who(self, token_hash: str | None) -> str:
        """Who published: the token's name if the server was given one, else its hash prefix."""
        return label(token_hash, self.cfg.token_names)

    # -- routes ----------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        """The dashboard's routes on the server's app (none on a build worker: it serves no clients).

        The ``/ui/api/`` routes take every method and check it after ``_guard``, so a request
        without a session, or a cross-site one, is refused the same way whatever its method.
        """
        if not self.serves:
            return []
        return [
            route("/", self._page), route("/tasks/", self._page), route("/tasks/{task_id}", self._page),
            route("/ui/static/{name:path}", self._static_file),
            route("/ui/api/login", self._login, ANY_METHOD),
            route("/ui/api/session", self._session_info, ANY_METHOD),
            route("/ui/api/logout", self._logout, ANY_METHOD),
            route("/ui/api/tasks", self._tasks, ANY_METHOD),
            route("/ui/api/tasks/{task_id}", self._task, ANY_METHOD),
            route("/ui/api/tasks/{task_id}/{action:path}", self._task, ANY_METHOD),
            route("/ui/api/{rest:path}", self._no_api_route, ANY_METHOD),
            route("/ui/{rest:path}", self._no_page, ANY_METHOD),
        ]

    @staticmethod
    def _file(body: bytes, ctype: str, *, cache: str = "no-store", headers: Headers = ()) -> Response:
        """A page or static file: the security headers (CSP) and the cache rule with it."""
        response = Response(body, 200, media_type=ctype)
        return with_headers(response, [(b"cache-control", cache.encode()), *SECURITY_HEADERS, *headers])

    @staticmethod
    def _json(body: Any, headers: Headers = ()) -> Response:
        return json_response(body, 200, [(b"cache-control", b"no-store"), *SECURITY_HEADERS, *headers])

    async def _page(self, request: Request) -> Response:
        return self._file(self._index_html, "text/html; charset=utf-8", cache="no-cache")

    async def _static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._static:
            raise HTTPError(404, protocol.ERROR_NOT_FOUND, "no such file")
        return self._file(self._static[name], STATIC_FILES[name], cache="no-cache")

    async def _no_page(self, request: Request) -> Response:
        raise HTTPError(404, protocol.ERROR_NOT_FOUND, "no such page")

    # -- who asks --------------------------------------------------------------------------------
    def _check_origin(self, request: Request) -> None:
        """What every ``/ui/api/`` request passes first, the sign-in too."""
        headers = request.headers
        # a browser says where a request comes from: nothing cross-site (another site, a sandboxed
        # published page) may use the API with the cookie, whatever SameSite does
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise HTTPError(403, protocol.ERROR_FORBIDDEN, "cross-site requests are refused")
        if request.method == "POST":
            if not self._same_origin(headers.get("origin")):
                raise HTTPError(403, protocol.ERROR_FORBIDDEN, "cross-origin request refused (Origin)")
            if not headers.get("content-type", "").startswith("application/json"):
                raise HTTPError(415, protocol.ERROR_BAD_REQUEST, "send application/json")

    async def _guard(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The signed-in session of a ``/ui/api/`` request: (its key, its record), else 401/403."""
        self._check_origin(request)
        cookie = request.headers.get("cookie", "")
        found = await self._session(cookie)
        if found is None:  # a stale cookie is cleared
            raise HTTPError(401, protocol.ERROR_AUTH, "sign in first",
                            headers=[self._cookie(request, "", 0)] if COOKIE in cookie else ())
        key, sess = found
        csrf = request.headers.get("x-csrf-token", "")
        if request.method == "POST" and not secrets.compare_digest(csrf, sess["csrf"]):
            raise HTTPError(403, protocol.ERROR_FORBIDDEN, "missing or wrong CSRF token; reload the page")
        return key, sess

    def _same_origin(self, origin: str | None) -> bool:
        """Whether the request's ``Origin`` is this server's own (see ``origins``)."""
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

    async def _session(self, cookie: str) -> tuple[str, dict[str, Any]] | None:
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

    def _cookie(self, request: Request, value: str, max_age: int) -> tuple[bytes, bytes]:
        secure = request.scope.get("scheme") == "https" or self.cfg.base_url.startswith("https:")
        attrs = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        return b"set-cookie", (attrs + ("; Secure" if secure else "")).encode()

    # -- API -----------------------------------------------------------------------------------
    async def _login(self, request: Request) -> Response:
        self._check_origin(request)
        allow(request, "POST")
        raw = b"".join([block async for block in chunks(request, LOGIN_BODY_BYTES, "request body too large")])
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "send a JSON body") from None
        token = body.get("token") if isinstance(body, dict) else None
        address = access.scope_address(request.scope)
        th, wait = self.server.check_token(token, address)
        if wait:
            raise HTTPError(429, protocol.ERROR_REFUSED, self.server.failures.refusal(address, wait),
                            headers=[(b"retry-after", str(wait).encode())])
        if th is None:
            raise HTTPError(401, protocol.ERROR_AUTH, "invalid token")
        value = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        key = hashlib.sha256(value.encode()).hexdigest()
        exp = int(time.time()) + SESSION_TTL
        await self.sessions.put(key, {"th": th, "csrf": csrf, "exp": exp,
                                      "sig": self.signer.sign("session", key, th, csrf, exp)})
        return self._json({"ok": True, "who": self._who(th), "csrf": csrf}, [self._cookie(request, value, SESSION_TTL)])

    async def _session_info(self, request: Request) -> Response:
        _key, sess = await self._guard(request)
        allow(request, "GET")
        return self._json({"ok": True, "who": self._who(sess["th"]), "csrf": sess["csrf"], "redis": self.redis_mode})

    async def _logout(self, request: Request) -> Response:
        key, _sess = await self._guard(request)
        allow(request, "POST")
        await self.sessions.delete(key)
        return self._json({"ok": True}, [self._cookie(request, "", 0)])

    async def _tasks(self, request: Request) -> Response:
        _key, sess = await self._guard(request)
        allow(request, "GET")
        return self._json(await self._list(sess["th"], parse_qs(request.url.query)))

    async def _task(self, request: Request) -> Response:
        key, sess = await self._guard(request)
        th, task_id = sess["th"], request.path_params["task_id"]
        record = await self.service.owned(task_id, th)
        action = request.path_params.get("action", "")
        if action == "":
            allow(request, "GET")
            return self._json(self._detail(record, await self._prod_tasks([record.get("name")])))
        if action == "events":
            allow(request, "GET")
            after = request.headers.get("last-event-id") or (parse_qs(request.url.query).get("after") or ["0"])[0]
            try:
                after_seq = max(0, int(after))
            except ValueError:
                raise HTTPError(400, protocol.ERROR_BAD_REQUEST, "after must be a seq") from None
            return RawResponse(lambda receive, send: self._events(receive, send, record, after_seq, key))
        if action == "log":
            allow(request, "GET")
            return self._download(record)
        if action == "cancel":
            allow(request, "POST")
            return self._json(await self.service.cancel(task_id, th))
        if action == "retry":  # the same source as a new task (service.retry: owner only)
            allow(request, "POST")
            return self._json({"ok": True, "taskId": await self.service.retry(th, task_id)})
        if action == "promote":  # prod points at this build (rollback to an earlier one)
            allow(request, "POST")
            promote = getattr(self.service, "promote", None)
            if promote is None:
                raise HTTPError(501, protocol.ERROR_REFUSED, "this server cannot promote builds yet; "
                                "publish the build again with --prod")
            answer = await promote(th, task_id)
            return self._json(answer if isinstance(answer, dict) else {"ok": True})
        raise HTTPError(404, protocol.ERROR_NOT_FOUND, "no such API route")

    async def _no_api_route(self, request: Request) -> Response:
        await self._guard(request)
        raise HTTPError(404, protocol.ERROR_NOT_FOUND, "no such API route")

    # -- tasks ---------------------------------------------------------------------------------
    async def _prod_tasks(self, names: list[Any]) -> set[str]:
        """The builds prod serves now for these projects (``Releases.get(...)["prod"]``), so the
        list and the task page can mark them: the record's own ``prod`` only says it was published
        with --prod, and a promote (or a later release) moves the alias without touching it.

        One read per distinct project, not per row; a project the index cannot read right now is
        left unmarked (the list still loads) and logged.
        """
        releases = getattr(self.service, "releases", None)
        if releases is None:
            return set()
        labels = sorted({project_label(n) for n in names if isinstance(n, str) and n})

        async def prod_of(label: str) -> str | None:
            try:
                project = await releases.get(label)
            except Exception:
                log.warning("the release index could not be read for %s; its prod build is not marked", label,
                            exc_info=True)
                return None
            prod = (project or {}).get("prod")
            return prod if isinstance(prod, str) else None

        return {p for p in await asyncio.gather(*(prod_of(label) for label in labels)) if p}

    def _summary(self, rec: dict[str, Any], prod_now: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        req = rec.get("request") or {}
        if req.get("source") == "git":
            source = {"kind": "git", "repo": str(req.get("repo") or ""), "ref": str(req.get("ref") or "")}
        else:
            source = {"kind": "upload"}
        return {"taskId": rec.get("taskId"), "name": rec.get("name"), "version": rec.get("version"),
                "channel": "prod" if rec.get("prod") else "preview", "source": source,
                "state": rec.get("state"), "step": rec.get("step"), "who": self._who(rec.get("tokenHash")),
                "createdAt": rec.get("createdAt"), "startedAt": rec.get("startedAt"),
                "finishedAt": rec.get("finishedAt"),
                "attempt": rec.get("attempt") if self.redis_mode else None, "error": rec.get("error"),
                "number": rec.get("number"), "retryOf": rec.get("retryOf"),
                # prod serves this build now (the release index), whatever channel it was built for
                "prodNow": rec.get("taskId") in prod_now,
                # where a failed (cancelled, timed-out) build stopped; the record's step then
                "failedStep": rec.get("step") if rec.get("state") in protocol.FINAL
                and rec.get("state") != protocol.STATE_DONE else None}

    def _detail(self, rec: dict[str, Any], prod_now: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{rec['taskId']}/"
        artifacts: list[_Artifact] = [{"name": str(a.get("name")), "size": a.get("size"),
                      "path": f"{protocol.PATH_ARTIFACTS}{rec['taskId']}/{quote(str(a.get('name')))}"}
                     for a in rec.get("artifacts") or [] if isinstance(a, dict)]
        # the site's index page first, then by name
        artifacts.sort(key=lambda a: (not a["name"].endswith("index.html"), a["name"].count("/"), a["name"]))
        # the deployment at its own origin (a build from before deployments has none: its file list)
        deployment = rec.get("deploymentUrl") if isinstance(rec.get("deploymentUrl"), str) else None
        aliases = [{"kind": str(a.get("kind")), "url": str(a.get("url"))} for a in rec.get("aliases") or []
                   if isinstance(a, dict) and isinstance(a.get("url"), str)][:10]
        provenance = rec.get("provenanceUrl") if isinstance(rec.get("provenanceUrl"), str) else None
        origin: dict[str, Any] = rec["cachedFrom"] if isinstance(rec.get("cachedFrom"), dict) else {}
        cached = ({"taskId": origin["taskId"], "number": origin.get("number")}
                  if is_id(origin.get("taskId")) and isinstance(origin.get("number"), (int, type(None))) else None)
        return {**self._summary(rec, prod_now), "lastSeq": rec.get("lastSeq"), "artifacts": artifacts,
                "url": base if artifacts else None, "deploymentUrl": deployment if artifacts else None,
                "aliases": aliases if artifacts else [], "attach": f"flow publish --attach {rec['taskId']}",
                "provenanceUrl": provenance if artifacts else None, "cachedFrom": cached}

    async def _records(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        want = []
        for task_id in ids:
            cached = self._final_records.get(task_id)
            if cached is not None:
                out[task_id] = cached
            else:
                want.append(task_id)
        fresh = await self.store.get_many(want)
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
        names: list[Any] = []
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
                names.append(rec.get("name"))
                if len(tasks) >= limit:
                    break
            next_cursor = cursor
            if len(tasks) >= limit or scanned >= SCAN_BUDGET:
                break
        if next_cursor is not None and len(tasks) < limit and scanned < SCAN_BUDGET:
            next_cursor = None
        prod_now = await self._prod_tasks(names)  # one read per listed project
        for summary in tasks:
            summary["prodNow"] = summary["taskId"] in prod_now
        return {"tasks": tasks, "next": next_cursor, "projects": await self.index.projects(th),
                "scanned": scanned}

    # -- the log (dashboard_events) -------------------------------------------------------------
    async def _events(self, receive: Callable, send: Callable, record: dict[str, Any], after: int,
                      session_key: str) -> None:
        await events(self, receive, send, record, after, session_key)

    def _download(self, record: dict[str, Any]) -> Response:
        """The whole log as a text file, streamed a batch of messages at a time."""
        task_id = record["taskId"]

        async def text() -> AsyncIterator[bytes]:
            tail = tail_of(self.store, task_id, 0)
            while True:
                got = tail.read(BATCH_BYTES)
                lines, _seq, final = (await got) if asyncio.iscoroutine(got) else got
                if not lines:
                    return
                out = []
                for line in lines:
                    msg = json.loads(line)
                    data = msg.get("data") or {}
                    action, payload = data.get("action"), data.get("payload") or {}
                    if action == protocol.ACTION_LOG:
                        out.append(str(payload.get("message", "")) + "\n")
                    else:
                        out.append(f"==> {action}: {payload.get('message', '')}\n")
                yield "".join(out).encode("utf-8")
                if final:
                    return

        response = StreamingResponse(text(), media_type="text/plain; charset=utf-8")
        return with_headers(response, [(b"cache-control", b"no-store"), *SECURITY_HEADERS,
                                       (b"content-disposition", f'attachment; filename="{task_id}.log"'.encode())])


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

