"""Issue 22, item 7: <Tab> completes values, not only command names: kit names
(``buildkit switch/delete``, ``-k``), plugin names (``plugin delete``), template names
(``create -t``) and config keys (``config get/set``). Through the script ``flow completion bash``
prints, sourced in a real bash, with this repo's kit and plugin installed from kits/ and
plugins/ (offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from create_support import PYTHON_KIT, TEMPLATES_PLUGIN
from test_cli_surface import bash_complete

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def complete(run_flow, flow_home: Path, tmp_path: Path):
    """``complete(*words)``: what bash offers for the last of ``words``, with flow-kit-python
    and flow-plugin-templates installed and one config key of the user's own set."""
    for what, path in (("buildkit", PYTHON_KIT), ("plugin", TEMPLATES_PLUGIN)):
        r = run_flow(what, "add", str(path), "--no-index")
        assert r.returncode == 0, r.stderr
    assert run_flow("config", "set", "cloudbuild.server", "http://x").returncode == 0
    r = run_flow("completion", "bash")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "flow.bash"
    script.write_text(r.stdout)
    return lambda *words: bash_complete(script, flow_home, tmp_path, "flow", *words)


def test_kit_names(complete):
    assert complete("buildkit", "switch", "") == ["flow-kit-python"]
    assert complete("buildkit", "delete", "flow-k") == ["flow-kit-python"]
    assert complete("buildkit", "rm", "") == ["flow-kit-python"]
    assert complete("buildkit", "switch", "nope") == []
    assert complete("-k", "") == ["flow-kit-python"]
    assert complete("create", "-k", "") == ["flow-kit-python"]


def test_plugin_names(complete):
    assert complete("plugin", "delete", "") == ["flow-plugin-templates"]
    assert complete("plugin", "delete", "flow-plugin-templates", "") == []  # named already


def test_template_names_of_the_kit_and_its_plugins(complete):
    assert complete("create", "-t", "") == ["library", "cli", "data-script"]
    assert complete("create", "-k", "flow-kit-python", "--template", "d") == ["data-script"]


def test_config_keys(complete):
    got = complete("config", "get", "")
    assert {"activeBuildKit", "buildKits", "cloudbuild", "cloudbuild.server"} <= set(got)
    assert complete("config", "get", "cloudb") == ["cloudbuild", "cloudbuild.server"]
    got = complete("config", "set", "")
    assert {"indexUrl", "extraIndexUrls", "findLinks", "create.git", "cloudbuild.server",
            "kitConfig.python.build-tool"} <= set(got)
    assert not {"buildKits", "plugins", "activeBuildKit"} & set(got)  # flow's own: refused


def test_a_broken_config_completes_nothing_and_prints_nothing(complete, flow_home):
    (flow_home / "config.json").write_text("{not json")
    assert complete("buildkit", "switch", "") == []


def test_zsh_and_fish_get_the_same_values(complete, run_flow):
    """zsh's and fish's scripts call flow back with these variables (click's protocol)."""
    r = run_flow(env={"_FLOW_COMPLETE": "zsh_complete", "COMP_WORDS": "flow plugin rm ",
                      "COMP_CWORD": "3"})
    assert r.stdout.splitlines() == ["plain", "flow-plugin-templates", "_"], r.stderr
    r = run_flow(env={"_FLOW_COMPLETE": "fish_complete", "COMP_WORDS": "flow create -t d",
                      "COMP_CWORD": "d"})
    assert r.stdout.splitlines() == [
        "plain,data-script\tA standard-library data script: CSV in, summary out, with tests"]
    assert r.stderr == ""
