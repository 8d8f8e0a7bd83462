"""flow-cloudbuild-server: builds projects for `flow publish` and serves the artifacts.

Modules, one job each:
``app`` (ASGI app: Socket.IO handlers and HTTP routes), ``service`` (tasks: submit, emit,
attach, cancel, run), ``pipeline`` (the per-task state machine), ``policy`` (what is allowed),
``process`` (running argv lists in their own process group), ``sources`` (git mirrors, safe
unpacking), ``queue`` / ``store`` / ``artifacts`` (the three interfaces with their embedded
implementations), ``config`` and ``cli``.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from flow_kit_cloudbuild.server.app import create_app

        return create_app
    raise AttributeError(name)
