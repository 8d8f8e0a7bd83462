"""``flow build`` and ``flow test`` for a Python project.

Settings come from the kit's section: ``[tool.flow.python]`` in the project, over
``kitConfig.python`` in ``$FLOW_HOME/config.json`` (see ``CONFIG_SCHEMA`` in the package).
Plugins take part through the kit's own hooks (``flow_kit_python.hookspecs``), called through
``context.hook`` typed by ``PythonHooks``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import click

from flowcore.api import CoreContext, FlowError, UsageError, current, uv_binary

if TYPE_CHECKING:
    from flow_kit_python.hookspecs import BuiltArtifact, ExtraFile, PythonHooks

OFFLINE_VARS = ("FLOW_OFFLINE", "UV_OFFLINE", "PIP_NO_INDEX")
#: What makes a directory a Python project (setup.py/setup.cfg alone: setuptools builds it).
PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when the user asked for no network (so no index to fetch a build backend from)."""
    return any(_truthy(os.environ.get(name)) for name in OFFLINE_VARS)


def _context() -> CoreContext | None:
    try:
        return current()
    except LookupError:  # the command runs without flow (a plain click call)
        return None


def kit_hooks() -> PythonHooks | None:
    """The kit's hooks of this run (``None`` when the command runs without flow)."""
    context = _context()
    return cast("PythonHooks", context.hook) if context is not None else None


def _lists_of_strings(results: list[Any], hook: str) -> list[str]:
    """The concatenated results of ``hook``; anything but a list of strings is a plugin's bug."""
    out: list[str] = []
    for result in results:
        if not isinstance(result, list) or not all(isinstance(a, str) for a in result):
            raise FlowError(f"a {hook} plugin returned {result!r}, not a list of strings",
                            "Fix or remove that plugin (flow plugin list shows them)")
        out += result
    return out


def project_root(ctx: click.Context) -> Path:
    """The root of the flow project flow is running in; a Python one."""
    context = _context()
    root = context.project_root if context is not None else None
    if root is None:
        raise UsageError(f"{Path.cwd()} is not inside a flow project",
                         "Adopt an existing project in its root folder with: flow init -k "
                         "flow-kit-python, or create one: flow create NAME -k flow-kit-python")
    if not any((root / name).is_file() for name in PROJECT_FILES):
        raise UsageError(f"{root} has no pyproject.toml, setup.py or setup.cfg, so it is not a "
                         "Python project", "Add one, or use another build kit for this project")
    return root


def settings(ctx: click.Context) -> dict[str, Any]:
    """The kit's merged config section (the project's table over the global one)."""
    context = _context()
    return dict(context.config.section) if context is not None else {}


def _choice(value: Any, allowed: tuple[str, ...], key: str) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    value = str(value)
    if value not in allowed:
        raise UsageError(f"[tool.flow.python] {key} = {value!r} is not one of "
                         f"{', '.join(allowed)}", "Fix the project's pyproject.toml")
    return value


def kit_python() -> str:
    """The interpreter of the environment this kit is installed in.

    In flow's managed environment it sees flowcore's packages and the kit's dependencies
    (hatchling), so a build without isolation finds the backend there.
    """
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyvenv.cfg").is_file() and (parent / "bin" / "python").exists():
            return str(parent / "bin" / "python")
    return sys.executable


