"""Issue 22, item 8: Lerna's short names ``ls`` (list) and ``rm`` (delete) for ``flow buildkit``
and ``flow plugin``, from one table (flowcore.commands.ALIASES), shown in the help."""

from __future__ import annotations

from create_support import PYTHON_KIT


def test_plugin_ls_and_rm(run_flow):
    r = run_flow("plugin", "ls")
    assert r.returncode == 0, r.stderr
    assert r.stdout == run_flow("plugin", "list").stdout
    r = run_flow("plugin", "rm", "flow-plugin-nope")
    assert r.returncode != 0 and "No such command" not in r.stderr
    r = run_flow("plugin", "ls", "--help")
    assert r.stdout.startswith("Usage: flow plugin list [OPTIONS]")


def test_buildkit_ls_and_rm(run_flow):
    assert run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index").returncode == 0
    r = run_flow("buildkit", "ls", "--json")
    assert r.returncode == 0, r.stderr
    assert '"name": "flow-kit-python"' in r.stdout
    r = run_flow("buildkit", "rm", "flow-kit-python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "deleted build kit flow-kit-python"
    assert "no build kits" in run_flow("buildkit", "ls").stdout


def test_the_help_shows_the_aliases(run_flow):
    for group in ("plugin", "buildkit"):
        r = run_flow(group, "--help")
        rows = {line.split("  ")[1].strip() for line in r.stdout.splitlines()
                if line.startswith("  ") and not line.startswith("   ")}
        assert {"list (ls)", "delete (rm)"} <= rows, r.stdout
        assert "add" in rows
