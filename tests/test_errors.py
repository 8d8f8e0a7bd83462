"""The one error handler: one line for expected and unexpected failures, tracebacks on --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from offline import offline_env

RAISING = """
import click
from flowcore.cli import main as cli
from flowcore.registry.builtins import BUILTIN_COMMANDS

@click.command()
def boom():
    raise RuntimeError("kaboom")

BUILTIN_COMMANDS["boom"] = ("__main__:boom", "Raise.")
cli.main(sys.argv[1:])
"""


def _run(flow_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys\n" + RAISING, *args],
                          env=offline_env(flow_home), capture_output=True, text=True, timeout=60)


def test_unexpected_error_is_one_line_with_debug_log(flow_home: Path) -> None:
    result = _run(flow_home, "boom")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flow: error: unexpected RuntimeError: kaboom.")
    log_path = Path(lines[0].split("Full traceback in ")[1].split(" (rerun")[0])
    assert "Traceback" in log_path.read_text()
    assert "kaboom" in log_path.read_text()


def test_debug_prints_the_traceback(flow_home: Path) -> None:
    result = _run(flow_home, "--debug", "boom")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: kaboom" in result.stderr


def test_usage_errors_exit_2_with_one_line(run_flow) -> None:
    for args in (("no-such-command",), ("config", "get"), ("--root",)):
        result = run_flow(*args)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("flow: error: "), result.stderr
        assert "--help" in lines[0]


def test_version_and_help(run_flow) -> None:
    from flowcore._base.version import __version__

    result = run_flow("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"flow {__version__}"
    result = run_flow("--help")
    assert result.returncode == 0
    for option in ("--debug", "--global", "--build-kit", "--no-check-latest", "--root",
                   "--config"):
        assert option in result.stdout
