"""`flow create` through the real CLI, offline, from a fresh FLOW_HOME.

Kits and plugins are installed with the real `flow buildkit add` / `flow plugin add`, from this
repository's directories (--no-index) or from small wheels made for the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from create_support import GIT_ENV, PYTHON_KIT, TEMPLATES_PLUGIN, copier_template, git, listing
from offline import offline_env
from packages_support import kit_wheel, one_line_error, read_config
from wheelfactory import plugin_wheel


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def flow(run_flow, work):
    """run_flow in the work directory, with the Python kit installed."""

    def run(*args: str, **kw):
        kw.setdefault("cwd", work)
        kw["env"] = {**GIT_ENV, **kw.get("env", {})}  # a git identity for the first commit
        return run_flow(*args, **kw)

    r = run("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    return run


def _left_alone(work: Path, before: set[str]) -> None:
    assert listing(work) == before, "something was left behind"


# -- success -------------------------------------------------------------------------------


def test_library_is_created_with_its_kit_recorded(flow, work):
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout.splitlines()
    assert out[:3] == [f"Creating {work / 'demo'}", "  build kit: flow-kit-python",
                       "  template:  library (flow-kit-python) [copier]"]
    assert "  create    pyproject.toml" in out and "  create    src/demo/__init__.py" in out
    assert out[-2] == "Created demo: 6 files; build kit flow-kit-python recorded in pyproject.toml."
    project = tomllib.loads((work / "demo" / "pyproject.toml").read_text())
    assert project["project"]["name"] == "demo"
    assert project["tool"]["flow"]["buildkit"] == "flow-kit-python"
    assert listing(work) >= {"demo/src/demo/__init__.py", "demo/tests/test_demo.py",
                             "demo/README.md", "demo/.copier-answers.yml"}
    assert not [p for p in work.iterdir() if p.name != "demo"], "staging directory left behind"
    # flow inside the new project loads its kit: the kit's commands are there
    help_text = flow("--help", cwd=work / "demo").stdout
    assert "build" in help_text and "[flow-kit-python]" in help_text


def test_data_answers_questions(flow, work):
    r = flow("create", "my-lib", "-k", "flow-kit-python", "-t", "library", "--defaults",
             "--data", "description=Counts things", "-d", "author=Ada")
    assert r.returncode == 0, r.stderr
    project = tomllib.loads((work / "my-lib" / "pyproject.toml").read_text())["project"]
    assert project["description"] == "Counts things"
    assert project["authors"] == [{"name": "Ada"}]
    assert (work / "my-lib" / "src" / "my_lib" / "__init__.py").is_file()


def test_the_only_installed_kit_is_used_without_asking(flow, work):
    r = flow("create", "demo", "-t", "cli", "--defaults")
    assert r.returncode == 0, r.stderr
    assert (work / "demo" / "src" / "demo" / "cli.py").is_file()


def test_directory_option_places_the_project(flow, work):
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults",
             "--directory", "nested/place")
    assert r.returncode == 0, r.stderr
    assert (work / "nested" / "place" / "pyproject.toml").is_file()


def test_kit_and_bound_plugin_both_contribute_templates(flow, work, tmp_path, flow_home):
    wheels = tmp_path / "wheels"
    kit_wheel(wheels, "flow-kit-cloudbuild")  # a stand-in: only its name matters here
    assert flow("buildkit", "add", "flow-kit-cloudbuild", "--no-index",
                "--find-links", str(wheels)).returncode == 0
    r = flow("plugin", "add", str(TEMPLATES_PLUGIN), "--no-index")
    assert r.returncode == 0, r.stderr
    kits = {k["name"]: k["plugins"] for k in read_config(flow_home)["buildKits"]}
    assert kits == {"flow-kit-python": ["flow-plugin-templates"],
                    "flow-kit-cloudbuild": ["flow-plugin-templates"]}
    listed = flow("create", "-k", "flow-kit-python", "--list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "library", "cli", "data-script"]
    assert listed.stdout.splitlines()[2].endswith("[flow-plugin-templates]")
    listed = flow("create", "-k", "flow-kit-cloudbuild", "--list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["static-docs-site"]
    r = flow("create", "site", "-k", "flow-kit-cloudbuild", "-t", "static-docs-site",
             "--defaults")
    assert r.returncode == 0, r.stderr
    flow_toml = tomllib.loads((work / "site" / "flow.toml").read_text())
    assert flow_toml["tool"]["flow"]["buildkit"] == "flow-kit-cloudbuild"


def test_duplicate_template_from_a_plugin_is_dropped_with_a_warning(flow, work, tmp_path):
    body = ("@hookimpl\ndef flow_create_templates(kit):\n"
            "    return [{'name': 'library', 'description': 'mine', 'source': '/nowhere',"
            " 'kit': kit}, {'name': 'extra', 'description': 'x', 'source': '/x', 'kit': kit}]\n")
    plugin_wheel(tmp_path / "wheels", "flow-plugin-dup", body, kits=["flow-kit-python"])
    assert flow("plugin", "add", "flow-plugin-dup", "--no-index", "--find-links",
                str(tmp_path / "wheels")).returncode == 0
    r = flow("create", "-k", "flow-kit-python", "--list")
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["library", "cli", "extra"]
    assert r.stderr.strip() == ("flow: warning: template 'library' from flow-plugin-dup is "
                                "dropped: the name is already taken by flow-kit-python")


def test_local_copier_template_and_kit_recorded_in_flow_toml(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"hello.txt.jinja": "hi {{ project_name }}\n"})
    r = flow("create", "hello", "-k", "flow-kit-python", "-t", str(template), "--defaults")
    assert r.returncode == 0, r.stderr
    assert (work / "hello" / "hello.txt").read_text() == "hi hello\n"
    assert tomllib.loads((work / "hello" / "flow.toml").read_text()) == {
        "tool": {"flow": {"buildkit": "flow-kit-python"}}}


def test_git_url_template(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"README.md.jinja": "# {{ project_name }}\n"})
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "v1")
    git(template, "tag", "v1.0.0")
    url = f"file://{template}"
    r = flow("create", "fromgit", "-k", "flow-kit-python", "-t", url, "--defaults")
    assert r.returncode == 0, r.stderr
    assert (work / "fromgit" / "README.md").read_text() == "# fromgit\n"
    answers = (work / "fromgit" / ".copier-answers.yml").read_text()
    assert f"_src_path: git+{url}" in answers and "_commit: v1.0.0" in answers


def test_git_url_template_at_a_commit(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"README.md.jinja": "one\n"})
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "v1")
    git(template, "tag", "v1.0.0")
    first = git(template, "rev-parse", "HEAD").strip()
    (template / "project" / "README.md.jinja").write_text("between releases\n")
    git(template, "commit", "-qam", "work in progress")
    middle = git(template, "rev-parse", "HEAD").strip()
    (template / "project" / "README.md.jinja").write_text("two\n")
    git(template, "commit", "-qam", "v2")
    git(template, "tag", "v2.0.0")
    url = f"file://{template}"
    r = flow("create", "mid", "-k", "flow-kit-python", "-t", url, "--vcs-ref", middle,
             "--defaults")
    assert r.returncode == 0, r.stderr
    assert (work / "mid" / "README.md").read_text() == "between releases\n"
    assert "_commit: v1.0.0-1-g" in (work / "mid" / ".copier-answers.yml").read_text()
    r = flow("create", "old", "-k", "flow-kit-python", "-t", url, "--vcs-ref", first[:10],
             "--defaults")  # an abbreviated hash
    assert r.returncode == 0, r.stderr
    assert (work / "old" / "README.md").read_text() == "one\n"
    # a commit the repository does not have: one line, nothing left behind
    before = listing(work)
    r = flow("create", "none", "-k", "flow-kit-python", "-t", url, "--vcs-ref", "0" * 40,
             "--defaults")
    assert r.returncode == 1
    assert one_line_error(r.stderr) == (f"flow: error: cannot fetch template {url}: it has no "
                                        f"commit, branch or tag {'0' * 40}. Check --vcs-ref")
    _left_alone(work, before)


def test_copier_include_tag_is_read_like_copier(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {
        "about.txt.jinja": "{{ project_name }} by {{ author }}, {{ flavour }}\n"},
        questions="---\n!include shared/*.yml\n")
    (template / "shared").mkdir()
    (template / "shared" / "questions.yml").write_text(
        "author:\n  type: str\nflavour:\n  type: str\n  default: vanilla\n")
    before = listing(work)
    r = flow("create", "inc", "-k", "flow-kit-python", "-t", str(template), "--defaults")
    assert r.returncode == 2  # the included question without a default is named
    assert one_line_error(r.stderr).startswith(
        "flow: error: the template asks for author and there is no terminal to ask on")
    _left_alone(work, before)
    r = flow("create", "inc", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             "--data", "author=Ada")
    assert r.returncode == 0, r.stderr
    assert (work / "inc" / "about.txt").read_text() == "inc by Ada, vanilla\n"


def test_copier_include_outside_the_template_is_refused(flow, work, tmp_path):
    (tmp_path / "secret.yml").write_text("stolen: 1\n")
    template = copier_template(tmp_path / "tpl", {"a.txt": "a\n"},
                               questions="---\n!include ../secret.yml\n")
    r = flow("create", "inc", "-k", "flow-kit-python", "-t", str(template), "--defaults")
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "copier.yml is not valid YAML" in line and "is outside the template" in line
    assert not (work / "inc").exists()


@pytest.mark.parametrize("trust", [[], ["--trust"]])
def test_a_missing_jinja_extension_names_the_package_and_the_install_command(
        flow, work, tmp_path, trust):
    template = copier_template(tmp_path / "tpl", {"a.txt": "a\n"})
    with (template / "copier.yml").open("a") as fh:  # as copier-uv's copier.yml has it
        fh.write("_jinja_extensions:\n  - copier_templates_extensions.TemplateExtensionLoader\n"
                 "  - extensions.py:ContextUpdater\n")
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults", *trust)
    assert r.returncode == 1
    assert one_line_error(r.stderr) == (
        f"flow: error: template {template} needs the Jinja extension module "
        "copier_templates_extensions (package copier-templates-extensions), which is not "
        f"installed in the environment flow and copier run in ({sys.prefix}). Install it there: "
        f"{sys.executable} -m pip install copier-templates-extensions (for flow installed with "
        "uv tool: uv tool install flowcore --with copier-templates-extensions)")
    _left_alone(work, before)


def test_an_extension_copier_cannot_import_is_named_too(flow, work, tmp_path):
    # the top-level module exists, so only copier's import finds the missing one
    template = copier_template(tmp_path / "tpl", {"a.txt": "a\n"})
    with (template / "copier.yml").open("a") as fh:
        fh.write("_jinja_extensions:\n  - json.no_such_ext.Extension\n")
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             "--trust")
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "needs the Jinja extension module json.no_such_ext (package probably json)" in line
    assert not (work / "demo").exists()


def _cookiecutter_template(root: Path) -> Path:
    (root / "{{cookiecutter.project_slug}}").mkdir(parents=True)
    (root / "cookiecutter.json").write_text(json.dumps({
        "project_name": "Thing", "project_slug": "{{ cookiecutter.project_name.lower() }}",
        "license": ["MIT", "BSD"]}))
    (root / "{{cookiecutter.project_slug}}" / "pyproject.toml").write_text(
        '[project]\nname = "{{ cookiecutter.project_slug }}"\n'
        'license = "{{ cookiecutter.license }}"\n')
    return root


def test_cookiecutter_template(flow, work, tmp_path):
    template = _cookiecutter_template(tmp_path / "cc")
    r = flow("create", "cake", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             "--data", "license=BSD")
    assert r.returncode == 0, r.stderr
    assert "[cookiecutter]" in r.stdout
    data = tomllib.loads((work / "cake" / "pyproject.toml").read_text())
    assert data["project"] == {"name": "cake", "license": "BSD"}
    assert data["tool"]["flow"]["buildkit"] == "flow-kit-python"
    assert [p.name for p in work.iterdir()] == ["cake"]


def test_cookiecutter_missing_is_named_with_the_extra(flow, work, tmp_path):
    template = _cookiecutter_template(tmp_path / "cc")
    shadow = tmp_path / "shadow" / "cookiecutter"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named cookiecutter')\n")
    before = listing(work)
    r = flow("create", "cake", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             env={"PYTHONPATH": str(shadow.parent)})
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "is a cookiecutter template, and cookiecutter is not installed" in line
    assert "pip install 'flowcore[cookiecutter]'" in line
    _left_alone(work, before)


def test_force_writes_into_a_non_empty_directory_naming_each_replaced_file(flow, work):
    target = work / "demo"
    target.mkdir()
    (target / "README.md").write_text("mine\n")
    (target / "notes.txt").write_text("keep me\n")
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults", "--force")
    assert r.returncode == 0, r.stderr
    assert "  overwrite README.md" in r.stdout.splitlines()
    assert "  create    pyproject.toml" in r.stdout.splitlines()
    assert (target / "notes.txt").read_text() == "keep me\n"
    assert (target / "README.md").read_text().startswith("# demo")


def test_an_empty_target_directory_is_used(flow, work):
    (work / "demo").mkdir()
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 0, r.stderr
    assert (work / "demo" / "pyproject.toml").is_file()


# -- bad input: one line, exit code, nothing written ----------------------------------------


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-k", "flow-kit-nope", "-t", "library"], 2,
     "flow: error: unknown build kit 'flow-kit-nope'. Installed kits: flow-kit-python. "
     "Install it with: flow buildkit add PATH-OR-NAME (a directory, a wheel, or a name from "
     "your configured index)"),
    (["-k", "flow-kit-python", "-t", "nope"], 2,
     "flow: error: unknown template 'nope' for build kit flow-kit-python. Available: cli, "
     "library. Pass one of them, a template directory or a git URL with -t"),
    (["-k", "flow-kit-python", "-t", "./no/such/template"], 2,
     "flow: error: template path ./no/such/template does not exist. Check the path, or pass a "
     "template name or a git URL"),
    (["-k", "flow-kit-python"], 2,
     "flow: error: no template given and no terminal to choose from. Pass one with -t NAME "
     "(library, cli)"),
    (["-k", "flow-kit-python", "-t", "library"], 2,
     "flow: error: the template asks for module_name, description, author and there is no "
     "terminal to ask on. Answer with --data module_name=VALUE --data description=VALUE "
     "--data author=VALUE, or pass --defaults"),
    (["-k", "flow-kit-python", "-t", "library", "--data", "oops"], 2,
     "flow: error: --data 'oops' is not KEY=VALUE. Write it as --data key=value"),
], ids=["unknown-kit", "unknown-template", "missing-path", "no-template", "missing-answers",
        "bad-data"])
def test_bad_input(flow, work, args, code, message):
    before = listing(work)
    r = flow("create", "demo", *args)
    assert r.returncode == code, r.stderr
    assert one_line_error(r.stderr) == message
    _left_alone(work, before)


@pytest.mark.parametrize(("name", "why"), [
    ("my project", "not a valid distribution name"),
    ("demo-", "not a valid distribution name"),
    ("1demo", "its module name '1demo' is not a Python identifier"),
    ("class", "its module name 'class' is not a Python identifier"),
])
def test_invalid_project_name(flow, work, name, why):
    before = listing(work)
    r = flow("create", name, "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 2
    assert one_line_error(r.stderr).startswith(f"flow: error: invalid project name '{name}': {why}")
    _left_alone(work, before)


def test_non_empty_target_is_refused(flow, work):
    (work / "demo").mkdir()
    (work / "demo" / "keep.txt").write_text("mine")
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 2
    assert one_line_error(r.stderr) == (
        f"flow: error: target directory {work / 'demo'} is not empty. Choose another name or "
        "--directory, or pass --force to write into it")
    _left_alone(work, before)
    assert (work / "demo" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("broken", [
    {"bad.txt.jinja": "{{ unclosed\n"},
    {"bad.txt.jinja": "{{ no_such_variable.attribute }}\n"},
], ids=["syntax", "undefined"])
def test_template_that_fails_to_render_leaves_nothing(flow, work, tmp_path, broken):
    files = {f"a{i:02}.txt": "fine\n" for i in range(20)} | broken
    template = copier_template(tmp_path / "tpl", files)
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults")
    assert r.returncode == 1
    assert one_line_error(r.stderr).startswith(
        f"flow: error: template {template} failed to render: ")
    _left_alone(work, before)


def test_failed_render_with_force_keeps_the_existing_files(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"README.md": "new\n", "z.txt.jinja": "{{ x.y }}"})
    (work / "demo").mkdir()
    (work / "demo" / "README.md").write_text("mine\n")
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             "--force")
    assert r.returncode == 1
    one_line_error(r.stderr)
    _left_alone(work, before)
    assert (work / "demo" / "README.md").read_text() == "mine\n"


def test_template_that_is_neither_copier_nor_cookiecutter(flow, work, tmp_path):
    (tmp_path / "plain").mkdir()
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(tmp_path / "plain"))
    assert r.returncode == 2
    assert "is neither a copier template (copier.yml) nor a cookiecutter template" in (
        one_line_error(r.stderr))


def test_template_with_tasks_needs_trust(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"a.txt": "a"})
    with (template / "copier.yml").open("a") as fh:
        fh.write("_tasks:\n  - touch task-ran\n")
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults")
    assert r.returncode == 1
    assert one_line_error(r.stderr).endswith("Pass --trust if you trust this template")
    _left_alone(work, before)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", str(template), "--defaults",
             "--trust")
    assert r.returncode == 0, r.stderr
    assert (work / "demo" / "task-ran").exists()


def test_no_kit_installed(run_flow, work):
    r = run_flow("create", "demo", "-t", "library", "--defaults", cwd=work)
    assert r.returncode == 2
    assert one_line_error(r.stderr) == (
        "flow: error: no build kit is installed. Install one first: flow buildkit add "
        "PATH-OR-NAME (a directory, a wheel, or a name from your configured index)")


def test_help_imports_no_renderer(flow_home, work):
    probe = ("import sys, json\nfrom flowcore.cli.main import main\nsys.argv=['flow']+sys.argv[1:]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('MODS=' + json.dumps(sorted(sys.modules)), file=sys.stderr)\n")
    for args in (["--help"], ["create", "--help"], ["update", "--help"]):
        r = subprocess.run([sys.executable, "-c", probe, *args], cwd=work, capture_output=True,
                           text=True, env=offline_env(flow_home, FLOW_NO_LOCAL="1"))
        mods = set(json.loads(r.stderr.rpartition("MODS=")[2]))
        assert "Usage: flow" in r.stdout, r.stderr
        assert not {"copier", "cookiecutter", "questionary", "jinja2", "yaml"} & mods, args


# -- git: --git/--no-git and create.git -------------------------------------------------------

NO_IDENTITY = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.useConfigOnly",
               "GIT_CONFIG_VALUE_0": "true", "GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": "",
               "GIT_COMMITTER_NAME": "", "GIT_COMMITTER_EMAIL": ""}


def _commits(project: Path) -> list[str]:
    return git(project, "log", "--format=%s").splitlines()


def test_a_new_project_is_a_git_repository_with_a_first_commit(flow, work):
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 0, r.stderr
    assert "Initialized a git repository with a first commit (Initial commit)." in r.stdout
    project = work / "demo"
    assert _commits(project) == ["Initial commit"]
    assert git(project, "status", "--porcelain") == ""  # everything is in it
    tracked = git(project, "ls-files").split()
    assert "pyproject.toml" in tracked and ".copier-answers.yml" in tracked
    body = git(project, "log", "-1", "--format=%b")
    assert "flow create from library (flow-kit-python)" in body


def test_no_repository_inside_a_git_work_tree_or_with_no_git(flow, work):
    r = flow("create", "plain", "-k", "flow-kit-python", "-t", "library", "--defaults",
             "--no-git")
    assert r.returncode == 0, r.stderr
    assert not (work / "plain" / ".git").exists() and "git repository" not in r.stdout
    git(work, "init", "-q")  # work is now a repository: a project inside it gets none
    r = flow("create", "inner", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 0, r.stderr
    assert not (work / "inner" / ".git").exists()
    r = flow("create", "nested", "-k", "flow-kit-python", "-t", "library", "--defaults", "--git")
    assert r.returncode == 0, r.stderr
    assert _commits(work / "nested") == ["Initial commit"]


def test_the_config_sets_the_default(flow, work):
    assert flow("config", "set", "create.git", "false").returncode == 0
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 0, r.stderr
    assert not (work / "demo" / ".git").exists()
    r = flow("create", "gitted", "-k", "flow-kit-python", "-t", "library", "--defaults", "--git")
    assert r.returncode == 0, r.stderr
    assert (work / "gitted" / ".git").is_dir()
    assert flow("config", "set", "create.git", "sometimes").returncode == 0
    r = flow("create", "bad", "-k", "flow-kit-python", "-t", "library", "--defaults")
    assert r.returncode == 2
    assert one_line_error(r.stderr).startswith(
        "flow: error: create.git in the global config is 'sometimes', not true, false or \"auto\"")
    assert not (work / "bad").exists()


def test_git_without_an_identity(flow, work):
    before = listing(work)
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults", "--git",
             env=NO_IDENTITY)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "--git makes a first commit, and git does not know who you are" in line
    assert "or pass --no-git" in line
    _left_alone(work, before)
    # by default: the repository, its files added, no commit, and a warning saying what to do
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults",
             env=NO_IDENTITY)
    assert r.returncode == 0, r.stderr
    assert "without a first commit" in r.stderr and "git commit -m 'Initial commit'" in r.stderr
    status = git(work / "demo", "status", "--porcelain")
    assert "A  pyproject.toml" in status.splitlines()


def test_git_into_a_non_empty_directory_is_refused(flow, work):
    (work / "demo").mkdir()
    (work / "demo" / "notes.txt").write_text("mine\n")
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults", "--force",
             "--git")
    assert r.returncode == 2
    assert "--git makes a new repository, and" in one_line_error(r.stderr)
    assert listing(work) == {"demo", "demo/notes.txt"}
    r = flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults", "--force")
    assert r.returncode == 0, r.stderr
    assert not (work / "demo" / ".git").exists()  # auto: only a new or empty target
