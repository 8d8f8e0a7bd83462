"""Docs are tests: the shell examples of README.md and docs/ run as written.

Each document listed in RUN is run block by block, in order, in one bash session (so `cd` and
`export` carry over, as for a reader), with a HOME that holds nothing but a fresh copy of the
clone at ~/flow (where the pages that install this repository's kits and plugins from a path say
the clone is: `export FLOW_REPO=~/flow`), and no FLOW_HOME. Every other shell block must carry
the visible "Not run by the docs tests: ..." line (see docs_blocks.py), so a new example is
either run or says why not.

No package index is configured: these kits and plugins are on no public index, so a page that
installed them by name would fail on a reader's fresh machine (and would install whatever
someone registered under that name). A page installs them from a path, or points flow at an
index itself, visibly, before it installs by name (test_no_name_installs_before_an_index).

Differences from a reader's machine, each kept as small as it can be:
- the copy's `.venv` is this checkout's virtualenv (step 1 of the README creates it anew in CI:
  .ci/run runs the README literally in a fresh clone, with the network it needs for pip);
- installs are offline (UV_OFFLINE=1, no pip/uv configuration), as in every test here, and
  build a directory with flow's own hatchling (UV_NO_BUILD_ISOLATION=1) instead of one
  fetched from an index.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from docs_blocks import REPO, Block, blocks, documents, file_blocks, matches, name_installs
from offline import offline_env

#: Documents whose shell blocks tests run, in order, here, and how: ``cwd`` "clone" (the root of
#: the copy of the clone) or "work" (an empty folder, flow on PATH as a user has it);
#: ``files_into``: the files the guide shows whole are written into that folder first, as a
#: reader would. No entry gets a package index: see the module's docstring.
RUN: dict[str, dict[str, object]] = {
    "README.md": {"cwd": "clone"},
    "docs/writing-plugins.md": {"cwd": "work", "files_into": "flow-plugin-greet"},
    "docs/writing-kits.md": {"cwd": "work", "files_into": "."},  # its file names name the folder
    "plugins/flow-plugin-env/README.md": {"cwd": "work"},
    "docs/create.md": {"cwd": "work"},
    "kits/flow-kit-python/README.md": {"cwd": "work"},
    "plugins/flow-plugin-templates/README.md": {"cwd": "work"},
    "plugins/flow-plugin-secretguard/README.md": {"cwd": "work"},
    "plugins/flow-plugin-buildinfo/README.md": {"cwd": "work"},
}

#: Only in this test (never in .ci/run): the virtualenv of step 1 exists already.
SUBSTITUTIONS = {
    'python3 -m venv .venv && .venv/bin/pip install -e . && ': "",
}


@dataclass
class Ran:
    """One command of a document (a console line, or an sh block whole) and what it printed."""
    command: str
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


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


def _run(block: Block, script: str, cwd: Path, env: dict[str, str],
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, start_new_session=True)
    assert done.returncode == 0, (f"{block.where} failed (exit {done.returncode}):\n{script}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return done


def _session_env(home: Path) -> dict[str, str]:
    env = offline_env(home / ".flow")
    env.pop("FLOW_HOME")          # the default, ~/.flow of the empty HOME
    env["HOME"] = str(home)
    # Offline, a directory's build backend (hatchling) comes from flow's own environment, which
    # the managed environment sees; with an index (CI's literal run) uv fetches it.
    env["UV_NO_BUILD_ISOLATION"] = "1"
    env.pop("FLOW_CLOUDBUILD_TOKEN", None)
    env.pop("FLOW_CLOUDBUILD_TOKENS", None)
    return env


def run_document(path: Path, tmp_path: Path) -> list[Ran]:
    """Run every block of ``path`` in order in one shell state; what each command printed."""
    how = RUN[str(path.relative_to(REPO))]
    home = tmp_path / "home"
    home.mkdir()
    clone = _copy_of_the_clone(home / "flow")    # ~/flow: the pages' FLOW_REPO
    env = _session_env(home)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
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
    outputs: list[Ran] = []
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
                done = _run(block, script, start, env)
                os.replace(f"{state}.next", state)
                ran = Ran(command.line, done.stdout, done.stderr)
                missing = matches(command.expected, ran.text)
                assert missing is None, (f"{block.where}: `{command.line}` did not print {missing!r}; "
                                         f"it printed:\n{ran.text[-3000:]}")
                outputs.append(ran)
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


def test_no_name_installs_before_an_index():
    """A kit or plugin installed by name in any example (run or not) comes after the page pointed
    flow at an index (`flow config set indexUrl URL`); this repository's are installed from paths."""
    found = [where for doc in documents() for where in name_installs(doc)]
    assert found == [], ("these examples install by name with no package index configured on the "
                         "page (install from a path, or `flow config set indexUrl URL` first):\n"
                         + "\n".join(found))


