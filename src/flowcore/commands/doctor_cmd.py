"""``flow doctor``: compare the flow environments with the config, and rebuild them.

The config is the source of truth; the environments are caches of it. Exit code 0 means every
kit and plugin in the config is installed and imports, 1 means problems remain.
"""

from __future__ import annotations

from typing import Any

import click

from flowcore._base.errors import InstallError
from flowcore._base.printable import printable
from flowcore.cli.app import Flow
from flowcore.packages import doctor as env_doctor


@click.command()
@click.option("--fix", is_flag=True, help="Reinstall what is missing or broken, remove extras.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON (keys: ok, problems, and with --fix: fixed, "
                   "remaining).")
@click.pass_obj
def doctor(flow: Flow, fix: bool, as_json: bool) -> None:
    """Check that what the config lists is installed and loads; --fix rebuilds it."""
    packages = flow.packages
    problems = env_doctor.diagnose(packages)
    if as_json:
        return _doctor_json(packages, problems, fix)
    if not problems:
        total = sum(len(v) for v in packages.expected().values())
        click.echo(f"ok: all {total} kits and plugins in the config are installed and load")
        return
    # problems name kits and plugins from the config and carry their import errors: no controls
    for problem in problems:
        click.echo(printable(str(problem)))
    if not fix:
        raise InstallError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found",
                           "Run: flow doctor --fix")
    for line in env_doctor.fix(packages):
        click.echo(printable(line))
    remaining = env_doctor.diagnose(packages)
    for problem in remaining:
        click.echo(printable(f"still {problem}"))
    if remaining:
        n = len(remaining)
        raise InstallError(f"{n} problem{'s remain' if n != 1 else ' remains'} after --fix",
                           "See the lines above")
    click.echo("fixed: the environments match the config")


def _problem(problem: Any) -> dict[str, str]:
    return {"scope": problem.scope, "kind": problem.kind, "name": problem.name,
            "detail": problem.detail}


def _doctor_json(packages: Any, problems: list[Any], fix: bool) -> None:
    """``flow doctor --json``: the same checks and exit code, one JSON object on stdout."""
    import json

    out: dict[str, Any] = {"ok": not problems, "problems": [_problem(p) for p in problems]}
    remaining = problems
    if fix:
        out["fixed"] = env_doctor.fix(packages) if problems else []
        remaining = env_doctor.diagnose(packages) if problems else []
        out["remaining"] = [_problem(p) for p in remaining]
        out["ok"] = not remaining
    click.echo(json.dumps(out, indent=2))
    if remaining:
        n = len(remaining)
        raise InstallError(f"{n} problem{'s' if n != 1 else ''} "
                           f"{'remain after --fix' if fix else 'found'}",
                           "See the JSON above" if fix else "Run: flow doctor --fix")
