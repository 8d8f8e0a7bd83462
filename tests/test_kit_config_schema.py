"""A kit declares its section's keys (``flow_kit_info``'s ``config_schema``); flow warns about any
other key of ``[tool.flow.<kit>]`` or ``kitConfig.<kit>``, naming the file, the key and the
nearest declared key, and runs on. The schema travels in the command manifest, so a run that
finds the manifest cached warns without importing the kit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON_KIT = REPO / "kits" / "flow-kit-python"
CLOUD_KIT = REPO / "kits" / "flow-kit-cloudbuild"


def _warnings(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("flow: warning:"))


def _project(tmp_path: Path, kit: str, section: str) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "0.1"\n\n[tool.flow]\nbuildkit = "{kit}"\n\n{section}')
    return project


@pytest.mark.parametrize("cached", [False, True], ids=["building the manifest", "cached manifest"])
def test_a_typo_in_the_python_kits_section_is_warned_about(run_flow, flow_home, tmp_path, cached):
    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    project = _project(tmp_path, "flow-kit-python",
                       '[tool.flow.python]\ntest-arg = ["-x"]\ndist-dir = "out"\n')
    config = json.loads((flow_home / "config.json").read_text())
    config["kitConfig"] = {"python": {"build-tol": "uv"}}
    (flow_home / "config.json").write_text(json.dumps(config))
    if cached:
        assert run_flow("--help", cwd=project).returncode == 0  # builds and saves the manifest
    r = run_flow("--help", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "build" in r.stdout  # warned, never failed
    assert _warnings(r.stderr) == [
        f"flow: warning: unknown key 'build-tol' in {flow_home / 'config.json'} (kitConfig.python), "
        "ignored. Did you mean 'build-tool'?",
        f"flow: warning: unknown key 'test-arg' in [tool.flow.python] of {project / 'pyproject.toml'}, "
        "ignored. Did you mean 'test-args'?",
    ]


def test_typos_in_the_cloudbuild_kits_section_are_warned_about(run_flow, tmp_path):
    r = run_flow("buildkit", "add", str(CLOUD_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    project = _project(tmp_path, "flow-kit-cloudbuild",
                       '[tool.flow.cloudbuild]\ntimout = 900\nbuild_cmd = "npm run build"\n'
                       'connect-timeout = 10\n')
    r = run_flow("--help", cwd=project)
    assert r.returncode == 0, r.stderr
    where = f"[tool.flow.cloudbuild] of {project / 'pyproject.toml'}"
    assert _warnings(r.stderr) == [
        f"flow: warning: unknown key 'build_cmd' in {where}, ignored. Did you mean 'build-cmd'?",
        f"flow: warning: unknown key 'timout' in {where}, ignored. Did you mean 'timeout'?",
    ]