def test_readme_quick_starts_run_as_written(tmp_path):
    if shutil.which("bwrap") is None or shutil.which("npm") is None:
        pytest.skip("the cloud quick start needs bubblewrap and npm (apt-get install bubblewrap npm)")
    _wait_for_port_7001()  # the quick start's server takes the default port
    outputs = run_document(REPO / "README.md", tmp_path)
    everything = "\n".join(ran.text for ran in outputs)
    assert "2 passed" in everything                       # quick start: the demo's tests
    # `flow publish` prints the deployment's URL last (docs/cloud-build.md): the site at its own origin
    publish = next(ran for ran in outputs if "flow publish" in ran.command)
    last = publish.stdout.rstrip("\n").splitlines()[-1]
    found = re.fullmatch(r"http://([0-9a-f]{24})\.localhost:7001/", last)
    assert found, f"the last line of `flow publish` is not the deployment's URL: {last!r}\n{publish.text[-3000:]}"
    assert f"flow: files: http://127.0.0.1:7001/artifacts/{found[1]}/" in publish.stderr  # the file list's URL
    clone = tmp_path / "home" / "flow"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == "", f"the quick starts left the clone dirty:\n{status.stdout}"


@pytest.mark.parametrize("doc", [d for d in RUN if d != "README.md"])
def test_documented_examples_run_as_written(doc, tmp_path):
    outputs = run_document(REPO / doc, tmp_path)
    assert outputs, f"{doc} has no example left to run; drop it from RUN"
    if doc == "docs/writing-kits.md":
        _the_kit_guides_plugin_changes_its_build(outputs, tmp_path / "work")


def _the_kit_guides_plugin_changes_its_build(outputs: list[Ran], work: Path) -> None:
    """docs/writing-kits.md, its kit and plugin written from its blocks: the plugin's hook changes
    what the kit's command builds, and with another kit active it is not loaded and says nothing."""
    written = {rel for rel, _, _ in file_blocks(REPO / "docs" / "writing-kits.md")}
    assert {"flow-kit-greet/pyproject.toml", "flow-plugin-shout/pyproject.toml"} <= written
    builds = [ran.stdout for ran in outputs if ran.command == "cat build/greetings.txt"]
    assert builds == ["hello Ada\nhello Grace\n", "HELLO ADA!\nHELLO GRACE!\n",
                      "AHOY ADA!\nAHOY GRACE!\n"], builds
    installs = [ran for ran in outputs if ran.command.startswith(("flow buildkit add", "flow plugin add"))]
    assert installs and all(ran.stderr == "" for ran in installs), [ran.stderr for ran in installs]
    other = next(ran for ran in outputs if ran.command.startswith("flow create --list"))
    assert other.stderr == "" and "shout" not in other.stdout, other.text
    once = next(ran for ran in outputs if ran.command.startswith("flow -k flow-kit-greet greet-build"))
    assert once.stderr == "", once.stderr
    assert (work / "build" / "greetings.txt").read_text() == "AHOY ADA!\nAHOY GRACE!\n"
