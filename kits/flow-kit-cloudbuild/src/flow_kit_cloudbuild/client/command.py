"""The ``flow publish`` click command: options only; the work is in :mod:`.publish`.

Imported when flow dispatches ``publish`` (and when it rebuilds its command manifest); it
imports click and nothing heavy.
"""

from __future__ import annotations

from typing import Any

import click

from flow_kit_cloudbuild.protocol import DEFAULT_TIMEOUT


@click.command()
@click.option("--server", metavar="URL",
              help="Build server URL (default: [tool.flow.cloudbuild] server, else "
                   "http://127.0.0.1:7001).")
@click.option("--token", metavar="TOKEN",
              help="Access token (default: $FLOW_CLOUDBUILD_TOKEN, else 'flow config set "
                   "cloudbuild.token'). Never read from project files.")
@click.option("--build-cmd", metavar="CMD",
              help="Build command, split like a shell would (no shell runs it); the server "
                   "allows only its allowlist. Default: [tool.flow.cloudbuild] build-cmd, "
                   "else the server's default for the project.")
@click.option("--branch", metavar="BRANCH", help="Branch to build with --source git "
                                                  "(default: the current branch).")
@click.option("--source", type=click.Choice(["git", "upload"]),
              help="Build the pushed branch (git; the default when the repository has a "
                   "remote) or upload the tracked files (upload).")
@click.option("--prod", is_flag=True, help="Publish a production release.")
@click.option("--timeout", type=click.IntRange(min=1), metavar="SECONDS",
              help=f"Task time limit on the server (default {DEFAULT_TIMEOUT}).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True, max=3600),
              metavar="SECONDS",
              help="How long connecting to the build server may take (default: "
                   "[tool.flow.cloudbuild] connect-timeout, else 5).")
@click.option("--detach", is_flag=True, help="Print the task id and return at once.")
@click.option("--attach", "attach_id", metavar="TASK",
              help="Follow a running or finished task from its first message.")
@click.option("--cancel", "cancel_id", metavar="TASK", help="Cancel a task.")
@click.option("--json", "json_mode", is_flag=True,
              help="Print the server's messages as JSON, one per line (for CI).")
@click.option("--force", is_flag=True,
              help="Overwrite an existing prod release of the same name and version "
                   "without asking.")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Build from scratch: use neither the server's build cache nor its install "
                   "cache (the result is still cached for the next publish).")
def publish(**options: object) -> None:
    """Build the project on a cloud build server and publish its artifacts.

    Streams the build's log live; exits 0 only when the build is done, and prints the
    deployment URL last (with --prod, the prod alias before it). Ctrl-C asks whether to
    cancel the task or detach from it.
    """
    from flow_kit_cloudbuild.client.publish import run

    run(**options)  # type: ignore[arg-type]


_SERVER_OPTIONS = [
    click.option("--server", metavar="URL", help="Build server URL (default: as for flow publish)."),
    click.option("--token", metavar="TOKEN", help="Access token (default: as for flow publish)."),
    click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True, max=3600),
                 metavar="SECONDS", help="How long connecting to the build server may take."),
    click.option("--json", "json_mode", is_flag=True, help="Print the server's answer as JSON."),
]


def _server_options(fn: Any) -> Any:
    for option in reversed(_SERVER_OPTIONS):
        fn = option(fn)
    return fn


@click.command()
@click.argument("task")
@_server_options
def promote(**options: Any) -> None:
    """Point the project's prod URL at TASK, an earlier successful build (rollback).

    The switch is atomic: the prod alias serves the old release until it serves TASK's.
    """
    from flow_kit_cloudbuild.client.releases import promote as run

    run(**options)


@click.command()
@click.argument("project", required=False)
@_server_options
def releases(**options: Any) -> None:
    """List PROJECT's releases (default: this project): its prod URL, branch URLs and history."""
    from flow_kit_cloudbuild.client.releases import releases as run

    run(**options)


@click.command()
@click.argument("target")
@click.option("--key", "key_file", required=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="The build server's public key (PEM), saved beforehand from the server's "
                   "/.well-known/flow/build-key.pub: the only key trusted (never one fetched from TARGET).")
@click.option("--statement", "statement_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="The signed provenance statement (default: TARGET's "
                   "/.well-known/flow/provenance.json).")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object.")
def verify(**options: Any) -> None:
    """Check that TARGET (a deployment URL or a directory) is what the build server built.

    The signed provenance statement must verify with --key, and every file it names must have
    its sha256 (a directory may hold no other file). Exits 0 with a summary, else 1 with the
    first mismatch.
    """
    from flow_kit_cloudbuild.client.verify import run

    run(**options)
