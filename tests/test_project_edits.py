"""Project-scope plugin edits leave the user's tree as tidy as they found it, through the real
CLI: no lock file next to pyproject.toml, `plugins` next to `buildkit` (not under the comment
of the kit's section), no `plugins = []` after the last delete, `.flow/` git-ignored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from packages_support import kit_wheel, simple_plugin

KIT_COMMENTED = (
    '[project]\nname = "demo"\n\n'
    '[tool.flow]\nbuildkit = "flow-kit-python"\n\n'
    "# flow-kit-python settings (all optional; see `flow config` and the kit's README)\n"
    '[tool.flow.python]\n# test-args = ["-q"]\n')


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    dest = tmp_path / "wheels"
    simple_plugin(dest, "flow-plugin-one")
    simple_plugin(dest, "flow-plugin-two")
    kit_wheel(dest, "flow-kit-python")
    return dest


@pytest.fixture
def flow(run_flow, wheels):
    def run(*args: str, **kw):
        if "add" in args:
            args = (*args, "--no-index", "--find-links", str(wheels))
        return run_flow(*args, **kw)

    return run


def _git_repo(root: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q",
                    "-m", "start"], cwd=root, check=True)


def _status(root: Path) -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def _project(tmp_path: Path, name: str, text: str) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / name).write_text(text)
    _git_repo(root)
    return root


def test_add_and_delete_leave_only_the_plugins_line(flow, tmp_path):
    root = _project(tmp_path, "pyproject.toml", KIT_COMMENTED)
    r = flow("plugin", "add", "flow-plugin-one", "flow-plugin-two", cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / "pyproject.toml").read_text() == KIT_COMMENTED.replace(
        'buildkit = "flow-kit-python"\n',
        'buildkit = "flow-kit-python"\nplugins = ["flow-plugin-one", "flow-plugin-two"]\n')
    # No lock file or environment among the user's files: .flow/ ignores itself.
    assert _status(root) == [" M pyproject.toml"]
    assert not (root / "pyproject.toml.lock").exists()
    assert (root / ".flow" / ".gitignore").is_file()

    assert flow("plugin", "delete", "flow-plugin-one", cwd=root).returncode == 0
    assert 'plugins = ["flow-plugin-two"]\n' in (root / "pyproject.toml").read_text()
    assert flow("plugin", "delete", "flow-plugin-two", cwd=root).returncode == 0
    # The last delete removes the key: the file is back as it was.
    assert (root / "pyproject.toml").read_text() == KIT_COMMENTED
    assert _status(root) == []


def test_flow_toml_without_buildkit_gets_plugins_at_the_top(flow, tmp_path):
    text = ("# flow settings of this site\n[tool.flow]\n\n"
            "# the cloud build settings\n[tool.flow.cloudbuild]\nbuild-cmd = \"npm run build\"\n")
    root = _project(tmp_path, "flow.toml", text)
    assert flow("plugin", "add", "flow-plugin-one", cwd=root).returncode == 0
    assert (root / "flow.toml").read_text() == text.replace(
        "[tool.flow]\n", '[tool.flow]\nplugins = ["flow-plugin-one"]\n')
    assert _status(root) == [" M flow.toml"]
    assert flow("plugin", "delete", "flow-plugin-one", cwd=root).returncode == 0
    assert (root / "flow.toml").read_text() == text


def test_bare_flow_toml_and_buildkit_switch(flow, tmp_path):
    text = '# the kit\nplugins = ["flow-plugin-one"]\n\n# its settings\n[python]\nx = 1\n'
    root = _project(tmp_path, "flow.toml", text)
    assert flow("buildkit", "add", "flow-kit-python").returncode == 0
    r = flow("buildkit", "switch", "flow-kit-python", cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / "flow.toml").read_text() == text.replace(
        'plugins = ["flow-plugin-one"]\n',
        'plugins = ["flow-plugin-one"]\nbuildkit = "flow-kit-python"\n')
    assert _status(root) == [" M flow.toml"]
