"""Helpers for the `flow create` / `flow update` / flow-kit-python tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON_KIT = REPO / "kits" / "flow-kit-python"
TEMPLATES_PLUGIN = REPO / "plugins" / "flow-plugin-templates"

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@flow.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@flow.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def listing(directory: Path) -> set[str]:
    """Every path under ``directory`` (hidden ones included): a fingerprint for 'unchanged'."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


def copier_template(root: Path, files: dict[str, str], questions: str = "") -> Path:
    """A copier template at ``root``: ``copier.yml`` (project_name + ``questions``) + files."""
    root.mkdir(parents=True)
    (root / "copier.yml").write_text(
        "_subdirectory: project\n_answers_file: .copier-answers.yml\n"
        "project_name:\n  type: str\n" + questions)
    files = {"{{_copier_conf.answers_file}}.jinja": "{{ _copier_answers|to_nice_yaml -}}\n",
             **files}
    for rel, text in files.items():
        path = root / "project" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def package_copy(src: Path, dest: Path) -> Path:
    """A copy of a kit or plugin directory (sources and templates, no tests or build output), to
    install from a directory and to release new versions of in a test."""
    import shutil

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
        "tests", "__pycache__", "*.pyc", ".venv", "dist", "build", "*.egg-info", ".pytest_cache"))
    return dest


def bump_version(package: Path, version: str) -> None:
    """Set the version in a copied package's pyproject.toml."""
    import re

    pyproject = package / "pyproject.toml"
    text, n = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text())
    assert n == 1
    pyproject.write_text(text)
