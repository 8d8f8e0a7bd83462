"""How ``flow publish`` shows a task: readable lines, or one JSON message per line (``--json``).

Human output: a ``==> step: what it does`` line when a step starts, then the step's output as
``step | line``; at the end the artifacts, and the artifact URL as the very last line (so
``flow publish | tail -n 1`` is the URL). With ``--json`` stdout carries the server's messages
unchanged, one per line, in ``seq`` order; client notices always go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from flow_kit_cloudbuild.protocol import ACTION_LOG, STATE_DONE, STEPS, log_lines

__all__ = ["Renderer"]


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Renderer:
    """Prints messages as they arrive; ``json_mode`` switches to one JSON object per line."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.step: str | None = None

    def notice(self, text: str) -> None:
        """A client-side remark (reconnecting, detaching): stderr, never mixed into --json."""
        click.echo(f"flow: {text}", err=True)

    def message(self, msg: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.json_mode:
            sys.stdout.write(json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        data = msg.get("data") or {}
        action = str(data.get("action"))
        payload = data.get("payload") or {}
        text = str(payload.get("message", ""))
        if action == ACTION_LOG:
            prefix = f"{payload.get('step') or self.step or 'log'} | "
            click.echo(prefix + f"\n{prefix}".join(log_lines(msg)) + "\n", nl=False)
        elif action in STEPS:
            self.step = action
            click.echo(f"==> {action}: {text}" if text else f"==> {action}")
        elif action == STATE_DONE:
            click.echo(f"==> done: {text}" if text else "==> done")
            for artifact in payload.get("artifacts") or []:
                if isinstance(artifact, dict):
                    click.echo(f"    {artifact.get('name')}  ({_size(artifact.get('size'))})  "
                               f"{artifact.get('url', '')}".rstrip())
        else:
            click.echo(f"==> {action}: {text}" if text else f"==> {action}")

    def result_url(self, url: str) -> None:
        """The artifact URL, printed last (human mode; --json has it in the final message)."""
        if not self.json_mode and not self.quiet and url:
            click.echo(url)

    def detached(self, task_id: str) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps({"taskId": task_id}) + "\n")
            sys.stdout.flush()
        else:
            click.echo(task_id)