def _run(cmd: list[str], cwd: Path, what: str, fix: str, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` with its output shown; an unstartable tool is a one-line error."""
    try:
        return subprocess.run(cmd, cwd=cwd, check=False, env=env).returncode
    except OSError as exc:
        raise FlowError(f"{what}: cannot run {cmd[0]}: {exc.strerror}", fix) from exc


# --------------------------------------------------------------------------------------------
# flow build
# --------------------------------------------------------------------------------------------


def build_command(root: Path, out_dir: Path, isolated: bool, tool: str) -> list[str]:
    uv = uv_binary() if tool in ("auto", "uv") else None
    if tool == "uv" and uv is None:
        raise FlowError("build-tool is uv, but uv is not installed", "Install uv")
    if uv is not None:
        cmd = [uv, "build", "--out-dir", str(out_dir)]
        if not isolated:
            cmd += ["--no-build-isolation", "--python", kit_python()]
        return [*cmd, str(root)]
    python = kit_python()
    probe = subprocess.run([python, "-c", "import build"], capture_output=True, check=False)
    if probe.returncode != 0:
        raise FlowError("neither uv nor python -m build is available",
                        "Install uv (pip install uv) or build (pip install build)")
    cmd = [python, "-m", "build", "--outdir", str(out_dir)]
    if not isolated:
        cmd.append("--no-isolation")
    return [*cmd, str(root)]


@click.command(name="build")
@click.option("--no-isolation", is_flag=True,
              help="Build with the flow environment's build backend instead of an isolated one.")
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Where to write the sdist and wheel (default: dist/, or dist-dir).")
@click.option("-w", "--watch", is_flag=True,
              help="Rebuild whenever a file that goes into the distribution changes (Ctrl-C stops).")
@click.pass_context
def build(ctx: click.Context, no_isolation: bool, out_dir: Path | None, watch: bool) -> None:
    """Build the project's sdist and wheel into dist/ (uv build, else python -m build)."""
    root = project_root(ctx)
    conf = settings(ctx)
    if not watch:
        build_once(root, conf, no_isolation, out_dir)
        return
    from flow_kit_python.watch import watch_build

    watch_build(ctx, root, conf, lambda: build_once(root, conf, no_isolation, out_dir))


def build_once(root: Path, conf: dict[str, Any], no_isolation: bool, out_dir: Path | None) -> list[Path]:
    """One build; the paths of the sdist and wheel it wrote."""
    mode = _choice(conf.get("build-isolation", "auto"), ("auto", "true", "false"),
                   "build-isolation")
    tool = _choice(conf.get("build-tool", "auto"), ("auto", "uv", "build"), "build-tool")
    isolated = not no_isolation and (mode == "true" or (mode == "auto" and not offline()))
    dest = (root / (out_dir or Path(str(conf.get("dist-dir", "dist"))))).resolve()
    cmd = build_command(root, dest, isolated, tool)
    hooks = kit_hooks()
    extra: list[ExtraFile] = []
    if hooks is not None:
        for result in hooks.flow_python_before_build(project=root, outdir=dest,
                                                     targets=["sdist", "wheel"]):
            if not isinstance(result, list):
                raise FlowError(f"a flow_python_before_build plugin returned {result!r}, not a "
                                "list of files", "Fix or remove that plugin (flow plugin list shows them)")
            extra += result
        from flow_kit_python.artifacts import check_extra_files

        check_extra_files(extra)
    click.echo(f"building {root.name} ({'isolated' if isolated else 'no isolation'}) "
               f"with {Path(cmd[0]).name}", err=True)
    start = time.time() - 1
    code = _run(cmd, root, "build failed", "Install uv or build")
    if code != 0:
        fix = "See the output above"
        if isolated:
            fix += ("; offline, build without isolation: flow build --no-isolation "
                    "(or set FLOW_OFFLINE=1)")
        raise FlowError(f"build failed ({Path(cmd[0]).name} exited with {code})", fix)
    built = sorted(p for p in dest.glob("*") if p.name.endswith((".whl", ".tar.gz"))
                   and p.stat().st_mtime >= start)
    if hooks is not None:
        _finish(hooks, root, built, extra)
    for path in built:
        click.echo(f"built {path.relative_to(root) if path.is_relative_to(root) else path}")
    return built


def _finish(hooks: PythonHooks, root: Path, built: list[Path], extra: list[ExtraFile]) -> None:
    """Add the plugins' extra files to what was built, then tell the plugins what it is."""
    from flow_kit_python.artifacts import add_to_sdist, add_to_wheel, sha256_of

    artifacts: list[BuiltArtifact] = []
    for path in built:
        kind: Literal["wheel", "sdist"] = "wheel" if path.suffix == ".whl" else "sdist"
        (add_to_wheel if kind == "wheel" else add_to_sdist)(path, extra)
        artifacts.append({"path": path, "kind": kind, "sha256": sha256_of(path)})
    hooks.flow_python_built(project=root, artifacts=artifacts)


# --------------------------------------------------------------------------------------------
# flow test
# --------------------------------------------------------------------------------------------


def test_env_python(root: Path, mode: str, groups: list[str] | None = None) -> str:
    """The interpreter that runs the project's tests (see the kit's README, "flow test")."""
    venv = root / ".venv" / "bin" / "python"
    if mode == ".venv" or (mode == "auto" and venv.exists()):
        if not venv.exists():
            raise UsageError(f"test-env is .venv, but {root / '.venv'} does not exist",
                             "Create it (uv venv), or set test-env = \"auto\"")
        return str(venv)
    from flow_kit_python.testenv import ensure_test_env

    return ensure_test_env(root, offline(), groups, build_python=kit_python())


def _has_pytest(env_dir: Path, python: str, env: dict[str, str]) -> bool:
    """Whether the test interpreter can import pytest: a look into its site-packages, else
    (pytest elsewhere on its path) a probe, which costs a Python start."""
    if any(env_dir.glob("lib/python3*/site-packages/pytest/__init__.py")):
        return True
    probe = subprocess.run([python, "-c", "import pytest"], capture_output=True, check=False, env=env)
    return probe.returncode == 0


@click.command(name="test", context_settings={"ignore_unknown_options": True})
@click.option("-w", "--watch", is_flag=True,
              help="Rerun the tests whenever a file changes, failed ones first (Ctrl-C stops).")
@click.option("--no-clear", is_flag=True, help="With --watch: do not clear the terminal between runs.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def test(ctx: click.Context, watch: bool, no_clear: bool, pytest_args: tuple[str, ...]) -> None:
    """Run the project's tests with pytest (extra arguments go to pytest)."""
    root = project_root(ctx)
    conf = settings(ctx)
    mode = _choice(conf.get("test-env", "auto"), ("auto", ".venv", "flow"), "test-env")
    extra = conf.get("test-args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise UsageError("[tool.flow.python] test-args must be a list of strings",
                         "Fix the project's pyproject.toml")
    groups = conf.get("test-groups")
    if groups is not None and (not isinstance(groups, list)
                               or not all(isinstance(g, str) for g in groups)):
        raise UsageError("[tool.flow.python] test-groups must be a list of strings",
                         "Fix the project's pyproject.toml")
    python = test_env_python(root, mode, groups)
    from flow_kit_python.testenv import clean_env

    env = clean_env(Path(python).parent.parent)  # nothing of flow's own Python path leaks in
    if not _has_pytest(Path(python).parent.parent, python, env):
        raise FlowError(f"pytest is not installed for {python}",
                        "Add pytest to the project's test dependencies and install them")
    hooks = kit_hooks()
    added: list[str] = []
    if hooks is not None:
        added = _lists_of_strings(hooks.flow_python_test_args(
            project=root, args=[*extra, *pytest_args]), "flow_python_test_args")
    argv = [python, "-m", "pytest", *extra, *added, *pytest_args]

    def told(code: int, duration: float) -> None:
        if hooks is not None:
            hooks.flow_python_test_result(project=root, exit_code=code, duration=duration)

    if watch:
        from flow_kit_python.watch import watch_tests

        watch_tests(ctx, root, conf, argv, clear=not no_clear, env=env, on_result=told)
        return
    start = time.monotonic()
    code = _run(argv, root, "tests failed", "", env=env)
    told(code, time.monotonic() - start)
    ctx.exit(code)
