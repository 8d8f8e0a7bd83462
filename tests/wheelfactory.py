"""Build small, real wheels for tests and benchmarks without a build backend.

A wheel is a zip with a ``.dist-info`` folder; writing one directly takes milliseconds, so tests
and benchmarks can make dozens of distinct plugins (broken ones included) and install them with
the real installers, offline.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(
    dest: Path,
    dist_name: str,
    files: dict[str, str],
    *,
    version: str = "0.1.0",
    requires: tuple[str, ...] = ("flowcore", "click"),
    entry_points: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write ``<dist>-<version>-py3-none-any.whl`` into ``dest`` and return its path.

    ``files`` maps archive paths (``"my_plugin/__init__.py"``) to their text; ``entry_points``
    maps a group (``"flow.plugins"``) to ``{name: "module:attr"}``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    norm = dist_name.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {dist_name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    contents: dict[str, bytes] = {k: v.encode() for k, v in files.items()}
    contents[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: flow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if entry_points:
        text = ""
        for group, eps in entry_points.items():
            text += f"[{group}]\n" + "".join(f"{n} = {t}\n" for n, t in eps.items()) + "\n"
        contents[f"{info}/entry_points.txt"] = text.encode()
    record = [_record_line(n, d) for n, d in contents.items()] + [f"{info}/RECORD,,"]
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def plugin_wheel(
    dest: Path,
    dist_name: str,
    body: str,
    *,
    kits: list[str] | None = None,
    api: str = ">=1",
    group: str = "flow.plugins",
    version: str = "0.1.0",
    requires: tuple[str, ...] = ("flowcore", "click"),
) -> Path:
    """A plugin distribution whose module is ``body`` plus the FLOW_* declarations."""
    module = dist_name.replace("-", "_")
    header = "import click\nfrom flowcore import hookimpl\n"
    if kits is not None:
        header += f"FLOW_BUILD_KITS = {kits!r}\n"
    header += f"FLOW_API = {api!r}\n"
    return build_wheel(
        dest,
        dist_name,
        {f"{module}/__init__.py": header + body},
        version=version,
        requires=requires,
        entry_points={group: {dist_name: module}},
    )
