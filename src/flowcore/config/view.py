"""What the lower config modules read of a run's effective configuration.

``environment``, ``package_source`` and ``trust`` answer questions about one run
(``EffectiveConfig``), which itself calls them: they name this protocol instead of
``flowcore.config.effective``, so the config modules import each other in one direction only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowcore.config.global_config import GlobalConfig
    from flowcore.config.project_config import ProjectConfig


class ConfigView(Protocol):
    """The parts of ``EffectiveConfig`` the modules below it read."""

    @property
    def global_config(self) -> GlobalConfig: ...

    @property
    def project(self) -> ProjectConfig | None: ...

    @property
    def scope(self) -> str: ...

    @property
    def trusted(self) -> bool: ...

    @property
    def project_env_usable(self) -> bool: ...
