"""How the tests run the real `flow`: the repository root, the command, and an offline environment.

Every subprocess runs with the machine's pip/uv configuration switched off, so that an install
that passes here would pass with no network and no index. A plain helper module: test modules
import it; fixtures live in conftest.py and the fixture plugins it registers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOW = [sys.executable, "-m", "flowcore"]

_OFFLINE_DROP = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                 "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "FLOW_LOAD_PLUGINS", "FLOW_STRICT_PLUGINS",
                 "FLOW_DEBUG", "FLOW_NO_LOCAL", "FLOW_INDEX_URL", "FLOW_EXTRA_INDEX_URL",
                 "FLOW_FIND_LINKS")


def offline_env(flow_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_DROP}
    env.update(
        FLOW_HOME=str(flow_home),
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_OFFLINE="1",
        UV_CACHE_DIR=str(flow_home.parent / "uv-cache"),
        CI="true",
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env
