"""The cloud-build tests share the repository's test helpers in tests/ (flow's runner, the
offline environment, the wheel factory) and import the kit from its source tree: both go on
``sys.path`` here, so this folder runs alone (``pytest kits/flow-kit-cloudbuild/tests``) as
well as from the root test command."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
KIT_SRC = REPO / "kits" / "flow-kit-cloudbuild" / "src"
for path in (REPO / "tests", KIT_SRC):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
