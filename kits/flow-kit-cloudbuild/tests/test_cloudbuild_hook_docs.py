"""docs/hooks-cloudbuild.md is the kit's hookspecs module rendered for plugin authors by flowcore's
hook reference generator (the one docs/hooks.md and docs/hooks-python.md come from), payload types
included; this test fails when the page drifted from the specs byte for byte, or when a hook, an
argument or a payload key has no description to render.

Regenerate the page with (from the repository's root):
.venv/bin/python kits/flow-kit-cloudbuild/tests/test_cloudbuild_hook_docs.py
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import repo_tests  # noqa: F401  (puts the kit's src/ on sys.path)

from flow_kit_cloudbuild import hookspecs

REPO = Path(__file__).resolve().parents[3]
KIT_SRC = REPO / "kits" / "flow-kit-cloudbuild" / "src"
PAGE = REPO / "docs" / "hooks-cloudbuild.md"
#: The generator's command line; run as a program, so the test imports nothing private of flowcore.
GENERATE = [sys.executable, "-m", "flowcore.plugins.hookdocs", "flow_kit_cloudbuild.hookspecs",
            str(PAGE), "--payloads", "--title", "flow-kit-cloudbuild hook reference"]
HOOKS = ["flow_cloudbuild_publish_checks", "flow_cloudbuild_upload_files",
         "flow_cloudbuild_before_upload", "flow_cloudbuild_artifact_targets",
         "flow_cloudbuild_published"]
PAYLOADS = ["PublishTask", "CheckResult", "Artifact", "PublishedTask", "ArtifactTarget",
            "UploadFile", "Deployment"]


def generate(*extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(KIT_SRC), str(REPO / "src")])}
    return subprocess.run([*GENERATE, *extra], capture_output=True, text=True, env=env, timeout=60)


def test_every_hook_is_a_spec_taking_context_first_and_documented():
    specs = [name for name in vars(hookspecs) if name.startswith("flow_")]
    assert specs == HOOKS
    for name in HOOKS:
        func = getattr(hookspecs, name)
        assert isinstance(getattr(func, "flow_spec", None), dict), name
        assert func.__doc__ and "When:" in func.__doc__ and "Return:" in func.__doc__, name
        params = list(inspect.signature(func).parameters)
        assert params[0] == "context", f"{name} must take context first"
        for arg in params:
            assert f":param {arg}:" in func.__doc__, f"{name}: argument {arg!r} is not documented"


def test_the_calling_protocol_matches_the_specs():
    """``CloudBuildHooks`` (what the kit casts ``context.hook`` to) has one method per hook,
    with the hook's arguments but ``context`` (flow passes each plugin its own)."""
    protocol = hookspecs.CloudBuildHooks
    assert sorted(n for n in vars(protocol) if n.startswith("flow_")) == sorted(HOOKS)
    for name in HOOKS:
        spec_args = list(inspect.signature(getattr(hookspecs, name)).parameters)[1:]
        call_args = list(inspect.signature(getattr(protocol, name)).parameters)[1:]
        assert call_args == spec_args, name


def test_every_payload_key_is_described():
    """Each key a payload declares has a ``#:`` comment above it, which the page shows."""
    found = sorted((obj for obj in vars(hookspecs).values()
                    if isinstance(obj, type) and obj.__module__ == hookspecs.__name__
                    and hasattr(obj, "__required_keys__")),
                   key=lambda cls: inspect.getsourcelines(cls)[1])
    assert [cls.__name__ for cls in found] == PAYLOADS
    for cls in found:
        lines = [line.strip() for line in inspect.getsource(cls).splitlines()[1:] if line.strip()]
        for i, line in enumerate(lines):
            if ": " in line and not line.startswith(("#", '"')) and line.split(":")[0].isidentifier():
                assert lines[i - 1].startswith("#:"), f"{cls.__name__}: {line} has no #: comment"


def test_the_hook_page_matches_the_specs():
    checked = generate("--check")
    assert checked.returncode == 0, (
        f"{checked.stderr}docs/hooks-cloudbuild.md is out of date: run "
        ".venv/bin/python kits/flow-kit-cloudbuild/tests/test_cloudbuild_hook_docs.py")


def test_the_page_is_linked_from_the_guides():
    for page in ("writing-plugins.md", "cloud-build.md"):
        assert "hooks-cloudbuild.md" in (REPO / "docs" / page).read_text(encoding="utf-8"), page


if __name__ == "__main__":
    done = generate()
    print(done.stdout + done.stderr, end="")
    sys.exit(done.returncode)
