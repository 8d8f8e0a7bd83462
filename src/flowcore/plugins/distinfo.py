"""Distribution metadata read straight from ``.dist-info`` folders.

The PluginSystem (which entry points does distribution X declare?) and the installer (which
distributions does the managed environment hold?) need a few lines of metadata each. Asking
``importlib.metadata`` costs its import (~8 ms, it pulls in ``email``, ``zipfile``, ``csv``...)
and an email parse per distribution; reading the folder names, ``entry_points.txt`` and the
headers of ``METADATA`` costs a ``listdir`` and a few small reads.

The search is importlib.metadata's own (``MetadataPathFinder``): the path entries in order; in
each, the ``*.dist-info``/``*.egg-info`` folders whose lowercased name up to the first ``-``
normalises (PEP 503, dashes as underscores) to the name looked for, in ``listdir`` order. Where
that search could find something else (a zip or an ``.egg`` on the path, a finder on
``sys.meta_path`` that provides distributions of its own, an ``.egg-info`` whose requirements are
in ``requires.txt``), the functions here return ``None`` and the caller asks importlib.metadata.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from flowcore.config.environment import canonical_name


def _normalize(name: str) -> str:
    """importlib.metadata's ``Prepared.normalize``: PEP 503 plus dashes as underscores."""
    return canonical_name(name).replace("-", "_")


def _plain_finders() -> bool:
    """Whether importlib.metadata would search the path only (no other finder on
    ``sys.meta_path`` provides distributions)."""
    from importlib.machinery import PathFinder

    return all(f is PathFinder or getattr(f, "find_distributions", None) is None
               for f in sys.meta_path)


def metadata_dirs(paths: Iterable[str], name: str | None = None,
                  listings: dict[str, list[str]] | None = None) -> list[str] | None:
    """The metadata folders of the distributions on ``paths`` (only those of ``name``, if
    given), in the order ``importlib.metadata.distributions`` yields them; ``None`` when only
    importlib.metadata can tell (see the module docs). ``listings`` caches ``listdir``."""
    if not _plain_finders():
        return None
    wanted = _normalize(name) if name is not None else None
    out: list[str] = []
    for root in paths:
        if os.path.basename(root).lower().endswith(".egg"):
            return None
        children = listings.get(root) if listings is not None else None
        if children is None:
            try:
                children = os.listdir(root or ".")
            except OSError:
                if os.path.isfile(root):
                    return None  # a zip: importlib.metadata looks inside
                children = []
            if listings is not None:
                listings[root] = children
        groups: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                key = _normalize(low.rpartition(".")[0].partition("-")[0])
                if wanted is None or key == wanted:
                    groups.setdefault(key, []).append(os.path.join(root, child))
        for found in groups.values():
            out += found
    return out


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def entry_points(meta_dir: str) -> list[tuple[str, str, str]]:
    """``(group, name, value)`` of every entry point in ``meta_dir/entry_points.txt``, in file
    order, parsed as importlib.metadata parses it."""
    text = _read(os.path.join(meta_dir, "entry_points.txt"))
    out: list[tuple[str, str, str]] = []
    group: str | None = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line.strip("[]")
            continue
        name, sep, value = line.partition("=")
        if group is not None and sep:
            out.append((group, name.strip(), value.strip()))
    return out


def headers(meta_dir: str) -> dict[str, list[str]] | None:
    """The headers of ``meta_dir``'s ``METADATA`` (else ``PKG-INFO``), by lowercased name, as
    the email parser importlib.metadata uses reads them; ``None`` when there is neither."""
    text = _read(os.path.join(meta_dir, "METADATA"))
    if text is None:
        text = _read(os.path.join(meta_dir, "PKG-INFO"))
    if text is None:
        return None
    out: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line[:1] in (" ", "\t") and last is not None:
            last[-1] += line  # a folded header goes on
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or line.strip() == "":
            break  # the blank line (or anything that is not a header) ends the headers
        last = out.setdefault(key.lower(), [])
        last.append(value.lstrip(" \t"))
    return {k: [v.rstrip("\r\n") for v in values] for k, values in out.items()}
