"""`flow test` runs a project's tests in the project's own environment (issue 22, item 1).

Through the real CLI, offline (UV_OFFLINE=1, an empty uv cache per test), in hand-made projects:
the flow-managed `.flow/test-env` holds the project, its dependencies and its test groups
(PEP 735, Poetry, the `test` extra) and pytest, and nothing of flow's own environment.

Where the wheels come from, offline and without a registry:

- pytest and its dependencies: this repository's dev `.venv` has them installed; the session
  fixture writes those installed distributions back as wheels (the kit's `copy_installed_wheels`,
  the same copy `flow test` makes offline as a last resort) into a wheelhouse that the runs name
  with `UV_FIND_LINKS`, the way a user points uv at local wheels;
- `pytest-mock`: a small fake made with `wheelfactory` (a pytest plugin whose `mocker` fixture
  is a `unittest.mock` factory), so that "fixture 'mocker' not found" is what a missing test
  group looks like, as with python-poetry/cleo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from create_support import PYTHON_KIT
from wheelfactory import build_wheel

HEADER = """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "proj"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["src/proj"]

[tool.hatch.build]
dev-mode-dirs = ["src"]

[tool.flow]
buildkit = "flow-kit-python"
"""

MOCKER_TEST = """\
import proj

def test_mocker(mocker):
    greet = mocker.Mock(return_value="hi")
    assert greet() == "hi" and proj.NAME == "proj"
"""

FAKE_MOCK = """\
import unittest.mock
import pytest

@pytest.fixture
def mocker():
    return unittest.mock
"""


@pytest.fixture(scope="session")
def test_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(PYTHON_KIT / "src"))
    try:
        from flow_kit_python.testenv import copy_installed_wheels, visible_site_dirs
    finally:
        sys.path.remove(str(PYTHON_KIT / "src"))
    house = tmp_path_factory.mktemp("test-wheels")
    copy_installed_wheels(house, visible_site_dirs(),
                          {"pytest", "pluggy", "iniconfig", "packaging", "pygments"})
    build_wheel(house, "pytest-mock", {"flow_fake_mock.py": FAKE_MOCK}, version="3.99.0",
                requires=("pytest>=7",), entry_points={"pytest11": {"mock": "flow_fake_mock"}})
    return house


@pytest.fixture
def flow(run_flow, test_wheels: Path):
    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr

    def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return run_flow(*args, cwd=cwd, env={"UV_FIND_LINKS": str(test_wheels), **env})

    return run


def _project(tmp_path: Path, tables: str, tests: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    (root / "src" / "proj").mkdir(parents=True)
    (root / "src" / "proj" / "__init__.py").write_text('NAME = "proj"\n')
    (root / "pyproject.toml").write_text(HEADER + tables)
    (root / "tests").mkdir()
    for name, text in tests.items():
        (root / "tests" / name).write_text(text)
    return root


def test_pep735_test_group_is_installed(flow, tmp_path):
    root = _project(tmp_path, '\n[dependency-groups]\ntest = ["pytest>=8", "pytest-mock>=3.10"]\n',
                    {"test_it.py": MOCKER_TEST})
    r = flow("test", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    assert "plugins: mock-3.99.0" in r.stdout  # the test group's plugin, and nothing of flow's


def test_poetry_test_group_is_installed(flow, tmp_path):
    root = _project(tmp_path, '\n[tool.poetry.group.test.dependencies]\npytest = "*"\n'
                              'pytest-mock = "^3.10"\n', {"test_it.py": MOCKER_TEST})
    r = flow("test", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_flows_own_packages_are_not_importable(flow, tmp_path):
    """copier is what flow renders templates with; the project does not depend on it. Nor does a
    PYTHONPATH of flow's process reach the tests."""
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "leaky.py").write_text("")
    root = _project(tmp_path, "", {"test_it.py": "import copier\n\ndef test_copier():\n    pass\n",
                                   "test_path.py": "import importlib.util\n\ndef test_no_leak():\n"
                                   "    assert importlib.util.find_spec('leaky') is None\n"})
    r = flow("test", cwd=root, PYTHONPATH=str(leak))
    assert r.returncode != 0, r.stdout
    assert "ModuleNotFoundError: No module named 'copier'" in r.stdout
    assert "hypothesis" not in r.stdout and "anyio" not in r.stdout  # flow's pytest plugins
    r = flow("test", "tests/test_path.py", cwd=root, PYTHONPATH=str(leak))
    assert r.returncode == 0, r.stdout + r.stderr


def test_env_is_reused_and_rebuilt_when_its_inputs_change(flow, tmp_path):
    root = _project(tmp_path, '\n[dependency-groups]\ntest = ["pytest"]\n',
                    {"test_it.py": "def test_ok():\n    pass\n"})
    r = flow("test", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preparing the test environment .flow/test-env" in r.stderr
    r = flow("test", cwd=root)
    assert r.returncode == 0 and "preparing" not in r.stderr, r.stderr
    os.utime(root / "pyproject.toml")  # touched, the same text: no rebuild
    r = flow("test", cwd=root)
    assert r.returncode == 0 and "preparing" not in r.stderr, r.stderr
    (root / "tests" / "test_it.py").write_text(MOCKER_TEST)  # a test change: no rebuild
    r = flow("test", cwd=root)
    assert "preparing" not in r.stderr and "fixture 'mocker' not found" in r.stdout
    with (root / "pyproject.toml").open("a") as fh:
        fh.write('dev = ["pytest-mock"]\n')  # the dev group, installed too (test-groups default)
    r = flow("test", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preparing the test environment" in r.stderr and "1 passed" in r.stdout
    (root / "uv.lock").write_text("version = 1\n")  # a lock file is an input too
    r = flow("test", cwd=root)
    assert r.returncode == 0 and "preparing the test environment" in r.stderr, r.stderr
    with (root / "pyproject.toml").open("a") as fh:
        fh.write('\n[tool.flow.python]\ntest-groups = ["test"]\n')  # without dev: no mocker
    r = flow("test", cwd=root)
    assert "preparing the test environment" in r.stderr
    assert r.returncode == 1 and "fixture 'mocker' not found" in r.stdout


def test_projects_own_venv_is_used_as_it_is(flow, tmp_path, test_wheels):
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "leaky.py").write_text("")
    root = _project(tmp_path, "", {"test_it.py": (
        "import importlib.util, sys\n\ndef test_env():\n"
        "    assert sys.prefix.endswith('.venv')\n"
        "    assert importlib.util.find_spec('leaky') is None\n")})
    uv = [sys.executable, "-m", "uv"]
    env = {**os.environ, "UV_OFFLINE": "1", "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(tmp_path / "c")}
    subprocess.run([*uv, "venv", "-q", str(root / ".venv")], check=True, env=env)
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(root / ".venv" / "bin" / "python"),
                    "--find-links", str(test_wheels), "pytest"], check=True, env=env)
    r = flow("test", cwd=root, PYTHONPATH=str(leak))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and not (root / ".flow").exists()
