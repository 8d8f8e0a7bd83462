"""docs/hooks.md is the hookspecs module rendered for readers; this test fails when a hook or a
hook argument is missing there, or when the page drifted from the specs.

Regenerate the page with: .venv/bin/python tests/test_hook_docs.py (the same generator as the kits'
pages: python -m flowcore.plugins.hookdocs flowcore.plugins.hookspecs docs/hooks.md)
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOOKS_MD = REPO / "docs" / "hooks.md"
GUIDE_MD = REPO / "docs" / "writing-plugins.md"


def hookspecs() -> list[tuple[str, str, object]]:
    """``(phase, name, function)`` of every hook, in the order of the hookspecs module."""
    from flowcore.plugins import hookdocs
    from flowcore.plugins import hookspecs as module

    return hookdocs.hooks(module)


def render() -> str:
    from flowcore.plugins import hookdocs
    from flowcore.plugins import hookspecs as module

    return hookdocs.render(module)


def test_every_hook_is_marked_as_a_spec():
    specs = hookspecs()
    assert [name for _, name, _ in specs] == [
        "flow_addhooks", "flow_register_commands", "flow_kit_info", "flow_create_templates",
        "flow_before_command", "flow_after_command",
    ]
    for _, name, func in specs:
        assert isinstance(getattr(func, "flow_spec", None), dict), name
        assert func.__doc__ and "When:" in func.__doc__ and "Return:" in func.__doc__, name


def test_every_hook_and_argument_is_in_the_docs():
    text = HOOKS_MD.read_text(encoding="utf-8")
    for _, name, func in hookspecs():
        assert f"### `{name}(" in text, f"{name} is missing from docs/hooks.md"
        section = text.split(f"### `{name}(", 1)[1].split("\n### ", 1)[0]
        for arg in inspect.signature(func).parameters:
            assert f":param {arg}:" in section, f"{name}: argument {arg!r} is not documented"
    guide = GUIDE_MD.read_text(encoding="utf-8")
    for _, name, _ in hookspecs():
        assert name in guide, f"{name} is not mentioned in docs/writing-plugins.md"


def test_every_public_name_is_in_the_guide():
    """docs/writing-plugins.md documents exactly flowcore.api: each name has a row in its
    "The public API" table, and the table names nothing else."""
    from flowcore import api

    section = GUIDE_MD.read_text(encoding="utf-8").split("## The public API", 1)[1]
    section = section.split("\n## ", 1)[0]  # up to the next section (testing has its own)
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = set()
    for cell in rows:
        documented.update(name.split("(")[0] for name in re.findall(r"`([^`]+)`", cell))
    assert documented == set(api.__all__)


def test_the_plugin_docs_name_no_private_module():
    """What the guide and the hook reference tell plugin authors to use is public (flowcore.api,
    and flowcore.testing for their tests)."""
    from flowcore import api

    for page in (GUIDE_MD, HOOKS_MD, REPO / "docs" / "plugins.md", REPO / "docs" / "writing-kits.md"):
        for name in re.findall(r"\bflowcore\.(\w+)", page.read_text(encoding="utf-8")):
            assert name in ("api", "testing") or name in api.__all__, f"{page.name} names flowcore.{name}"


def test_the_hook_page_matches_the_specs():
    assert HOOKS_MD.read_text(encoding="utf-8") == render(), (
        "docs/hooks.md is out of date: run .venv/bin/python tests/test_hook_docs.py")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    HOOKS_MD.write_text(render(), encoding="utf-8")
    print(f"wrote {HOOKS_MD}")
