"""The cloud-build kit's own hooks (flow_kit_cloudbuild.hookspecs) at work in ``flow publish``:
publish checks, the files to upload, a refused upload, artifact targets, the published deployment;
and flow-plugin-secretguard refusing a ``.env``.

flow runs through ``flowcore.testing`` (a temporary FLOW_HOME, kits and plugins installed from
their source folders with the real ``flow buildkit add`` / ``flow plugin add``), against the real
``flow-cloudbuild-server`` of that environment on loopback (``BuildServer``, the repository's
test helper). Plugins are written as source folders, as an author would.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path)
from cloudbuild_publish_support import BuildServer, is_deployment_url, make_site, needs_node, open_deployment

from flowcore.testing import FlowRunner, Result

pytestmark = needs_node

KIT_DIR = Path(__file__).resolve().parent.parent
SECRETGUARD = KIT_DIR.parent.parent / "plugins" / "flow-plugin-secretguard"
BUILD = ("--source", "upload", "--build-cmd", "npm run build")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> FlowRunner:
    """flow with the kit installed (active), shared by the module's tests."""
    runner = FlowRunner(tmp_path_factory.mktemp("hooks") / "flowhome")
    runner.install_kit(KIT_DIR)
    return runner


@pytest.fixture(scope="module")
def server(runner: FlowRunner, tmp_path_factory: pytest.TempPathFactory):
    srv = BuildServer(runner.home / "env" / "bin" / "flow-cloudbuild-server",
                      tmp_path_factory.mktemp("server") / "data").start()
    yield srv
    srv.stop()


def publish(runner: FlowRunner, server: BuildServer, project: Path, *args: str) -> Result:
    return runner.run("publish", "--server", server.url, "--token", server.token, *args,
                      cwd=project)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("flow: error:")]


def stored(server: BuildServer) -> list[str]:
    """Every path in the server's data dir: an upload or a task would add some."""
    return sorted(str(p.relative_to(server.data_dir)) for p in server.data_dir.rglob("*"))


def fetch(server: BuildServer, url: str) -> str:
    """An artifact's text, read from the server with the token (bounded: 1 MiB)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.read(1 << 20).decode()


def plugin_source(root: Path, name: str, code: str) -> Path:
    """A kit-bound plugin's source folder (pyproject.toml and one module)."""
    module = name.replace("-", "_")
    (root / "src" / module).mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling>=1.20"]
        build-backend = "hatchling.build"

        [project]
        name = "{name}"
        version = "0.1.0"

        [project.entry-points."flow.plugins"]
        {name} = "{module}"

        [tool.hatch.build.targets.wheel]
        packages = ["src/{module}"]
        """))
    (root / "src" / module / "__init__.py").write_text(
        'FLOW_BUILD_KITS = ["flow-kit-cloudbuild"]\nFLOW_API = ">=1"\n' + textwrap.dedent(code))
    return root


def test_secretguard_refuses_an_env_file_and_its_override_publishes(runner, server, tmp_path):
    project = make_site(tmp_path / "site", name="secret-site", flow_toml=(
        '[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n'))
    (project / ".env").write_text("API_TOKEN=do-not-send\n")
    (project / "build.js").write_text(LIST_FILES_JS)  # dist/files.txt: what the server got
    runner.trust(project)
    runner.install_plugin(SECRETGUARD, cwd=project)  # a project plugin: [tool.flow] plugins
    assert "flow-plugin-secretguard" in (project / "flow.toml").read_text()
    before = stored(server)

    refused = publish(runner, server, project, *BUILD)

    assert refused.exit_code == 1, refused.stderr
    assert error_lines(refused) == [
        "flow: error: refusing to upload .env: it looks like a secret (an environment file). "
        "Leave it out of the upload (add it to .flowignore), or allow it with "
        '[tool.flow.secretguard] allow = [".env"]']
    assert "uploading" not in refused.stderr
    assert stored(server) == before  # the server saw no upload, no task

    with (project / "flow.toml").open("a") as toml:
        toml.write('\n[tool.flow.secretguard]\nallow = [".env"]\n')
    runner.trust(project)  # trust covers the project file: an edit is reviewed again
    done = publish(runner, server, project, *BUILD)

    assert done.exit_code == 0, done
    assert "flow: warning" not in done.stderr, done.stderr  # the plugin loaded, and let .env by
    site = done.output.strip().splitlines()[-1]
    assert is_deployment_url(site, server.port)
    assert ".env" in open_deployment(site, "files.txt")[2].decode().split()
    assert stored(server) != before  # a task now


CHECKS_AND_TARGETS = '''
from pathlib import Path
from flowcore.api import hookimpl


@hookimpl
def flow_cloudbuild_publish_checks(task):
    root = Path(task["project_root"])
    if (root / "BLOCK").exists():
        return [{"name": "no-block-file", "ok": False,
                 "message": "remove BLOCK from " + task["name"]}]
    return [{"name": "no-block-file", "ok": True, "message": "fine"}]


@hookimpl
def flow_cloudbuild_artifact_targets(task):
    root = Path(task["project_root"])
    if (root / "COPY_TO").exists():
        return [{"name": "local-copy", "kind": "directory",
                 "url": (root / "COPY_TO").read_text().strip()}]
    return []
'''

FILES_AND_DEPLOYMENT = '''
import json
from pathlib import Path
from flowcore.api import hookimpl


@hookimpl
def flow_cloudbuild_upload_files(project, files):
    if not (project / "CHOOSE").exists():
        return None
    return [f for f in files if f != "drop-me.txt"] + ["generated/version.txt"]


@hookimpl
def flow_cloudbuild_before_upload(context, project, files):
    if (project / "CHOOSE").exists():
        (project / "seen.json").write_text(json.dumps(files))


@hookimpl
def flow_cloudbuild_published(context, deployment):
    (Path(context.project_root or ".") / "deployment.json").write_text(json.dumps(deployment))
'''

LIST_FILES_JS = """\
const fs = require("fs");
const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) =>
  e.isDirectory() ? (e.name === "node_modules" ? [] : walk(d + "/" + e.name)) : [d + "/" + e.name]);
