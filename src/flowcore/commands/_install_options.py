"""The offline options every ``add`` command takes (``--find-links``, ``--no-index``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def install_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--no-index", is_flag=True,
                        help="Do not use a package index (only --find-links and paths).")(func)
    func = click.option("--find-links", "find_links", multiple=True, metavar="DIR",
                        help="Also look for distributions in DIR (repeatable).")(func)
    return func


def announce_source(flow: Any, no_index: bool) -> None:
    """Say on stderr where names will be downloaded from, when it is not the installer's default
    (an index URL, extra indexes, find-links): a project's or environment's setting decides what
    ``flow plugin add NAME`` installs, so the user sees which one before it runs."""
    from flowcore.config.package_source import describe

    flow.config.package_source()  # a bad setting is the error, before anything is announced
    for name, shown in describe(flow.config).items():
        value = shown["value"]
        if not value or (no_index and name != "findLinks"):
            continue
        text = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"flow: {name} {text} (from {shown['from']})", err=True)
