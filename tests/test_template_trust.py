"""Workspace trust for templates (issue 24, part 3): a template runs no code of its own, reads
nothing outside itself and writes nothing outside the new project unless the user passes
``--trust``; every refusal is one line and leaves nothing behind.

Each test is an attack that worked before: through the real CLI, with real cookiecutter and
copier, from a local template directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from create_support import GIT_ENV, copier_template, git, listing
from packages_support import kit_wheel, one_line_error

SECRET = "s3cr3t-flow-trust-5f2a"
PRIVATE_KEY = "-----BEGIN FAKE PRIVATE KEY----- flow-trust-test"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME holding a (fake) private key an attacker wants copied into the project."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    (path / ".ssh" / "id_rsa").write_text(PRIVATE_KEY + "\n")
    return path


@pytest.fixture
def flow(run_flow, work, tmp_path, home):
    """run_flow in the work directory, with a stand-in kit installed and a fake HOME."""

    def run(*args: str, **kw):
        kw.setdefault("cwd", work)
        kw["env"] = {**GIT_ENV, "HOME": str(home), **kw.get("env", {})}
        return run_flow(*args, **kw)

    kit_wheel(tmp_path / "wheels", "flow-kit-fake")
    r = run("buildkit", "add", "flow-kit-fake", "--no-index", "--find-links",
            str(tmp_path / "wheels"))
    assert r.returncode == 0, r.stderr
    return run


def create(flow, template: Path, *extra: str, **kw):
    return flow("create", "cake", "-k", "flow-kit-fake", "-t", str(template), "--defaults",
                *extra, **kw)


def cookiecutter_template(root: Path, files: dict[str, str], **context: object) -> Path:
    """A cookiecutter template: ``cookiecutter.json`` (project_name, project_slug + ``context``)
    and ``files`` under ``{{cookiecutter.project_slug}}``."""
    project = root / "{{cookiecutter.project_slug}}"
    project.mkdir(parents=True)
    (root / "cookiecutter.json").write_text(json.dumps({
        "project_name": "Thing", "project_slug": "{{ cookiecutter.project_name.lower() }}",
        **context}))
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    return root


def refused(r, *words: str) -> str:
    """The one-line error of a refused command, which names each of ``words``."""
    assert r.returncode != 0, r.stdout
    line = one_line_error(r.stderr)
    for word in words:
        assert word in line, line
    return line


def everything_under(root: Path) -> str:
    """The text of every regular file under ``root`` (to look for a leaked secret)."""
    out = []
    for path in root.rglob("*"):
        if path.is_file():
            out.append(path.read_text(errors="replace"))
    return "\n".join(out)


# -- cookiecutter: template code ------------------------------------------------------------


@pytest.mark.parametrize("where", ["content", "file name", "cookiecutter.json"])
def test_cookiecutter_jinja_cannot_run_commands(flow, work, tmp_path, home, where):
    marker = home / "pwned"  # `cd` goes home: a command without a slash, for the file name
    payload = "{{ cycler.__init__.__globals__.os.system('cd; touch pwned') }}"
    if where == "content":
        template = cookiecutter_template(tmp_path / "cc", {"README.md": f"# x {payload}\n"})
    elif where == "file name":
        template = cookiecutter_template(tmp_path / "cc", {f"a{payload}.txt": "x\n"})
    else:
        template = cookiecutter_template(tmp_path / "cc", {"README.md": "{{ cookiecutter.x }}\n"},
                                         x=payload)
    before = listing(work)
    r = create(flow, template)
    assert not marker.exists(), "template code ran without --trust"
    refused(r, "unsafe")
    assert listing(work) == before


@pytest.mark.parametrize("payload", [
    "{{ cycler.__init__.__globals__.os.environ.FLOW_TRUST_SECRET }}",
    "{{ lipsum.__globals__['os'].environ['FLOW_TRUST_SECRET'] }}",
    "{{ joiner.__init__.__globals__.os.getenv('FLOW_TRUST_SECRET') }}",
    "{{ namespace.__init__.__globals__.os.environ.FLOW_TRUST_SECRET }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
])
def test_cookiecutter_jinja_cannot_read_the_environment(flow, work, tmp_path, payload):
    template = cookiecutter_template(tmp_path / "cc", {"README.md": f"# {payload}\n"})
    r = create(flow, template, env={"FLOW_TRUST_SECRET": SECRET})
    assert SECRET not in r.stdout + r.stderr
    assert SECRET not in everything_under(work)
    assert r.returncode != 0 or (work / "cake" / "README.md").is_file()


def test_a_plain_cookiecutter_template_still_renders_its_jinja(flow, work, tmp_path):
    template = cookiecutter_template(tmp_path / "cc", {
        "README.md": "# {{ cookiecutter.project_name|upper }}\n"
                     "{% for x in ['a', 'b'] %}{{ x }}{% endfor %} {{ cookiecutter.kind }}\n",
        "{{cookiecutter.project_slug}}/__init__.py": "NAME = '{{ cookiecutter.project_slug }}'\n",
        "{% if cookiecutter.kind == 'cli' %}cli.py{% endif %}": "print('cli')\n",
        "{% if cookiecutter.kind == 'lib' %}lib.py{% endif %}": "print('lib')\n",
    }, kind=["cli", "lib"], __hidden="{{ cookiecutter.project_slug }}-x")
    r = create(flow, template)
    assert r.returncode == 0, r.stderr
    project = work / "cake"
    assert (project / "README.md").read_text() == "# CAKE\nab cli\n"
    assert (project / "cake" / "__init__.py").read_text() == "NAME = 'cake'\n"
    assert (project / "cli.py").is_file() and not (project / "lib.py").exists()


def _extension_template(root: Path, marker: Path) -> Path:
    template = cookiecutter_template(root, {"README.md": "# {{ cookiecutter.project_name|shout }}\n"},
                                     _extensions=["local_extensions.Shout"])
    (root / "local_extensions.py").write_text(
        "from pathlib import Path\n"
        "from jinja2.ext import Extension\n"
        f"Path({str(marker)!r}).touch()\n"
        "class Shout(Extension):\n"
        "    def __init__(self, environment):\n"
        "        super().__init__(environment)\n"
        "        environment.filters['shout'] = lambda s: s.upper() + '!'\n")
    return template


def test_cookiecutter_extensions_need_trust(flow, work, tmp_path):
    marker = tmp_path / "imported"
    template = _extension_template(tmp_path / "cc", marker)
    before = listing(work)
    r = create(flow, template)
    refused(r, "_extensions", "local_extensions.Shout", "--trust")
    assert not marker.exists(), "the template's module was imported without --trust"
    assert listing(work) == before


def test_cookiecutter_extensions_run_with_trust(flow, work, tmp_path):
    marker = tmp_path / "imported"
    template = _extension_template(tmp_path / "cc", marker)
    r = create(flow, template, "--trust")
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    assert (work / "cake" / "README.md").read_text() == "# CAKE!\n"


def test_cookiecutter_hooks_need_trust(flow, work, tmp_path):
    marker = tmp_path / "hooked"
    template = cookiecutter_template(tmp_path / "cc", {"README.md": "x\n"})
    (template / "hooks").mkdir()
    (template / "hooks" / "post_gen_project.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    before = listing(work)
    refused(create(flow, template), "hooks", "--trust")
    assert not marker.exists() and listing(work) == before
    assert create(flow, template, "--trust").returncode == 0
    assert marker.exists()


# -- files outside the template and outside the project ---------------------------------------


@pytest.mark.parametrize("engine", ["cookiecutter", "copier"])
def test_a_symlink_out_of_the_template_is_refused(flow, work, tmp_path, home, engine):
    if engine == "cookiecutter":
        template = cookiecutter_template(tmp_path / "tpl", {"README.md": "x\n"})
        link = template / "{{cookiecutter.project_slug}}" / "id_rsa"
    else:
        template = copier_template(tmp_path / "tpl", {"README.md": "x\n"})
        link = template / "project" / "id_rsa"
    link.symlink_to(home / ".ssh" / "id_rsa")
    before = listing(work)
    for trust in ([], ["--trust"]):
        r = create(flow, template, *trust)
        refused(r, "symlink", "id_rsa", "outside the template")
        assert listing(work) == before
        assert PRIVATE_KEY not in everything_under(work)


def test_a_symlink_inside_the_template_is_fine(flow, work, tmp_path):
    template = cookiecutter_template(tmp_path / "cc", {"README.md": "# {{ cookiecutter.project_name }}\n"})
    (template / "{{cookiecutter.project_slug}}" / "README.rst").symlink_to("README.md")
    r = create(flow, template)
    assert r.returncode == 0, r.stderr
    assert (work / "cake" / "README.rst").read_text() == "# cake\n"


def _escapes(tmp_path: Path) -> list[Path]:
    """Files the ``..`` templates below would write outside the project."""
    return [p for p in tmp_path.rglob("escaped*") if "tpl" not in p.relative_to(tmp_path).parts]


@pytest.mark.parametrize("how", ["file name", "directory name", "project directory",
                                 "absolute file name"])
def test_a_cookiecutter_path_out_of_the_project_is_refused(flow, work, tmp_path, how):
    files = {"README.md": "x\n"}
    context: dict[str, object] = {}
    if how == "file name":
        files["{{ cookiecutter.up }}escaped.txt"] = "x\n"
        context["up"] = "../" * 3
    elif how == "directory name":
        files["{{ cookiecutter.up }}escaped-dir/f.txt"] = "x\n"
        context["up"] = "../" * 4
    elif how == "absolute file name":
        files["{{ cookiecutter.where }}"] = "x\n"
        context["where"] = str(tmp_path / "escaped-abs.txt")
    template = cookiecutter_template(tmp_path / "tpl", files, **context)
    if how == "project directory":
        data = json.loads((template / "cookiecutter.json").read_text())
        data["project_slug"] = "../../../escaped-project"
        (template / "cookiecutter.json").write_text(json.dumps(data))
    before = listing(work)
    r = create(flow, template)
    assert _escapes(tmp_path) == [], "the template wrote outside the project"
    refused(r, "outside")
    assert listing(work) == before


def test_a_copier_path_out_of_the_project_is_refused(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"{{ up }}escaped.txt": "x\n"},
                               questions=f"up:\n  default: \"{'../' * 3}\"\n")
    before = listing(work)
    r = create(flow, template)
    assert _escapes(tmp_path) == []
    assert r.returncode != 0
    assert listing(work) == before


# -- copier: _preserve_symlinks ---------------------------------------------------------------


def test_copier_preserved_absolute_symlink_is_refused_on_create(flow, work, tmp_path, home):
    template = copier_template(tmp_path / "tpl", {"README.md": "x\n"},
                               questions="_preserve_symlinks: true\n")
    (template / "project" / "id_rsa").symlink_to(home / ".ssh" / "id_rsa")
    (template / "project" / "passwd").symlink_to("/etc/passwd")
    before = listing(work)
    for trust in ([], ["--trust"]):
        r = create(flow, template, *trust)
        refused(r, "symlink", "outside")
        assert listing(work) == before


def test_copier_preserved_symlink_inside_the_project_is_kept(flow, work, tmp_path):
    template = copier_template(tmp_path / "tpl", {"README.md": "x\n"},
                               questions="_preserve_symlinks: true\n")
    (template / "project" / "README.rst").symlink_to("README.md")
    r = create(flow, template)
    assert r.returncode == 0, r.stderr
    assert os.readlink(work / "cake" / "README.rst") == "README.md"


def test_copier_preserved_absolute_symlink_is_refused_on_update(flow, work, tmp_path, home):
    template = copier_template(tmp_path / "tpl", {"README.md": "v1\n"})
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "v1")
    git(template, "tag", "v1")
    r = create(flow, template)
    assert r.returncode == 0, r.stderr
    project = work / "cake"
    assert git(project, "status", "--porcelain") == ""
    with (template / "copier.yml").open("a") as fh:
        fh.write("_preserve_symlinks: true\n")
    (template / "project" / "README.md").write_text("v2\n")
    (template / "project" / "id_rsa").symlink_to(home / ".ssh" / "id_rsa")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "v2")
    git(template, "tag", "v2")
    before = listing(project)
    for trust in ([], ["--trust"]):
        r = flow("update", *trust, cwd=project)
        refused(r, "symlink", "outside")
        assert listing(project) == before
        assert not (project / "id_rsa").is_symlink()
        assert (project / "README.md").read_text() == "v1\n"
        assert git(project, "status", "--porcelain") == ""
