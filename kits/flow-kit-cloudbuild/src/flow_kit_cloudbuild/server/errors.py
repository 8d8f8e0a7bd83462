"""Error types of the server.

``RequestError`` carries a protocol error code and becomes an ``{"ok": false, ...}`` ack or an
HTTP error reply; ``StepFailed`` ends a task as failed at its current step. Both carry one line
with the cause and the fix.
"""

from __future__ import annotations

from flow_kit_cloudbuild import protocol
from flowcore.api import ConfigError


class ServerConfigError(ConfigError):
    """The server's command line or config file cannot be used."""


class RequestError(Exception):
    """A request is refused; ``code`` is one of protocol.ERROR_CODES.

    ``over_http``: what an HTTP reply says instead (``http.error_response``), when a socket's
    ack may say more than a URL anyone can try (another token's task reads as a missing one).
    """

    def __init__(self, code: str, message: str, *, over_http: RequestError | None = None) -> None:
        self.code = code
        self.message = message
        self.over_http = over_http
        super().__init__(message)

    def ack(self) -> dict:
        return protocol.error(self.code, self.message)


def bad_request(message: str) -> RequestError:
    return RequestError(protocol.ERROR_BAD_REQUEST, message)


def no_such_task(task_id: str) -> RequestError:
    return RequestError(protocol.ERROR_NOT_FOUND, f"no such task {task_id} on this server; check the task id")


def not_your_task(task_id: str) -> RequestError:
    """Another token's task: ``forbidden`` in a socket's ack, a missing task over HTTP (404)."""
    return RequestError(protocol.ERROR_FORBIDDEN, f"task {task_id} was created with another token; use that token",
                        over_http=no_such_task(task_id))


def refused(message: str) -> RequestError:
    return RequestError(protocol.ERROR_REFUSED, message)


class StepFailed(Exception):
    """The running step failed; the task ends as failed with this message."""

    def __init__(self, message: str, final_state: str = protocol.STATE_FAILED) -> None:
        self.message = message
        self.final_state = final_state
        super().__init__(message)
