"""`flow test` in the project's own environment, against doing the same by hand.

One command (`.venv/bin/python benchmarks/bench_flow_test.py`), in a fresh FLOW_HOME with this
repo's Python kit installed offline. Two copies of one project (hatchling, a PEP 735 `test` group
with pytest and pytest-mock, one test using the `mocker` fixture):

1. first run: `flow test` with no `.flow/test-env` (it makes the env: uv venv, the project
   editable, the test group, then pytest) against, by hand in the other copy,
   `uv venv .venv && uv pip install -e . --group test && .venv/bin/python -m pytest`;
2. second run: `flow test` with the env already there against `.venv/bin/python -m pytest`.

Offline: the wheels come from a throw-away wheelhouse named by UV_FIND_LINKS (pytest, its
dependencies and hatchling's, written back as wheels from this repo's dev `.venv`; pytest-mock a
small fake made with tests/wheelfactory.py, and an empty stand-in for editables, which hatchling
asks for but does not use with dev-mode-dirs), and both sides share one warm uv cache. Medians of
--rounds, the two sides alternating; ratios flow / by hand, then `RESULT {...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOW = [sys.executable, "-m", "flowcore"]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "kits" / "flow-kit-python" / "src")]

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "proj"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[dependency-groups]
test = ["pytest", "pytest-mock"]

[tool.hatch.build.targets.wheel]
packages = ["src/proj"]

[tool.hatch.build]
dev-mode-dirs = ["src"]

[tool.flow]
buildkit = "flow-kit-python"
"""
TEST = """\
import proj

def test_mocker(mocker):
    assert mocker.Mock(return_value=1)() == 1 and proj.NAME == "proj"

def test_more():
    assert sum(range(10)) == 45
"""
FAKE_MOCK = "import unittest.mock\nimport pytest\n\n@pytest.fixture\ndef mocker():\n    return unittest.mock\n"


def environ(home: Path, house: Path) -> dict[str, str]:
    # bytecode caches are written, as in a real project (PYTHONDONTWRITEBYTECODE dropped)
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("PIP_", "UV_")) and k != "PYTHONDONTWRITEBYTECODE"}
    e.update(FLOW_HOME=str(home), UV_OFFLINE="1", UV_NO_CONFIG="1", UV_FIND_LINKS=str(house),
             UV_CACHE_DIR=str(home.parent / "uv-cache"), FLOW_NO_UPDATE_CHECK="1")
    return e


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if r.returncode != 0 or "2 passed" not in r.stdout:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
    return took


def project(path: Path) -> Path:
    (path / "src" / "proj").mkdir(parents=True)
    (path / "src" / "proj" / "__init__.py").write_text('NAME = "proj"\n')
    (path / "tests").mkdir()
    (path / "tests" / "test_it.py").write_text(TEST)
    (path / "pyproject.toml").write_text(PYPROJECT)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from flowcore.api import uv_binary

    uv = [uv_binary() or "uv"]  # the uv flow runs, called directly as a user would
    from flow_kit_python.testenv import copy_installed_wheels, visible_site_dirs
    from wheelfactory import build_wheel

    with tempfile.TemporaryDirectory(prefix="bench-flow-test-") as tmp:
        base = Path(tmp)
        home, house = base / "home", base / "wheels"
        house.mkdir()
        copy_installed_wheels(house, visible_site_dirs(), {
            "pytest", "pluggy", "iniconfig", "packaging", "pygments",
            "hatchling", "pathspec", "trove_classifiers", "editables", "tomlkit"})
        # hatchling asks for editables for an editable build; with dev-mode-dirs it never
        # imports it, and the dev .venv does not have it: an empty stand-in
        build_wheel(house, "editables", {"editables/__init__.py": ""}, version="0.5", requires=())
        build_wheel(house, "pytest-mock", {"flow_fake_mock.py": FAKE_MOCK}, version="3.99.0",
                    requires=("pytest>=7",), entry_points={"pytest11": {"mock": "flow_fake_mock"}})
        env = environ(home, house)
        r = subprocess.run([*FLOW, "buildkit", "add", str(REPO / "kits" / "flow-kit-python"),
                            "--no-index"], cwd=base, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        flow_proj, hand_proj = project(base / "flow-proj"), project(base / "hand-proj")
        venv_python = str(hand_proj / ".venv" / "bin" / "python")
        first_flow: list[float] = []
        first_hand: list[float] = []
        again_flow: list[float] = []
        again_hand: list[float] = []
        for i in range(args.rounds + 1):  # round 0 warms the uv cache and the page cache
            shutil.rmtree(flow_proj / ".flow", ignore_errors=True)
            shutil.rmtree(hand_proj / ".venv", ignore_errors=True)
            f = run([*FLOW, "test"], flow_proj, env)
            t0 = time.perf_counter()
            subprocess.run([*uv, "venv", "-q", ".venv"], cwd=hand_proj, env=env, check=True)
            subprocess.run([*uv, "pip", "install", "-q", "--python", venv_python, "-e", ".",
                            "--group", "test"], cwd=hand_proj, env=env, check=True)
            h = time.perf_counter() - t0 + run([venv_python, "-m", "pytest"], hand_proj, env)
            fa = run([*FLOW, "test"], flow_proj, env)
            ha = run([venv_python, "-m", "pytest"], hand_proj, env)
            if i:
                first_flow.append(f)
                first_hand.append(h)
                again_flow.append(fa)
                again_hand.append(ha)
        res = {
            "first_flow_ms": statistics.median(first_flow) * 1000,
            "first_by_hand_ms": statistics.median(first_hand) * 1000,
            "again_flow_ms": statistics.median(again_flow) * 1000,
            "again_by_hand_ms": statistics.median(again_hand) * 1000,
        }
        res["ratio_first"] = res["first_flow_ms"] / res["first_by_hand_ms"]
        res["ratio_again"] = res["again_flow_ms"] / res["again_by_hand_ms"]
        res["again_overhead_ms"] = res["again_flow_ms"] - res["again_by_hand_ms"]
    print(f"first run:  flow test {res['first_flow_ms']:6.0f} ms; uv venv + uv pip install -e . "
          f"--group test + pytest by hand {res['first_by_hand_ms']:6.0f} ms "
          f"({res['ratio_first']:.2f}x, target <= 1.1x)")
    print(f"second run: flow test {res['again_flow_ms']:6.0f} ms; .venv/bin/python -m pytest "
          f"{res['again_by_hand_ms']:6.0f} ms ({res['ratio_again']:.2f}x, target <= 1.2x; "
          f"flow's part {res['again_overhead_ms']:.0f} ms)")
    print("RESULT " + json.dumps({k: round(v, 3) for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
