"""`flow update`: a project made from a copier template (a real local git repository tagged v1)
follows the template to v2, keeping the user's own changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from create_support import (
    GIT_ENV,
    PYTHON_KIT,
    TEMPLATES_PLUGIN,
    bump_version,
    copier_template,
    git,
    listing,
    package_copy,
)
from packages_support import kit_wheel, one_line_error


@pytest.fixture
def template(tmp_path: Path) -> Path:
    root = copier_template(tmp_path / "tpl", {
        "README.md.jinja": "# {{ project_name }}\n\nversion one\n",
        "app.txt": "line 1\nline 2\nline 3\n",
    })
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    git(root, "tag", "v1")
    return root


@pytest.fixture
def project(run_flow, template, tmp_path) -> Path:
    wheels = tmp_path / "wheels"
    kit_wheel(wheels, "flow-kit-fake")
    assert run_flow("buildkit", "add", "flow-kit-fake", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    r = run_flow("create", "demo", "-k", "flow-kit-fake", "-t", str(template), "--defaults",
                 cwd=work, env=GIT_ENV)
    assert r.returncode == 0, r.stderr
    root = work / "demo"
    assert "_commit: v1" in (root / ".copier-answers.yml").read_text()
    assert git(root, "status", "--porcelain") == ""  # flow create made the first commit
    return root


def _release_v2(template: Path) -> None:
    (template / "project" / "README.md.jinja").write_text("# {{ project_name }}\n\nversion two\n")
    (template / "project" / "NEW.md").write_text("added in v2\n")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "v2")
    git(template, "tag", "v2")


def test_update_brings_the_project_to_the_new_version_keeping_own_changes(
        run_flow, project, template):
    (project / "app.txt").write_text("line 1\nline 2 changed by me\nline 3\n")
    (project / "mine.py").write_text("print('mine')\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "my work")
    _release_v2(template)
    r = run_flow("update", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"updated demo: template {template} v1 -> v2" in r.stdout
    assert (project / "README.md").read_text() == "# demo\n\nversion two\n"
    assert (project / "NEW.md").read_text() == "added in v2\n"
    assert (project / "app.txt").read_text() == "line 1\nline 2 changed by me\nline 3\n"
    assert (project / "mine.py").exists()
    assert "_commit: v2" in (project / ".copier-answers.yml").read_text()
    # the kit is still recorded
    assert 'buildkit = "flow-kit-fake"' in (project / "flow.toml").read_text()


def test_update_when_already_current(run_flow, project):
    r = run_flow("update", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "demo is already at template version v1"


def test_update_to_a_chosen_version(run_flow, project, template):
    _release_v2(template)
    (template / "project" / "NEW.md").write_text("v3\n")
    git(template, "commit", "-qam", "v3")
    git(template, "tag", "v3")
    r = run_flow("update", "--vcs-ref", "v2", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / "NEW.md").read_text() == "added in v2\n"


def test_dirty_project_is_refused_and_left_alone(run_flow, project, template):
    _release_v2(template)
    (project / "README.md").write_text("uncommitted\n")
    before = listing(project)
    r = run_flow("update", cwd=project)
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert line.startswith("flow: error: cannot update demo: ") and "Commit your changes" in line
    assert listing(project) == before
    assert (project / "README.md").read_text() == "uncommitted\n"


def test_project_not_made_from_copier(run_flow, tmp_path):
    (tmp_path / "plain").mkdir()
    r = run_flow("update", cwd=tmp_path / "plain")
    assert r.returncode == 2
    assert one_line_error(r.stderr).startswith(
        f"flow: error: {tmp_path / 'plain'} was not made from a copier template "
        "(no .copier-answers.yml)")


def test_template_without_versions(run_flow, tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / ".copier-answers.yml").write_text("_src_path: /somewhere\nproject_name: p\n")
    r = run_flow("update", cwd=root)
    assert r.returncode == 2
    assert "records no template version (_commit)" in one_line_error(r.stderr)


# -- templates of kits and plugins: the template store ----------------------------------------

def _created_and_committed(run_flow, work: Path, *args: str) -> Path:
    r = run_flow("create", "demo", *args, "--defaults", cwd=work, env=GIT_ENV)
    assert r.returncode == 0, r.stderr
    root = work / "demo"
    assert git(root, "status", "--porcelain") == ""  # flow create made the first commit
    return root


def test_update_follows_a_new_version_of_the_kits_own_template(run_flow, tmp_path, flow_home):
    kit = package_copy(PYTHON_KIT, tmp_path / "kit")
    assert run_flow("buildkit", "add", str(kit), "--no-index").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    project = _created_and_committed(run_flow, work, "-k", "flow-kit-python", "-t", "library")
    answers = (project / ".copier-answers.yml").read_text()
    assert "_commit: 0.1.0" in answers
    assert f"_src_path: {flow_home / 'templates'}" in answers
    # the user's own work, committed
    init = project / "src" / "demo" / "__init__.py"
    init.write_text(init.read_text() + "\nANSWER = 42\n")
    git(project, "commit", "-qam", "my work")
    # the kit's next version changes its template; installing it is all the user does
    readme = kit / "src" / "flow_kit_python" / "templates" / "library" / "project" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\n## Changelog\n\nNew in the kit's 0.2.0.\n")
    bump_version(kit, "0.2.0")
    r = run_flow("buildkit", "add", str(kit), "--no-index")
    assert r.returncode == 0 and "flow-kit-python 0.2.0" in r.stdout, r.stderr

    r = run_flow("update", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "updated demo: template library (flow-kit-python) 0.1.0 -> 0.2.0" in r.stdout
    assert (project / "README.md").read_text().endswith("## Changelog\n\nNew in the kit's 0.2.0.\n")
    assert init.read_text().endswith("\nANSWER = 42\n")                 # the user's edit is kept
    assert "_commit: 0.2.0" in (project / ".copier-answers.yml").read_text()
    assert 'buildkit = "flow-kit-python"' in (project / "pyproject.toml").read_text()
    # and once there, it is current
    git(project, "add", "-A")
    git(project, "commit", "-qm", "updated")
    r = run_flow("update", cwd=project)
    assert r.returncode == 0 and "already at template version 0.2.0" in r.stdout, r.stderr


def test_update_follows_a_new_version_of_a_plugins_template(run_flow, tmp_path):
    assert run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index").returncode == 0
    plugin = package_copy(TEMPLATES_PLUGIN, tmp_path / "plugin")
    assert run_flow("plugin", "add", str(plugin), "--no-index").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    project = _created_and_committed(run_flow, work, "-k", "flow-kit-python", "-t", "data-script")
    mine = project / "NOTES.md"
    mine.write_text("my notes\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "notes")
    readme = (plugin / "src" / "flow_plugin_templates" / "templates" / "data-script" / "project"
              / "README.md.jinja")
    readme.write_text(readme.read_text() + "\nplugin 0.3.0 says hello\n")
    bump_version(plugin, "0.3.0")
    assert run_flow("plugin", "add", str(plugin), "--no-index").returncode == 0
    r = run_flow("update", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "template data-script (flow-plugin-templates) 0.1.0 -> 0.3.0" in r.stdout
    assert (project / "README.md").read_text().endswith("plugin 0.3.0 says hello\n")
    assert mine.read_text() == "my notes\n"


def test_a_changed_template_without_a_version_bump_gets_its_own_tag(run_flow, tmp_path):
    kit = package_copy(PYTHON_KIT, tmp_path / "kit")
    assert run_flow("buildkit", "add", str(kit), "--no-index").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    project = _created_and_committed(run_flow, work, "-k", "flow-kit-python", "-t", "library")
    readme = kit / "src" / "flow_kit_python" / "templates" / "library" / "project" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\nsame version, new text\n")
    assert run_flow("buildkit", "add", str(kit), "--no-index").returncode == 0
    r = run_flow("update", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "0.1.0 -> 0.1.0+flow1" in r.stdout
    assert (project / "README.md").read_text().endswith("same version, new text\n")
