"""flow-plugin-env: ``flow env`` prints the facts a bug report about flow needs.

A general plugin (no ``FLOW_BUILD_KITS``): it loads with every kit and outside any kit, so the
command is there exactly when something is wrong with a kit.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import click

from flowcore.api import CoreContext, Registry, current, hookimpl

FLOW_API = ">=1"


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def collect(context: CoreContext | None) -> dict[str, Any]:
    """The report as a mapping. ``context`` is this plugin's context in the run, or None."""
    from flowcore.api import FLOW_API_VERSION, __version__, flow_home

    report: dict[str, Any] = {
        "flow": __version__,
        "pluginApi": FLOW_API_VERSION,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "FLOW_HOME": str(flow_home()) + ("" if os.environ.get("FLOW_HOME") else " (default)"),
        "scope": None,
        "projectRoot": None,
        "activeKit": None,
        "plugins": [],
    }
    if context is None:
        return report
    report["scope"] = context.scope
    report["projectRoot"] = str(context.project_root) if context.project_root else None
    report["activeKit"] = context.active_kit
    if context.active_kit:
        report["activeKitVersion"] = _version(context.active_kit)
    report["plugins"] = [
        {"name": name, "kind": kind, "version": _version(name)}
        for name, kind in context.plugins_to_load
    ]
    return report


def render(report: dict[str, Any]) -> str:
    kit = report["activeKit"] or "(none)"
    if report.get("activeKitVersion"):
        kit += f" {report['activeKitVersion']}"
    plugins = ", ".join(
        f"{p['name']} {p['version'] or '(not installed)'} ({p['kind']})" for p in report["plugins"]
    )
    lines = [
        f"flow: {report['flow']} (plugin API {report['pluginApi']})",
        f"python: {report['python']}",
        f"platform: {report['platform']}",
        f"FLOW_HOME: {report['FLOW_HOME']}",
        f"scope: {report['scope'] or '(unknown)'}",
        f"project root: {report['projectRoot'] or '(none)'}",
        f"active kit: {kit}",
        f"plugins: {plugins or '(none)'}",
    ]
    return "\n".join(lines)


@click.command(name="env")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def env(ctx: click.Context, as_json: bool) -> None:
    """Show flow's version, paths, scope, kit and plugins (paste it into bug reports)."""
    try:
        context: CoreContext | None = current()
    except LookupError:  # run without flow (a plain click call)
        context = None
    report = collect(context)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


@hookimpl
def flow_register_commands(registry: Registry) -> None:
    registry.add(env)
