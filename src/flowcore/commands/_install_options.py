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
