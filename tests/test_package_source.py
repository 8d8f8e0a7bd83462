"""The package source settings (index URL, extra index URLs, find-links) through the real CLI.

Installs by name come from a real PEP 503 simple index served on loopback (package_index.py)
from this repo's kits and plugins; nothing reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from package_index import INDEX_ENV, start_package_index
from packages_support import config_bytes, env_dists, one_line_error, read_config, simple_plugin


def _record(home: Path) -> dict:
    return json.loads((home / "installed.json").read_text())["packages"]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_names_install_from_the_configured_index(run_flow, flow_home, package_index, installer):
    env = {**INDEX_ENV, "FLOW_INSTALLER": installer}
    r = run_flow("plugin", "add", "flow-plugin-env", env=env)
    assert r.returncode == 1  # no index configured: the installer's default has no such name
    assert r.stderr.startswith("flow: error: cannot install flow-plugin-env")

    r = run_flow("config", "set", "indexUrl", package_index.url)
    assert r.returncode == 0, r.stderr
    assert read_config(flow_home)["indexUrl"] == package_index.url
    shown = run_flow("config").stdout
    assert f"indexUrl: {package_index.url}  from {flow_home / 'config.json'}" in shown

    r = run_flow("buildkit", "add", "flow-kit-python", env=env)
    assert r.returncode == 0, r.stderr
    r = run_flow("plugin", "add", "flow-plugin-env", env=env)
    assert r.returncode == 0, r.stderr
    assert "installed plugin flow-plugin-env 0.1.0 as a general plugin" in r.stdout
    assert env_dists(flow_home / "env") == {"flow_kit_python", "flow_plugin_env"}
    assert _record(flow_home)["flow-plugin-env"]["source"] == "flow-plugin-env"
    assert run_flow("env").returncode == 0

    # doctor --fix rebuilds a lost environment from the same index.
    shutil.rmtree(flow_home / "env")
    r = run_flow("doctor", "--fix", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reinstalled flow-plugin-env 0.1.0 from flow-plugin-env" in r.stdout
    assert env_dists(flow_home / "env") == {"flow_kit_python", "flow_plugin_env"}


def test_environment_and_project_settings_win_and_show_their_origin(
        run_flow, flow_home, package_index, tmp_path):
    (tmp_path / "nothing").mkdir()
    with start_package_index(tmp_path / "nothing", tmp_path / "empty-index") as empty:
        assert run_flow("config", "set", "indexUrl", empty.url).returncode == 0
        # The global index has nothing; FLOW_INDEX_URL points at the real one and wins.
        env = {**INDEX_ENV, "FLOW_INDEX_URL": package_index.url}
        shown = run_flow("config", env=env).stdout
        assert f"indexUrl: {package_index.url}  from environment (FLOW_INDEX_URL)" in shown
        assert run_flow("plugin", "add", "flow-plugin-env", env=env).returncode == 0
        r = run_flow("plugin", "add", "flow-plugin-pyclean", env=INDEX_ENV)
        assert r.returncode == 1 and "flow-plugin-pyclean" in one_line_error(r.stderr)

        # A project's [tool.flow] index-url wins over the global one inside the project.
        project = tmp_path / "app"
        project.mkdir()
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "app"\n\n[tool.flow]\nbuildkit = "flow-kit-python"\n'
            f'index-url = "{package_index.url}"\n')
        # ... once the user trusts the project: a cloned repository must not pick the index.
        shown = run_flow("config", cwd=project).stdout
        assert f"indexUrl: {empty.url}  from {flow_home / 'config.json'}" in shown
        assert run_flow("trust", cwd=project).returncode == 0
        shown = run_flow("config", cwd=project).stdout
        assert f"indexUrl: {package_index.url}  from {project / 'pyproject.toml'}" in shown
        r = run_flow("plugin", "add", "flow-plugin-pyclean", cwd=project, env=INDEX_ENV)
        assert r.returncode == 0, r.stderr
        assert env_dists(project / ".flow" / "env") == {"flow_plugin_pyclean"}
        # -g leaves the project's settings out.
        assert f"indexUrl: {empty.url}" in run_flow("-g", "config", cwd=project).stdout


def test_extra_index_urls_and_find_links(run_flow, flow_home, package_index, tmp_path):
    wheels = tmp_path / "wheels"
    simple_plugin(wheels, "flow-plugin-local")
    (tmp_path / "nothing").mkdir()
    with start_package_index(tmp_path / "nothing", tmp_path / "empty-index") as empty:
        assert run_flow("config", "set", "indexUrl", empty.url).returncode == 0
        assert run_flow("config", "set", "extraIndexUrls",
                        json.dumps([package_index.url])).returncode == 0
        r = run_flow("config", "set", "findLinks", "wheels")  # relative to the working dir
        assert r.returncode == 0, r.stderr
        assert read_config(flow_home)["findLinks"] == [str(wheels)]
        assert read_config(flow_home)["extraIndexUrls"] == [package_index.url]
        r = run_flow("plugin", "add", "flow-plugin-env", "flow-plugin-local", env=INDEX_ENV)
        assert r.returncode == 0, r.stderr
        # --no-index drops the indexes, not the configured find-links.
        simple_plugin(wheels, "flow-plugin-offline")
        r = run_flow("plugin", "add", "flow-plugin-offline", "--no-index")
        assert r.returncode == 0, r.stderr
        assert env_dists(flow_home / "env") == {"flow_plugin_env", "flow_plugin_local",
                                                "flow_plugin_offline"}
        shown = run_flow("config", "--json").stdout
        described = json.loads(shown)
        assert described["extraIndexUrls"] == {"value": [package_index.url],
                                               "from": str(flow_home / "config.json")}
        assert described["findLinks"]["value"] == [str(wheels)]


@pytest.mark.parametrize("key, value, needle", [
    ("indexUrl", "ftp://example.com/simple", "'ftp://example.com/simple' is not an http, https or file URL"),
    ("indexUrl", "https://", "'https://' has no host"),
    ("findLinks", "./no-such-dir", "'./no-such-dir' is neither a URL nor an existing path"),
    ("extraIndexUrls", "[1]", "'extraIndexUrls' must be a list of URLs or paths"),
])
def test_bad_values_are_refused_by_config_set(run_flow, flow_home, key, value, needle):
    assert run_flow("config", "set", "other", "1").returncode == 0
    before = config_bytes(flow_home)
    r = run_flow("config", "set", key, value)
    assert r.returncode == 2
    assert needle in one_line_error(r.stderr)
    assert config_bytes(flow_home) == before


def test_bad_values_in_the_files_are_reported_with_their_origin(run_flow, flow_home, tmp_path):
    flow_home.mkdir()
    (flow_home / "config.json").write_text('{"findLinks": "not-a-list"}')
    r = run_flow("config")
    assert r.returncode == 2
    assert "key 'findLinks' must be a list of URLs or paths" in one_line_error(r.stderr)

    (flow_home / "config.json").write_text('{"findLinks": ["gone"]}')
    before = config_bytes(flow_home)
    r = run_flow("plugin", "add", "flow-plugin-env")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"findLinks (from {flow_home / 'config.json'}): 'gone' is neither a URL nor an " \
           f"existing path ({flow_home / 'gone'} does not exist)" in line
    assert line.endswith("Change it with: flow config set findLinks VALUE")
    assert config_bytes(flow_home) == before and not (flow_home / "env").exists()

    (flow_home / "config.json").write_text("{}")
    project = tmp_path / "app"
    project.mkdir()
    (project / "flow.toml").write_text('[tool.flow]\nfind-links = ["../nowhere"]\n')
    assert run_flow("trust", cwd=project).returncode == 0
    r = run_flow("plugin", "add", "flow-plugin-env", cwd=project)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"from {project / 'flow.toml'}" in line and "'../nowhere'" in line
    assert line.endswith(f"Fix 'find-links' in [tool.flow] of {project / 'flow.toml'}")

    r = run_flow("plugin", "add", "flow-plugin-env", env={"FLOW_INDEX_URL": "gopher://x"},
                 cwd=tmp_path)
    assert r.returncode == 2
    assert one_line_error(r.stderr).endswith("Fix or unset FLOW_INDEX_URL")


def test_a_password_in_an_index_url_is_not_shown(run_flow, flow_home):
    assert run_flow("config", "set", "indexUrl",
                    "https://team:s3cret@pkgs.example.com/simple/").returncode == 0
    shown = run_flow("config").stdout + run_flow("config", "--json").stdout
    assert "s3cret" not in shown
    assert "https://team:****@pkgs.example.com/simple/" in shown


def test_the_docs_tests_helper_points_flow_at_the_repo_index(run_flow, flow_home, wheelhouse,
                                                             tmp_path):
    from package_index import index_env, start_repo_index

    with start_repo_index(tmp_path, wheelhouse) as index:
        r = run_flow("plugin", "add", "flow-plugin-env", env=index_env(index))
    assert r.returncode == 0, r.stderr
    assert "installed plugin flow-plugin-env 0.1.0 as a general plugin" in r.stdout