fs.mkdirSync("dist", { recursive: true });
const files = walk(".").map((f) => f.slice(2)).filter((f) => !f.startsWith("dist/")).sort();
fs.writeFileSync("dist/files.txt", files.join("\\n") + "\\n");
fs.writeFileSync("dist/index.html", "<h1>listed</h1>\\n");
"""


def test_publish_checks_stop_a_publish_and_targets_receive_artifacts(runner, server, tmp_path):
    plugin = plugin_source(tmp_path / "guard", "flow-plugin-publishguard", CHECKS_AND_TARGETS)
    runner.install_plugin(plugin)
    project = make_site(tmp_path / "site", name="guarded-site")
    # a kit-bound plugin loads with the kit in global scope; this project names none itself
    (project / "flow.toml").unlink()
    try:
        (project / "BLOCK").write_text("")
        blocked = publish(runner, server, project, *BUILD)
        assert blocked.exit_code == 1
        assert error_lines(blocked) == [
            "flow: error: pre-build check 'no-block-file' failed: remove BLOCK from "
            "guarded-site. Fix it and publish again"]

        (project / "BLOCK").unlink()
        copies = tmp_path / "copies"
        (project / "COPY_TO").write_text(str(copies))
        done = publish(runner, server, project, *BUILD)
        assert done.exit_code == 0, done
        assert is_deployment_url(done.output.strip().splitlines()[-1], server.port)
        assert "<h1>1.0.0</h1>" in (copies / "index.html").read_text()
    finally:
        runner.run("plugin", "delete", "flow-plugin-publishguard")


def test_plugins_choose_the_uploaded_files_and_hear_of_the_deployment(runner, server, tmp_path):
    plugin = plugin_source(tmp_path / "chooser", "flow-plugin-chooser", FILES_AND_DEPLOYMENT)
    runner.install_plugin(plugin)
    project = make_site(tmp_path / "site", name="chosen-site")
    (project / "flow.toml").unlink()
    (project / "build.js").write_text(LIST_FILES_JS)
    (project / "drop-me.txt").write_text("not sent\n")
    (project / "generated").mkdir()
    (project / "generated" / "version.txt").write_text("1.0.0\n")
    (project / ".gitignore").write_text("generated/\nseen.json\ndeployment.json\n")
    (project / "CHOOSE").write_text("")
    try:
        done = publish(runner, server, project, *BUILD)
        assert done.exit_code == 0, done
        seen = json.loads((project / "seen.json").read_text())
        sent = [f["path"] for f in seen]
        assert "drop-me.txt" not in sent and sent[-1] == "generated/version.txt"
        assert {"path": "package.json", "size": (project / "package.json").stat().st_size} in seen

        deployment = json.loads((project / "deployment.json").read_text())
        assert deployment["url"] == done.output.strip().splitlines()[-1]
        assert deployment["prod"] is False
        assert (deployment["name"], deployment["version"]) == ("chosen-site", "1.0.0")
        listing = next(a for a in deployment["artifacts"] if a["name"] == "files.txt")
        built_from = fetch(server, listing["url"]).split()
        assert "generated/version.txt" in built_from and "drop-me.txt" not in built_from
    finally:
        runner.run("plugin", "delete", "flow-plugin-chooser")


def test_a_plugin_cannot_add_a_file_outside_the_project(runner, server, tmp_path):
    plugin = plugin_source(tmp_path / "escape", "flow-plugin-escape", '''
        from flowcore.api import hookimpl

        @hookimpl
        def flow_cloudbuild_upload_files(files):
            return files + ["../outside.txt"]
        ''')
    runner.install_plugin(plugin)
    project = make_site(tmp_path / "site", name="escape-site")
    (project / "flow.toml").unlink()
    (tmp_path / "outside.txt").write_text("private\n")
    before = stored(server)
    try:
        result = publish(runner, server, project, *BUILD)
        assert result.exit_code == 1
        assert error_lines(result) == [
            "flow: error: a flow_cloudbuild_upload_files hook added '../outside.txt', which is "
            f"not a file inside {project}. Fix or remove the plugin that adds it (flow plugin "
            "list shows them)"]
        assert stored(server) == before
    finally:
        runner.run("plugin", "delete", "flow-plugin-escape")
