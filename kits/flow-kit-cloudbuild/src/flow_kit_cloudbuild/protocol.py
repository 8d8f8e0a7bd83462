"""The wire contract between `flow publish` and `flow-cloudbuild-server`.

Both sides import these names so that an event name, a step or an error code is spelled in one
place only (see /docs/cloud-build.md and the protocol notes). Importing this module is cheap: it
uses the standard library only.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal, TypedDict

# -- transport -------------------------------------------------------------------------------
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7001
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
TRANSPORTS = ["websocket"]
WAIT_TIMEOUT = 5  # seconds, socketio.Client(wait_timeout=...)

# -- events (client -> server, all acknowledged) ----------------------------------------------
EVENT_PUBLISH = "publish"
EVENT_ATTACH = "attach"
EVENT_CANCEL = "cancel"
# -- events (server -> client) ---------------------------------------------------------------
EVENT_MESSAGE = "message"

# -- steps and final states ------------------------------------------------------------------
STEPS = ["queued", "prepare", "download", "install", "build", "publish"]
FINAL = ["done", "failed", "cancelled", "timed-out"]
ACTION_LOG = "log"
STATE_DONE, STATE_FAILED, STATE_CANCELLED, STATE_TIMED_OUT = FINAL

# -- error codes (ack {"ok": false, "error": {"code", "message"}}; a refused connect's
#    connect_error data {"code", "message", "retryAfter"?}; HTTP error bodies) -----------------
ERROR_AUTH = "auth"
ERROR_BAD_REQUEST = "bad-request"
ERROR_NOT_FOUND = "not-found"
ERROR_FORBIDDEN = "forbidden"
ERROR_REFUSED = "refused"
ERROR_EXISTS = "exists"  # prod release of the same name+version exists and force was not set
ERROR_NAME_TAKEN = "name-taken"  # the project name belongs to another token (prod release, promote)
ERROR_INTERNAL = "internal"
ERROR_CODES = [ERROR_AUTH, ERROR_BAD_REQUEST, ERROR_NOT_FOUND, ERROR_FORBIDDEN, ERROR_REFUSED,
               ERROR_EXISTS, ERROR_NAME_TAKEN, ERROR_INTERNAL]

# -- HTTP --------------------------------------------------------------------------------------
PATH_HEALTH = "/healthz"
PATH_UPLOADS = "/api/uploads"
PATH_TASKS = "/api/tasks/"       # + taskId
PATH_ARTIFACTS = "/artifacts/"   # + taskId + "/" [+ filename]
PATH_PROJECTS = "/api/projects/"  # + name + "/releases"
AUTH_HEADER = "authorization"    # value: "Bearer <token>"
TOKENS_ENV = "FLOW_CLOUDBUILD_TOKENS"  # comma separated token list for the server

#: The fields of a task record as clients see it (GET /api/tasks/{id}, the attach ack).
TASK_FIELDS = ("taskId", "name", "version", "state", "step", "createdAt", "finishedAt", "prod",
               "artifacts", "error", "lastSeq", "deploymentUrl", "aliases", "provenanceUrl", "cachedFrom")

# -- defaults and limits -----------------------------------------------------------------------
DEFAULT_TIMEOUT = 300                    # seconds per task
MAX_UPLOAD_BYTES = 50 * 1024 * 1024      # default --max-upload-bytes
MAX_LOG_LINE = 4096                      # bytes per log line before truncation
TRUNCATED_MARKER = " …[truncated]"
MAX_NAME = 214                           # npm's package name limit; also used for versions
MAX_ARGV = 64                            # build command words
MAX_ARG = 1024                           # characters per build command word


class PublishRequest(TypedDict, total=False):
    """Payload of the "publish" event."""

    name: str
    version: str
    source: Literal["git", "upload"]
    repo: str            # source == "git"
    ref: str             # source == "git": branch, tag or commit
    uploadId: str        # source == "upload"
    buildCmd: list[str] | None  # None: the server's default for the detected project
    prod: bool
    force: bool
    timeout: int         # seconds


class Artifact(TypedDict):
    name: str
    url: str
    size: int


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of meta.timestamp."""
    return int(time.time() * 1000)


def make_message(task_id: str, seq: int, action: str, message: str,
                 **extra: Any) -> dict[str, Any]:
    """One server -> client message in the fixed shape.

    ``action`` is a step, a final state or ``"log"``; ``extra`` goes into the payload next to
    ``message`` (for example ``step``/``stream`` for logs, ``artifacts`` for ``done``).
    """
    payload: dict[str, Any] = {"message": message}
    payload.update(extra)
    return {"meta": {"timestamp": now_ms(), "taskId": task_id, "seq": seq},
            "data": {"action": action, "payload": payload}}


def log_lines(msg: dict[str, Any]) -> list[str]:
    """The output lines a ``"log"`` message carries.

    A log message holds one or more lines joined by ``"\n"`` (payload ``lines`` counts them):
    the server sends what one read of the build's pipe returned as one message, so a build
    printing 200,000 lines is not 200,000 Socket.IO messages.
    """
    return str(msg["data"]["payload"].get("message", "")).split("\n")


def ok(**fields: Any) -> dict[str, Any]:
    """A successful ack."""
    return {"ok": True, **fields}


def error(code: str, message: str) -> dict[str, Any]:
    """A failed ack; ``message`` is one line with the cause and the fix."""
    return {"ok": False, "error": {"code": code, "message": message}}


def refusal(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The ``data`` of a refused Socket.IO connect (CONNECT_ERROR).

    The server raises ``ConnectionRefusedError(message, refusal(...))``, which python-socketio
    sends as ``{"message": message, "data": {"code", "message", ...}}``: the JavaScript client
    gets ``err.message`` (the sentence) and ``err.data`` (this object), python-socketio's client
    gets the whole object in its ``connect_error`` handler. ``extra`` holds fields such as
    ``retryAfter`` (seconds) next to ``code`` and ``message``.
    """
    return {"code": code, "message": message, **extra}


def token_hash(token: str) -> str:
    """What a task records about the token that created it (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_final(action: str) -> bool:
    return action in FINAL
