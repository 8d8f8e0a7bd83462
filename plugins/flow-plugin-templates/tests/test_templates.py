"""The plugin's templates: offered for the right kit only, and each renders into a project that
passes its own tests (rendered with copier, as ``flow create`` does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flow_plugin_templates import FLOW_BUILD_KITS, TEMPLATES_DIR, flow_create_templates


def _render(name: str, dest: Path, **data: str) -> Path:
    import copier

    copier.run_copy(str(TEMPLATES_DIR / name), dest, data=data, defaults=True, quiet=True)
    return dest


def test_is_bound_to_both_kits() -> None:
    assert FLOW_BUILD_KITS == ["flow-kit-python", "flow-kit-cloudbuild"]


def test_answers_only_for_the_kit_asked() -> None:
    python = flow_create_templates(kit="flow-kit-python")
    cloud = flow_create_templates(kit="flow-kit-cloudbuild")
    assert [t["name"] for t in python] == ["data-script"]
    assert [t["name"] for t in cloud] == ["static-docs-site"]
    assert {t["kit"] for t in python} == {"flow-kit-python"}
    assert {t["kit"] for t in cloud} == {"flow-kit-cloudbuild"}
    assert flow_create_templates(kit="flow-kit-other") == []
    for t in python + cloud:
        assert (Path(t["source"]) / "copier.yml").is_file()
        assert t["description"]


def test_data_script_passes_its_own_tests(tmp_path: Path) -> None:
    project = _render("data-script", tmp_path / "crunch", project_name="crunch")
    assert 'buildkit = "flow-kit-python"' in (project / "pyproject.toml").read_text()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(project / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (CI installs it)")
def test_static_docs_site_builds_and_passes_its_own_tests(tmp_path: Path) -> None:
    project = _render("static-docs-site", tmp_path / "notes", project_name="notes")
    assert 'buildkit = "flow-kit-cloudbuild"' in (project / "flow.toml").read_text()
    proc = subprocess.run(["node", "build.js"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    index = (project / "dist" / "index.html").read_text()
    assert "<title>notes documentation</title>" in index and "Start with the" in index
    proc = subprocess.run(["node", "test.js"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok: 2 pages"
