"""Docs are tests: the shell examples of README.md and docs/ run as written.

Each document listed in RUN is run block by block, in order, in one bash session (so `cd` and
`export` carry over, as for a reader), in a fresh copy of the clone with an empty HOME and no
FLOW_HOME. Every other shell block must carry the visible "Not run by the docs tests: ..." line
(see docs_blocks.py), so a new example is either run or says why not.

Differences from a reader's machine, each kept as small as it can be:
- the copy's `.venv` is this checkout's virtualenv (step 1 of the README creates it anew in CI:
  .ci/run runs the README literally in a fresh clone, with the network it needs for pip);
- installs are offline (UV_OFFLINE=1, no pip/uv configuration), as in every test here, and
  build a directory with flow's own hatchling (UV_NO_BUILD_ISOLATION=1) instead of one
  fetched from an index.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import offline_env
from docs_blocks import REPO, Block, blocks, documents, file_blocks, matches

#: Documents whose shell blocks tests run, in order, here, and how: ``cwd`` "clone" (the root of
#: the copy of the clone) or "work" (an empty folder, flow on PATH as a user has it);
#: ``index``: names install from this repo's wheels on a PEP 503 index on loopback, which the
#: run points flow at with FLOW_INDEX_URL (a team points flow at its own index the same way, or
#: with `flow config set indexUrl`, docs/plugins.md); ``files_into``: the files the guide shows
#: whole are written into that folder first, as a reader would.
RUN: dict[str, dict[str, object]] = {
    "README.md": {"cwd": "clone"},
    "docs/writing-plugins.md": {"cwd": "work", "index": True, "files_into": "flow-plugin-greet"},
    "plugins/flow-plugin-env/README.md": {"cwd": "work", "index": True},
    "docs/create.md": {"cwd": "work", "index": True},
    "kits/flow-kit-python/README.md": {"cwd": "work", "index": True},
    "plugins/flow-plugin-templates/README.md": {"cwd": "work", "index": True},
}

#: Only in this test (never in .ci/run): the virtualenv of step 1 exists already.
SUBSTITUTIONS = {
    'python3 -m venv .venv && .venv/bin/pip install -e . && ': "",
}


def _copy_of_the_clone(dest: Path) -> Path:
    """The files of this checkout that git would show (tracked, or new and not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "clone"],
                   cwd=dest, check=True)
    return dest


def _run(block: Block, script: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, start_new_session=True)
    assert done.returncode == 0, (f"{block.where} failed (exit {done.returncode}):\n{script}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def _session_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = offline_env(home / ".flow")
    env.pop("FLOW_HOME")          # the default, ~/.flow of the empty HOME
    env["HOME"] = str(home)
    # Offline, a directory's build backend (hatchling) comes from flow's own environment, which
    # the managed environment sees; with an index (CI's literal run) uv fetches it.
    env["UV_NO_BUILD_ISOLATION"] = "1"
    env.pop("FLOW_CLOUDBUILD_TOKEN", None)
    env.pop("FLOW_CLOUDBUILD_TOKENS", None)
    return env


def run_document(path: Path, tmp_path: Path, index_url: str | None = None) -> list[str]:
    """Run every block of ``path`` in order in one shell state; the outputs, one per block."""
    how = RUN[str(path.relative_to(REPO))]
    clone = _copy_of_the_clone(tmp_path / "flow")
    env = _session_env(tmp_path)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    if how.get("index"):
        assert index_url, "this document installs by name: pass the loopback index"
        from package_index import INDEX_ENV

        # FLOW_OFFLINE: flow-kit-python builds with flow's own backend instead of fetching
        # one from an index (uv's own index is not flow's: it would reach the network)
        env.update(INDEX_ENV, FLOW_INDEX_URL=index_url, FLOW_OFFLINE="1")
    start = clone
    if how.get("cwd") == "work":
        start = tmp_path / "work"
        start.mkdir()
    if how.get("files_into"):
        for rel, text, _ in file_blocks(path):
            target = start / str(how["files_into"]) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    state = tmp_path / "state.sh"   # cwd and exported variables carried from block to block
    state.write_text(f"cd {start}\n")
    outputs: list[str] = []
    jobs = tmp_path / "jobs"
    try:
        for block in blocks(path):
            if block.skip is not None:
                continue
            for command in block.commands():
                text = command.line
                for old, new in SUBSTITUTIONS.items():
                    text = text.replace(old, new)
                script = (f"source {state}\n{text}\n"
                          f"{{ echo \"cd $(printf %q \"$PWD\")\"; export -p; }} > {state}.next\n"
                          f"echo $$ >> {jobs}\n")
                out = _run(block, script, start, env)
                os.replace(f"{state}.next", state)
                missing = matches(command.expected, out)
                assert missing is None, (f"{block.where}: `{command.line}` did not print {missing!r}; "
                                         f"it printed:\n{out[-3000:]}")
                outputs.append(out)
    finally:  # background jobs a block left running (a server started with &): its process group
        if jobs.exists():
            for pid in filter(None, jobs.read_text().split()):
                try:
                    os.killpg(int(pid), signal.SIGTERM)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass
    return outputs


def _wait_for_port_7001(timeout: float = 30) -> None:
    """The README starts a server on flow's default port; one that is still stopping (CI's
    literal run of the README just before) gets a moment, anything else is a clear failure."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 7001))
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("127.0.0.1:7001 stays in use; the README's cloud quick start needs it")
        time.sleep(0.2)


def test_every_shell_example_is_run_or_says_why_not():
    unmarked = [b.where for doc in documents() for b in blocks(doc)
                if b.skip is None and str(doc.relative_to(REPO)) not in RUN]
    assert unmarked == [], ("these shell examples are neither run by tests/test_docs.py nor marked "
                            "'*Not run by the docs tests: <why>.*':\n" + "\n".join(unmarked))


def test_readme_quick_starts_run_as_written(tmp_path):
    if shutil.which("bwrap") is None or shutil.which("npm") is None:
        pytest.skip("the cloud quick start needs bubblewrap and npm (apt-get install bubblewrap npm)")
    _wait_for_port_7001()  # the quick start's server takes the default port
    outputs = run_document(REPO / "README.md", tmp_path)
    everything = "\n".join(outputs)
    assert "2 passed" in everything                       # quick start: the demo's tests
    assert "/index.html" in outputs[-1] or "/index.html" in everything  # publish printed the site last
    clone = tmp_path / "flow"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == "", f"the quick starts left the clone dirty:\n{status.stdout}"


@pytest.mark.parametrize("doc", [d for d in RUN if d != "README.md"])
def test_documented_examples_run_as_written(doc, tmp_path, package_index):
    outputs = run_document(REPO / doc, tmp_path, index_url=package_index.url)
    assert outputs, f"{doc} has no example left to run; drop it from RUN"
