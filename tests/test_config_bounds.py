"""Config files that are not regular files, or too large, are one-line errors and never a hang:
the global config.json and a project's pyproject.toml / flow.toml (issue 10).

Every run has a timeout, so a regression (reading /dev/zero or waiting on a FIFO) fails the
test instead of hanging it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowcore.config import MAX_CONFIG_BYTES

TIMEOUT = 60


def _special(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        raise AssertionError(kind)


def _one_line_error(result, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-500:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flow: error: "), result.stderr[-1000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


KINDS = [("dev-zero", "a character device"), ("fifo", "a FIFO")]


@pytest.mark.parametrize("kind,described", KINDS, ids=[k for k, _ in KINDS])
def test_a_global_config_that_is_not_a_file_is_an_error_not_a_hang(run_flow, flow_home, kind, described):
    path = flow_home / "config.json"
    _special(path, kind)
    for args in (("config",), ("config", "get", "plugins"), ("config", "set", "a", "1")):
        _one_line_error(run_flow(*args, timeout=TIMEOUT), str(path), described, "not a regular file",
                        "move it aside")
    helped = run_flow("--help", timeout=TIMEOUT)  # help still works and names the problem
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.split())  # help wraps its lines
    assert "Configuration problem" in text and "not a regular file" in text, helped.stdout
    assert path.is_symlink() if kind == "dev-zero" else path.is_fifo()


def test_an_oversize_global_config_is_an_error(run_flow, flow_home):
    path = flow_home / "config.json"
    flow_home.mkdir(parents=True)
    filler = "x" * (MAX_CONFIG_BYTES + 10)
    path.write_text(json.dumps({"schemaVersion": 1, "filler": filler}))
    _one_line_error(run_flow("config", timeout=TIMEOUT), str(path), "larger than 4 MiB", "move it aside")
    # just under the bound is read as before
    path.write_text(json.dumps({"schemaVersion": 1, "filler": filler[: MAX_CONFIG_BYTES - 100]}))
    assert path.stat().st_size <= MAX_CONFIG_BYTES
    result = run_flow("config", "get", "schemaVersion", timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr


@pytest.mark.parametrize("name", ["pyproject.toml", "flow.toml"])
@pytest.mark.parametrize("kind,described", KINDS, ids=[k for k, _ in KINDS])
def test_a_project_config_up_the_tree_that_is_not_a_file_is_an_error(run_flow, tmp_path, name, kind,
                                                                      described):
    project = tmp_path / "proj"
    _special(project / name, kind)
    inner = project / "src" / "deep"
    inner.mkdir(parents=True)
    _one_line_error(run_flow("config", cwd=inner, timeout=TIMEOUT), str(project / name), described,
                    "not a regular file")


def test_an_oversize_project_config_is_an_error(run_flow, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.toml").write_text('plugins = []\n# ' + "x" * MAX_CONFIG_BYTES + "\n")
    _one_line_error(run_flow("config", cwd=project, timeout=TIMEOUT), "flow.toml", "larger than 4 MiB")
    (project / "pyproject.toml").write_text('[tool.flow]\nplugins = []\n# ' + "x" * MAX_CONFIG_BYTES + "\n")
    _one_line_error(run_flow("config", cwd=project, timeout=TIMEOUT), "pyproject.toml", "larger than 4 MiB")


def test_a_config_option_naming_a_fifo_is_an_error(run_flow, tmp_path):
    fifo = tmp_path / "flow.toml"
    os.mkfifo(fifo)
    _one_line_error(run_flow("--config", str(fifo), "config", timeout=TIMEOUT), str(fifo), "a FIFO")


def test_a_folder_named_like_a_config_is_still_skipped(run_flow, tmp_path):
    project = tmp_path / "proj"
    (project / "pyproject.toml").mkdir(parents=True)
    (project / "flow.toml").mkdir()
    result = run_flow("config", cwd=project, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
