"""Workspace trust at install time (issue 24, part 4), through the real `flow` CLI.

- A wheel that ships a file another installed distribution owns (a plugin's module, a script in
  ``bin/``) is refused before the install commits: it would overwrite that file silently, and
  deleting it later would delete the other plugin's file too.
- The install-time import check (the probe) runs with a reduced environment: a plugin imported
  there sees no token of the user's environment, neither in ``os.environ`` nor in
  ``/proc/self/environ``.

Real wheels (tests/wheelfactory.py), real installs, offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packages_support import config_bytes, env_listing, one_line_error, read_config, site_packages
from wheelfactory import build_wheel, plugin_wheel

INSTALLERS = ["uv", "pip"]
_HELLO_FROM = ("@click.command(name={command!r})\ndef command():\n    click.echo({command!r})\n"
               "@hookimpl\ndef flow_register_commands(registry):\n    registry.add(command)\n")


def _sneaky_wheel(dest: Path, victim_module: str, extra: dict[str, str] | None = None) -> Path:
    """``flow-plugin-sneaky``: a working plugin that also ships ``victim_module``'s file."""
    header = "import click\nfrom flowcore import hookimpl\nFLOW_API = '>=1'\n"
    files = {"flow_plugin_sneaky/__init__.py": header + _HELLO_FROM.format(command="sneaky"),
             f"{victim_module}/__init__.py": header + "raise SystemExit('replaced by sneaky')\n",
             **(extra or {})}
    return build_wheel(dest, "flow-plugin-sneaky", files,
                       entry_points={"flow.plugins": {"flow-plugin-sneaky": "flow_plugin_sneaky"}})


def _add(run_flow, spec: str, wheels: Path, **env: str):
    return run_flow("plugin", "add", spec, "--no-index", "--find-links", str(wheels), env=env)


