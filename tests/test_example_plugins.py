"""The example plugins' own test suites (plugins/*/tests), run as part of the core's tests.

Each plugin is its own distribution with its own pytest config (``pythonpath = ["src"]``), so
each suite runs in a subprocess from its own directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = sorted(p.parent for p in (REPO / "plugins").glob("*/tests"))


def test_example_plugins_exist() -> None:
    assert {p.name for p in SUITES} >= {"flow-plugin-env", "flow-plugin-pyclean", "flow-plugin-buildinfo"}


@pytest.mark.parametrize("plugin", SUITES, ids=lambda p: p.name)
def test_plugin_suite(plugin: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=plugin, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "FLOW_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout
