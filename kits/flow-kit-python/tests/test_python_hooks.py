"""The kit's own hooks (flow_kit_python.hookspecs) as a kit-bound plugin meets them: a small
plugin, installed from its folder beside the kit into a fresh FLOW_HOME, implements all four and
logs what it was given; real ``flow build`` and ``flow test`` runs (flowcore.testing only).
The adding of extra files to a wheel and an sdist is checked on its own at the end."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from flowcore.testing import FlowRunner

KIT = Path(__file__).resolve().parent.parent
MakeProject = Callable[..., Path]

PROBE = {
    "pyproject.toml": """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "flow-plugin-probe"
version = "0.1.0"
dependencies = ["flowcore>=0.1"]

[project.entry-points."flow.plugins"]
flow-plugin-probe = "flow_plugin_probe"
""",
    "flow_plugin_probe/__init__.py": '''\
import json
import os

from flowcore.api import hookimpl

FLOW_BUILD_KITS = ["flow-kit-python"]
FLOW_API = ">=1"


def log(**record):
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(json.dumps(record, default=str) + "\\n")


@hookimpl
def flow_python_before_build(context, project, outdir, targets):
    log(hook="before_build", plugin=context.plugin, project=project, outdir=outdir, targets=targets)
    return [{"path": "demo/extra.txt", "content": "from the probe\\n"}]


@hookimpl
def flow_python_built(artifacts):
    log(hook="built", artifacts=artifacts)


@hookimpl
def flow_python_test_args(project, args):
    log(hook="test_args", args=args)
    return ["-k", "not slow"]


@hookimpl
def flow_python_test_result(exit_code, duration):
    log(hook="test_result", exit_code=exit_code, duration=duration)
''',
}

PROJECT = {
    "pyproject.toml": """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "demo"
version = "0.1.0"
requires-python = ">=3.11"

[dependency-groups]
test = ["pytest"]

[tool.hatch.build]
dev-mode-dirs = ["src"]  # an editable install offline without `editables` (as the templates do)

[tool.flow]
buildkit = "flow-kit-python"
""",
    "src/demo/__init__.py": "",
    ".gitignore": ".flow/\n",  # the project's plugin environment is no part of the sdist
    "tests/test_demo.py": "def test_fast():\n    pass\n\n\ndef test_slow():\n    assert False\n",
}


def _records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_kit_bound_plugin_changes_the_build_and_the_test_run(
        flow: FlowRunner, make_project: MakeProject, tmp_path: Path) -> None:
    probe = tmp_path / "flow-plugin-probe"
    for rel, text in PROBE.items():
        (probe / rel).parent.mkdir(parents=True, exist_ok=True)
        (probe / rel).write_text(text)
    flow.install_kit(KIT)
    project = make_project("demo", files=PROJECT, trust=True)
    flow.install_plugin(probe, cwd=project)  # a project loads its own plugins
    log = tmp_path / "probe.jsonl"

    result = flow.run("build", cwd=project, env={"PROBE_LOG": str(log)})
    assert result.exit_code == 0, result.stderr
    before, built = _records(log)
    assert before == {"hook": "before_build", "plugin": "flow-plugin-probe", "project": str(project),
                      "outdir": str(project / "dist"), "targets": ["sdist", "wheel"]}
    wheel = project / "dist" / "demo-0.1.0-py3-none-any.whl"
    assert zipfile.ZipFile(wheel).read("demo/extra.txt") == b"from the probe\n"
    assert built["artifacts"] == [
        {"path": str(wheel), "kind": "wheel", "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
        {"path": str(project / "dist" / "demo-0.1.0.tar.gz"), "kind": "sdist",
         "sha256": hashlib.sha256((project / "dist" / "demo-0.1.0.tar.gz").read_bytes()).hexdigest()}]

    log.unlink()
    result = flow.run("test", "-q", cwd=project, env={"PROBE_LOG": str(log)})
    assert result.exit_code == 0, result.output + result.stderr   # the probe deselected test_slow
    assert "1 passed, 1 deselected" in result.output
    args, ended = _records(log)
    assert args == {"hook": "test_args", "args": ["-q"]}
    assert ended["hook"] == "test_result" and ended["exit_code"] == 0
    assert isinstance(ended["duration"], float) and ended["duration"] > 0


# --------------------------------------------------------------------------------------------
# extra files in a built wheel and sdist (flow_kit_python.artifacts)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    """A wheel and an sdist as a backend writes them (the demo project's, by hand)."""
    wheel = tmp_path / "demo-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 0.1.0\n")
        zf.writestr("demo-0.1.0.dist-info/RECORD",
                    "demo/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
                    "demo-0.1.0.dist-info/METADATA,,\ndemo-0.1.0.dist-info/RECORD,,\n")
    sdist = tmp_path / "demo-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("demo-0.1.0/PKG-INFO", "demo-0.1.0/src/demo/__init__.py"):
            info = tarfile.TarInfo(name)
            tf.addfile(info, None)
    return wheel, sdist


def test_extra_files_go_in_before_the_metadata_with_their_record_line(built: tuple[Path, Path]) -> None:
    from flow_kit_python.artifacts import add_to_sdist, add_to_wheel

    wheel, sdist = built
    extra = [{"path": "demo/_x.py", "content": "X = 1\n", "source": "src/demo/_x.py"}]
    add_to_wheel(wheel, extra)  # type: ignore[arg-type]
    add_to_sdist(sdist, extra)  # type: ignore[arg-type]
    with zipfile.ZipFile(wheel) as zf:
        assert zf.namelist() == ["demo/__init__.py", "demo/_x.py", "demo-0.1.0.dist-info/METADATA",
                                 "demo-0.1.0.dist-info/RECORD"]
        record = zf.read("demo-0.1.0.dist-info/RECORD").decode().splitlines()
        assert record[-2].startswith("demo/_x.py,sha256=") and record[-2].endswith(",6")
        assert record[-1] == "demo-0.1.0.dist-info/RECORD,,"
    with tarfile.open(sdist) as tf:
        member = tf.extractfile("demo-0.1.0/src/demo/_x.py")
        assert member is not None and member.read() == b"X = 1\n"


@pytest.mark.parametrize(("path", "message"), [
    ("demo/__init__.py", "adds demo/__init__.py to demo-0.1.0-py3-none-any.whl, which already has it"),
    ("other/_x.py", "has no folder other/"),
])
def test_an_extra_file_that_cannot_go_in_is_one_line(built: tuple[Path, Path], path: str, message: str) -> None:
    from flow_kit_python.artifacts import add_to_wheel
    from flowcore.api import FlowError

    with pytest.raises(FlowError, match=message):
        add_to_wheel(built[0], [{"path": path, "content": ""}])
    assert zipfile.ZipFile(built[0]).namelist()[1:2] == ["demo-0.1.0.dist-info/METADATA"]  # untouched


@pytest.mark.parametrize("files", [
    [{"path": "../evil.py", "content": ""}],
    [{"path": "/abs.py", "content": ""}],
    [{"path": "demo/a.py", "content": ""}, {"path": "demo/a.py", "content": "again"}],
    [{"path": "demo/a.py", "content": b"bytes"}],
])
def test_extra_files_are_checked_before_the_build(files: list[dict[str, object]]) -> None:
    from flow_kit_python.artifacts import check_extra_files
    from flowcore.api import FlowError

    with pytest.raises(FlowError, match="flow_python_before_build plugin"):
        check_extra_files(files)  # type: ignore[arg-type]
