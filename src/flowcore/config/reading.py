"""Reading a config file safely: bounded in size, a regular file, not nested without end.

Shared by both configs (``global_config``, ``project_config``), so that every config file flow
reads (config.json, pyproject.toml, flow.toml) fails the same way: one line naming the file,
what is wrong and the fix, never a read without end or a ``RecursionError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowcore._base.errors import ConfigError
from flowcore._base.fileio import FileTooLarge, NotARegularFile, read_limited

#: The largest config file flow reads (config.json, pyproject.toml, flow.toml); a bigger one, or
#: one that is not a regular file (a FIFO, /dev/zero), is an error instead of a read without end.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def read_config(path: str | Path, aside: str) -> bytes | None:
    """The bytes of a config file, None when there is none; ConfigError when it cannot be one.

    ``aside`` ends each fix: how to do without the file ("move it aside to ...").
    """
    try:
        return read_limited(path, MAX_CONFIG_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotARegularFile as exc:
        raise ConfigError(f"{path} is {exc.kind}, not a regular file",
                          f"Replace it with a regular file, or {aside}") from exc
    except FileTooLarge as exc:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, too large "
                          "for a config file", f"Shrink it, or {aside}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "Check its permissions") from exc


#: How deeply a config file may nest objects and arrays: flow's own keys need 3 levels, kits'
#: and plugins' sections a few more. Past it the file is refused with one line, never a
#: RecursionError from a parser or from code walking the data later.
MAX_CONFIG_DEPTH = 32


def unreadable(exc: BaseException) -> str:
    """Why a parser gave up on a file that is well-formed text: too deep, or a huge number."""
    if isinstance(exc, RecursionError):
        return "it nests objects or arrays too deeply"
    return f"it holds a number too large to read ({str(exc).split(';')[0].strip()})"


def shape_limit_problem(data: Any) -> str | None:
    """What makes parsed config data unusable although it parsed, if anything: nesting deeper
    than ``MAX_CONFIG_DEPTH`` or a string that is not valid Unicode (a lone surrogate from a
    ``\ud800`` escape, which fails later wherever flow writes or prints it). Iterative, so
    that no depth makes it recurse."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            items = [node]
            depth -= 1
        if depth > MAX_CONFIG_DEPTH:
            return f"it nests objects or arrays more than {MAX_CONFIG_DEPTH} levels deep"
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"it holds a string that is not valid Unicode: {ascii(item)[:60]}"
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return None


#: The fix of a broken config.json.
REPAIR = "Fix the file by hand, or move it aside to start from an empty config"


def json_error(path: str | Path, exc: json.JSONDecodeError) -> ConfigError:
    return ConfigError(
        f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        REPAIR,
    )

