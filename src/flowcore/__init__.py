"""flowcore: the core of flow, a plugin-driven project-workflow CLI.

The public surface for plugin authors is small: ``hookimpl`` (mark hook implementations),
``hookspec`` (used by the core's hookspecs module), ``FLOW_API_VERSION`` and ``__version__``.
``hookimpl`` and ``hookspec`` are created on first use, so that importing ``flowcore`` (which the
CLI does on every start) does not import pluggy and, through it, ``importlib.metadata``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Version of the plugin API (hooks, contexts, registry). Plugins declare a specifier against
#: it in ``FLOW_API`` (e.g. ``">=1"``); ``flow plugin add`` refuses plugins that do not match.
FLOW_API_VERSION = "1"

__all__ = ["FLOW_API_VERSION", "__version__", "hookimpl", "hookspec"]


def __getattr__(name: str) -> Any:
    if name in ("hookimpl", "hookspec"):
        from flowcore import _markers

        return getattr(_markers, name)
    raise AttributeError(f"module 'flowcore' has no attribute {name!r}")
