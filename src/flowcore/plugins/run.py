"""What the PluginSystem needs of the run it serves.

The run (flowcore.cli.app.Flow) sits in the layer above and makes the PluginSystem; the
PluginSystem sees it only through this shape, so the plugin layer never imports the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowcore.config import EffectiveConfig, RunOptions
    from flowcore.plugins.protocols import Packages


class Run(Protocol):
    """One run of flow: its global options, its validated config, and its package manager
    (made on first use: most runs never install anything)."""

    @property
    def options(self) -> RunOptions: ...

    @property
    def config(self) -> EffectiveConfig: ...

    @property
    def packages(self) -> Packages: ...