def _state(run_flow, flow_home: Path) -> dict[str, object]:
    """Everything a refused install must leave as it was."""
    listing = run_flow("plugin", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    record = flow_home / "installed.json"
    return {"config": config_bytes(flow_home), "env": env_listing(flow_home / "env"),
            "record": record.read_bytes() if record.exists() else None,
            "list": listing.stdout}


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_wheel_shipping_another_plugins_module_is_refused(run_flow, flow_home, tmp_path,
                                                           installer):
    wheels = tmp_path / "wheels"
    # An upgrade of the same distribution is no conflict: its new version owns the files now.
    plugin_wheel(wheels, "flow-plugin-first", _HELLO_FROM.format(command="first"),
                 version="0.1.0")
    assert _add(run_flow, "flow-plugin-first==0.1.0", wheels).returncode == 0
    plugin_wheel(wheels, "flow-plugin-first", _HELLO_FROM.format(command="first"),
                 version="0.2.0")
    r = _add(run_flow, "flow-plugin-first==0.2.0", wheels, FLOW_INSTALLER=installer)
    assert r.returncode == 0, r.stderr
    victim = site_packages(flow_home / "env") / "flow_plugin_first" / "__init__.py"
    original = victim.read_bytes()
    before = _state(run_flow, flow_home)

    _sneaky_wheel(wheels, "flow_plugin_first")
    r = _add(run_flow, "flow-plugin-sneaky", wheels, FLOW_INSTALLER=installer)

    assert r.returncode != 0, r.stdout
    line = one_line_error(r.stderr)
    assert "flow-plugin-sneaky" in line and "flow-plugin-first" in line, line
    assert "flow_plugin_first/__init__.py" in line, line
    assert "unchanged" in line, line
    assert victim.read_bytes() == original  # byte for byte
    assert _state(run_flow, flow_home) == before
    assert "flow-plugin-sneaky" not in read_config(flow_home).get("plugins", [])
    # The first plugin still loads, and nothing is left to delete that would break it.
    r = run_flow("first")
    assert (r.returncode, r.stdout.strip()) == (0, "first"), r.stderr
    r = run_flow("plugin", "delete", "flow-plugin-sneaky")
    assert r.returncode != 0 and "not installed" in one_line_error(r.stderr)
    assert victim.read_bytes() == original
    r = run_flow("doctor")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_wheel_shipping_another_plugins_script_is_refused(run_flow, flow_home, tmp_path):
    """Files outside site-packages count too: a console script in the environment's bin/."""
    wheels = tmp_path / "wheels"
    script = "#!python\nprint('first tool')\n"
    build_wheel(wheels, "flow-plugin-first",
                {"flow_plugin_first/__init__.py": "import click\nfrom flowcore import hookimpl\n"
                 "FLOW_API = '>=1'\n" + _HELLO_FROM.format(command="first"),
                 "flow_plugin_first-0.1.0.data/scripts/first-tool": script},
                entry_points={"flow.plugins": {"flow-plugin-first": "flow_plugin_first"}})
    assert _add(run_flow, "flow-plugin-first", wheels).returncode == 0
    tool = flow_home / "env" / "bin" / "first-tool"
    original = tool.read_bytes()
    before = _state(run_flow, flow_home)

    header = "import click\nfrom flowcore import hookimpl\nFLOW_API = '>=1'\n"
    build_wheel(wheels, "flow-plugin-sneaky",
                {"flow_plugin_sneaky/__init__.py": header + _HELLO_FROM.format(command="sneaky"),
                 "flow_plugin_sneaky-0.1.0.data/scripts/first-tool": "#!python\nprint('gotcha')\n"},
                entry_points={"flow.plugins": {"flow-plugin-sneaky": "flow_plugin_sneaky"}})
    r = _add(run_flow, "flow-plugin-sneaky", wheels)

    assert r.returncode != 0, r.stdout
    line = one_line_error(r.stderr)
    assert "flow-plugin-sneaky" in line and "flow-plugin-first" in line, line
    assert "bin/first-tool" in line, line
    assert tool.read_bytes() == original
    assert _state(run_flow, flow_home) == before


_SPY = """
import os, sys
seen = {{"environ": sorted(os.environ), "isolated": sys.flags.isolated}}
try:
    with open("/proc/self/environ", "rb") as fh:
        seen["proc"] = [v.split(b"=", 1)[0].decode() for v in fh.read().split(b"\\0") if v]
except OSError:
    seen["proc"] = []
with open({out!r}, "a") as fh:
    fh.write(json.dumps(seen) + "\\n")
"""


def test_the_import_check_sees_no_secret_of_the_users_environment(run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    out = tmp_path / "seen.jsonl"
    plugin_wheel(wheels, "flow-plugin-spy", "import json\n" + _SPY.format(out=str(out)))
    secrets = {"FLOW_CLOUDBUILD_TOKEN": "cb-secret", "GITHUB_TOKEN": "gh-secret",
               "AWS_SECRET_ACCESS_KEY": "aws-secret", "SOME_OTHER_SETTING": "x"}
    r = _add(run_flow, "flow-plugin-spy", wheels, **secrets, LANG="C.UTF-8")
    assert r.returncode == 0, r.stderr
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    # The probe (python -I) imports it before the commit; after it, flow's own process loads it
    # for the command manifest, as every later command does.
    assert [view["isolated"] for view in seen] == [1, 0], seen
    view = seen[0]
    for where in ("environ", "proc"):
        leaked = set(secrets) & set(view[where])
        assert not leaked, f"the probe saw {leaked} in {where}"
    assert {"PATH", "HOME", "LANG", "FLOW_HOME"} <= set(view["environ"])


def test_the_plugin_guide_lists_what_the_import_check_passes():
    """docs/plugins.md names every variable of the allowlist, and nothing else."""
    import re

    from flowcore.packages.probe import PROBE_ENV_NAMES, PROBE_ENV_PREFIXES

    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    listed = guide.split("**reduced\n  environment**: only ", 1)[1].split(" pass (", 1)[0]
    documented = set(re.findall(r"`([A-Z_*]+)`", listed))
    assert documented == set(PROBE_ENV_NAMES) | {f"{p}*" for p in PROBE_ENV_PREFIXES}
