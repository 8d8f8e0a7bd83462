"""Issue 24 part 5 / issue 18 part 7: no control character from outside flow reaches the terminal.

Names, help and descriptions from plugins, kits, templates and config files, and exception
messages from plugin code, are printed by ``flow --help``, ``flow plugin list``, ``flow buildkit
list``, ``flow create --list``, ``flow doctor`` and the warnings. A terminal obeys what they
carry: OSC 0 sets the window title, OSC 52 writes the clipboard, CSI moves the cursor or erases
the screen, C1 ``\\x9b`` is CSI in one byte. Here a real plugin (a wheel installed with ``flow
plugin add``) and config files carry all of those; none may reach stdout or stderr, while the
visible text around them stays. The sanitiser itself (``flowcore.api.printable``) is tested first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowcore import api
from packages_support import kit_wheel
from wheelfactory import plugin_wheel

#: OSC 0 (title, BEL-terminated), OSC 52 (clipboard, ST-terminated), a CSI colour, C1 CSI.
EVIL = "\x1b]0;pwned\x07" "\x1b]52;c;cHduZWQ=\x1b\\" "\x1b[31mred\x1b[0m" "\x9b2J"
#: What a terminal would act on: C0 (but tab and newline), DEL, C1.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def assert_clean(text: str) -> None:
    """No control character, and no payload of a removed sequence left behind as garbage."""
    assert not CONTROLS.search(text), repr(text)
    assert "pwned" not in text and "cHduZWQ" not in text, repr(text)
    assert "2J" not in text, repr(text)


# -- the sanitiser ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    ("a\x1b]0;pwned\x07b", "ab"),                     # OSC, BEL-terminated
    ("a\x1b]52;c;cHduZWQ=\x1b\\b", "ab"),             # OSC, ST-terminated (ESC \)
    ("a\x9d0;pwned\x9cb", "ab"),                      # 8-bit OSC and ST
    ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # hyperlink: the text stays
    ("a\x1bP1$r0m\x1b\\b", "ab"),                     # DCS
    ("a\x90q#0;2;0;0;0\x9cb", "ab"),                  # 8-bit DCS (sixel)
    ("a\x1b_apc\x1b\\b\x1b^pm\x07c\x1bXsos\x1b\\d", "abcd"),  # APC, PM, SOS
    ("a\x1b[2Kb\x1b[1;31mc\x1b[?1049hd", "abcd"),     # CSI: erase, colour, private mode
    ("a\x9b2Jb", "ab"),                               # 8-bit CSI
    ("a\x85b\x9cc\x80d\x9f", "abcd"),                 # other C1 controls
    ("a\x1b7b\x1b8c\x1bcd\x1b(Be", "abcde"),          # ESC sequences: save, restore, reset, charset
    ("a\x1b", "a"),                                   # a lone ESC at the end
    ("a\x1b\nb", "a\nb"),                             # a lone ESC before a newline
    ("a\rb\bc\x00d\x7fe\x0bf\x0cg", "abcdefg"),       # CR, BS, NUL, DEL, VT, FF
    ("tab\tand\nnewline\n", "tab\tand\nnewline\n"),   # kept
    ("héllo ✓ 日本", "héllo ✓ 日本"),                  # printable text is untouched
    ("", ""),
])
def test_printable_removes_whole_sequences_and_controls(raw: str, clean: str) -> None:
    assert api.printable(raw) == clean


def test_an_unterminated_string_loses_its_introducer_and_nothing_visible_after_it() -> None:
    out = api.printable("title \x1b]0;half a title")
    assert out == "title 0;half a title"  # a terminal would eat the rest; here it shows


def test_colour_is_kept_only_when_asked_and_only_sgr() -> None:
    raw = "\x1b[1;31mred\x1b[0m \x1b[38;5;208mor\x1b[38:2::1:2:3mange\x1b[m\x1b[2J\x1b]0;t\x07\x9b31m!"
    assert api.printable(raw) == "red orange!"
    assert api.printable(raw, keep_colour=True) == (
        "\x1b[1;31mred\x1b[0m \x1b[38;5;208mor\x1b[38:2::1:2:3mange\x1b[m!")


def test_printable_line_replaces_line_breaks_and_tabs() -> None:
    assert api.printable_line("a\tb\nc\u2028d\u2029e\r\nf" + EVIL) == "a b c d e fred"


def test_the_sanitiser_is_public_and_one_object() -> None:
    import flowcore
    from flowcore._base import printable as _printable

    assert api.printable is _printable.printable is flowcore.printable
    assert api.printable_line is _printable.printable_line is flowcore.printable_line


# -- flow's output ---------------------------------------------------------------------------

EVIL_PLUGIN = f'''
EVIL = {EVIL!r}

@click.command(name="hi" + EVIL, help="Say" + EVIL + " hi")
def hi():
    click.echo("hi")

@click.command(name="fail-click")
def fail_click():
    raise click.ClickException("refused" + EVIL + " by the plugin")

@click.command(name="fail-boom")
def fail_boom():
    raise RuntimeError("boom" + EVIL + " in the plugin")

@hookimpl
def flow_register_commands(registry):
    registry.add(hi)
    registry.add(fail_click)
    registry.add(fail_boom)

@hookimpl
def flow_create_templates(kit):
    return [{{"name": "evil" + EVIL, "description": "A template" + EVIL + " to trust",
              "source": "/nonexistent"}}]
'''

BROKEN_PLUGIN = f'''
@hookimpl
def flow_register_commands(registry):
    raise RuntimeError("boom" + {EVIL!r} + " here")
'''


@pytest.fixture
def flow(run_flow, tmp_path: Path, flow_home: Path):
    """A kit and two hostile plugins, installed from wheels with flow itself."""
    wheels = tmp_path / "wheels"
    kit_wheel(wheels, "flow-kit-demo")
    plugin_wheel(wheels, "flow-plugin-evil", EVIL_PLUGIN)
    plugin_wheel(wheels, "flow-plugin-broken", BROKEN_PLUGIN)
    links = ("--no-index", "--find-links", str(wheels))
    r = run_flow("buildkit", "add", "flow-kit-demo", *links)
    assert r.returncode == 0, r.stderr
    r = run_flow("plugin", "add", "flow-plugin-evil", "flow-plugin-broken", *links)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr)
    return run_flow


def test_help_lists_plugin_commands_without_their_escapes(flow):
    r = flow("--help")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout)
    assert_clean(r.stderr)
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("hi"))
    assert re.search(r"hired\s+Sayred hi  \[flow-plugin-evil\]", row), row
    # the failure report carries the plugin's exception message, cleaned
    assert ("plugin 'flow-plugin-broken' failed to load: flow_register_commands raised "
            "RuntimeError: boomred here") in r.stderr
    # shell completion offers the same rows
    completion = flow(env={"_FLOW_COMPLETE": "bash_complete", "COMP_WORDS": "flow h",
                           "COMP_CWORD": "1"})
    assert_clean(completion.stdout + completion.stderr)


def test_create_list_shows_template_descriptions_without_escapes(flow):
    r = flow("create", "--list", "-k", "flow-kit-demo")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout)
    assert_clean(r.stderr)
    assert re.search(r"^evilred\s+A templatered to trust  \[flow-plugin-evil\]$", r.stdout,
                     re.MULTILINE), r.stdout
    # JSON keeps the data as it is, escaped by JSON itself (no raw control byte)
    r = flow("create", "--list", "--json", "-k", "flow-kit-demo")
    assert not CONTROLS.search(r.stdout)
    assert json.loads(r.stdout)["templates"][0]["name"] == "evil" + EVIL


def test_config_values_reach_warnings_and_lists_without_escapes(flow, flow_home, tmp_path):
    config = json.loads((flow_home / "config.json").read_text())
    config["plugins"].append("flow-plugin-ghost" + EVIL)
    config["buildKits"].append({"name": "flow-kit-ghost" + EVIL, "installed": False,
                                "plugins": ["flow-plugin-spook" + EVIL]})
    config["buildKits"][0]["nmae" + EVIL] = 1
    config["kitConfig"] = {"ghost": {"note": "note" + EVIL}}
    (flow_home / "config.json").write_text(json.dumps(config))

    listed = flow("plugin", "list")
    assert listed.returncode == 0, listed.stderr
    for out in (listed.stdout, listed.stderr):
        assert_clean(out)
    assert "flow-plugin-ghostred  (not installed)  (general)" in listed.stdout
    assert "unknown key 'nmaered' in" in listed.stderr  # a config key, in a warning
    assert "plugin 'flow-plugin-ghostred' failed to load" in flow("--help").stderr

    kits = flow("buildkit", "list", "--all")
    assert kits.returncode == 0, kits.stderr
    assert_clean(kits.stdout + kits.stderr)
    assert "  flow-kit-ghostred (declared, not installed)" in kits.stdout
    assert "    flow-plugin-spookred (not installed)" in kits.stdout

    doctor = flow("doctor")
    assert doctor.returncode == 1
    assert_clean(doctor.stdout + doctor.stderr)
    assert "flow-plugin-ghostred" in doctor.stdout

    shown = flow("config")
    assert_clean(shown.stdout + shown.stderr)
    assert "plugin: flow-plugin-ghostred (general)" in shown.stdout
    got = flow("config", "get", "kitConfig.ghost.note")
    assert (got.returncode, got.stdout) == (0, "notered\n"), got.stderr

    project = tmp_path / "app"
    project.mkdir()
    key = "bildkit" + EVIL
    (project / "pyproject.toml").write_text(
        '[tool.flow]\nbuildkit = "flow-kit-demo"\n'
        + json.dumps(key) + ' = "x"\n')  # a TOML basic string: JSON's escapes are TOML's
    r = flow("--help", cwd=project)
    assert_clean(r.stdout + r.stderr)
    assert "unknown key 'bildkitred' in [tool.flow]" in r.stderr


def test_errors_carrying_outside_text_are_cleaned(flow):
    r = flow("buildkit", "switch", "flow-kit-x" + EVIL)
    assert r.returncode == 2
    assert_clean(r.stderr)
    assert "build kit 'flow-kit-xred' is not installed" in r.stderr


def test_a_plugin_commands_own_error_text_is_cleaned(flow):
    r = flow("fail-click")
    assert r.returncode == 1
    assert_clean(r.stderr)
    assert r.stderr.splitlines()[-1] == "flow: error: refusedred by the plugin"
    r = flow("fail-boom")
    assert r.returncode == 1
    assert_clean(r.stderr)
    assert "flow: error: unexpected RuntimeError: boomred in the plugin." in r.stderr
