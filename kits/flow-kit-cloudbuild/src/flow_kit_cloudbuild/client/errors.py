"""Errors of ``flow publish``; all are FlowErrors, printed once by flow's CLI entry."""

from __future__ import annotations

from flowcore.api import FlowError, UsageError

__all__ = ["ConnectError", "PublishError", "PublishUsageError", "RefusedError", "TaskFailed",
           "Interrupted"]


class PublishError(FlowError):
    """The publish could not be done (work failed: exit code 1)."""


class PublishUsageError(UsageError):
    """The options or the project cannot be published as asked (exit code 2)."""


class ConnectError(PublishError):
    """The build server cannot be reached or refused the connection."""


class RefusedError(PublishError):
    """The server answered an event with ``{"ok": false, "error": {...}}``."""

    def __init__(self, code: str, cause: str, fix: str = "") -> None:
        self.code = code
        super().__init__(cause, fix)


class TaskFailed(PublishError):
    """The task ended failed, cancelled or timed out."""


class Interrupted(FlowError):
    """Ctrl-C: the task keeps running on the server; the user detached."""

    exit_code = 130
