"""docs/hooks-python.md is flow-kit-python's hookspecs module rendered for plugin authors by the
generator of docs/hooks.md (flowcore.plugins.hookdocs); this test fails when the page drifted from
the specs, or a hook, an argument or a key of a payload type is not documented there.

Regenerate the page with: .venv/bin/python tests/test_hook_docs_python.py, which runs
PYTHONPATH=kits/flow-kit-python/src python -m flowcore.plugins.hookdocs flow_kit_python.hookspecs
docs/hooks-python.md --payloads --title "flow-kit-python hook reference"
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
KIT_SRC = REPO / "kits" / "flow-kit-python" / "src"
PAGE = REPO / "docs" / "hooks-python.md"
TITLE = "flow-kit-python hook reference"


def _module() -> ModuleType:
    if str(KIT_SRC) not in sys.path:
        sys.path.insert(0, str(KIT_SRC))
    from flow_kit_python import hookspecs

    return hookspecs


def hookspecs() -> list[tuple[str, str, object]]:
    """``(phase, name, function)`` of every hook, in the order of the module."""
    from flowcore.plugins import hookdocs

    return hookdocs.hooks(_module())


def render() -> str:
    from flowcore.plugins import hookdocs

    return hookdocs.render(_module(), TITLE, payloads=True)


def payloads() -> list[type]:
    """The module's TypedDicts, in source order."""
    from flowcore.plugins import hookdocs

    return list(hookdocs.payload_types(_module()))


def test_every_hook_is_a_spec_taking_context_first() -> None:
    specs = hookspecs()
    assert [name for _, name, _ in specs] == [
        "flow_python_before_build", "flow_python_built", "flow_python_test_args",
        "flow_python_test_result"]
    protocol = _module().PythonHooks
    for _, name, func in specs:
        assert isinstance(getattr(func, "flow_spec", None), dict), name
        params = list(inspect.signature(func).parameters)  # type: ignore[arg-type]
        assert params[0] == "context", name
        assert func.__doc__ and "When:" in func.__doc__ and "Return:" in func.__doc__, name
        for arg in params:
            assert f":param {arg}:" in func.__doc__, f"{name}: argument {arg!r} is not documented"
        # the Protocol the kit calls them through has the same arguments, without context
        typed = list(inspect.signature(getattr(protocol, name)).parameters)
        assert typed == ["self", *params[1:]], name


def test_every_payload_key_is_described() -> None:
    from flowcore.plugins import hookdocs

    assert [cls.__name__ for cls in payloads()] == ["ExtraFile", "BuiltArtifact"]
    for cls in payloads():
        fields = hookdocs.payload_fields(cls)
        assert [key for key, _, _ in fields] == list(cls.__annotations__), cls.__name__
        for key, _, note in fields:
            assert note, f"{cls.__name__}.{key} has no #: comment"


def test_the_page_matches_the_specs_and_is_linked() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/hooks-python.md is out of date: run .venv/bin/python tests/test_hook_docs_python.py")
    assert "hooks-python.md" in (REPO / "docs" / "writing-plugins.md").read_text(encoding="utf-8")


if __name__ == "__main__":
    import os
    import subprocess

    path = os.pathsep.join([str(KIT_SRC), str(REPO / "src")])
    sys.exit(subprocess.run(
        [sys.executable, "-m", "flowcore.plugins.hookdocs", "flow_kit_python.hookspecs", str(PAGE),
         "--payloads", "--title", TITLE], env={**os.environ, "PYTHONPATH": path}).returncode)
