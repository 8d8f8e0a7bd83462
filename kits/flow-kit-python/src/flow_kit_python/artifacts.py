"""The files ``flow build`` wrote: their digests, and the plugins' extra files added to them.

Extra files (``flow_python_before_build``) are added to the built wheel and sdist here, after the
backend ran, rather than written into the project before it: the user's tree is never changed
(an interrupted build leaves nothing behind, ``--watch`` is not woken by its own file, version
control shows nothing), and it works the same for every build backend. A wheel is rewritten
whole (a zip cannot take a file in place) with the new file before the ``.dist-info`` folder and
its line in ``RECORD`` (sha256, size), as the wheel format requires; entries keep their
timestamps, and a new one takes ``RECORD``'s, so a reproducible build stays reproducible when the
added content is.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from flowcore.api import FlowError

if TYPE_CHECKING:
    from flow_kit_python.hookspecs import ExtraFile

FIX = "Change the plugin's setting (or remove the project's own file of that name)"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_extra_files(files: Sequence[ExtraFile]) -> None:
    """Each path relative, inside the archive, and given once (two plugins may not both add it)."""
    seen: set[str] = set()
    for file in files:
        for key in ("path", "source"):
            value = file.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not _safe(value):
                raise FlowError(f"a flow_python_before_build plugin returned the {key} {value!r}, "
                                "which is not a relative path inside the distribution",
                                "Fix the plugin: a POSIX path like pkg/_file.py, without '..'")
        if not isinstance(file.get("content"), str):
            raise FlowError(f"a flow_python_before_build plugin returned no text content for "
                            f"{file.get('path')!r}", "Fix the plugin: content must be a str")
        if file["path"] in seen:
            raise FlowError(f"two flow_python_before_build plugins add {file['path']} to the wheel",
                            "Remove one of the plugins from the project, or change its setting")
        seen.add(file["path"])


def _safe(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (bool(parts) and not path.startswith("/") and "\\" not in path and ".." not in parts
            and "." not in parts)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _replace(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a new version of ``target`` through ``write(file)`` next to it, then swap it in."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_to_wheel(wheel: Path, files: Sequence[ExtraFile]) -> None:
    """Add ``files`` (their ``path`` and ``content``) to ``wheel``, with their ``RECORD`` lines."""
    if not files:
        return
    with zipfile.ZipFile(wheel) as src:
        infos = src.infolist()
        names = {i.filename for i in infos}
        record = next((i for i in infos if i.filename.endswith(".dist-info/RECORD")
                       and i.filename.count("/") == 1), None)
        if record is None:
            raise FlowError(f"{wheel.name} has no .dist-info/RECORD, so files cannot be added to it",
                            "Check the project's build backend")
        for file in files:
            folder = file["path"].rsplit("/", 1)[0] + "/" if "/" in file["path"] else ""
            if file["path"] in names:
                raise FlowError(f"a flow_python_before_build plugin adds {file['path']} to "
                                f"{wheel.name}, which already has it", FIX)
            if not folder or not any(n.startswith(folder) for n in names):
                raise FlowError(f"a flow_python_before_build plugin adds {file['path']}, but "
                                f"{wheel.name} has no folder {folder or '(a package)'}",
                                "Set the plugin's package to one the project builds")
        added = [(file["path"], file["content"].encode("utf-8")) for file in files]
        lines = src.read(record).decode("utf-8").splitlines()
        own = f"{record.filename},,"
        lines = [ln for ln in lines if ln and ln != own]
        lines += [_record_line(name, data) for name, data in added] + [own]

        def write(out: IO[bytes]) -> None:
            pending = list(added)
            with zipfile.ZipFile(out, "w") as dst:
                for info in infos:
                    if pending and ".dist-info/" in info.filename:  # new files before the metadata
                        for name, data in pending:
                            new = zipfile.ZipInfo(name, date_time=record.date_time)
                            new.external_attr = 0o100644 << 16
                            dst.writestr(new, data, compress_type=zipfile.ZIP_DEFLATED)
                        pending = []
                    data = ("\n".join(lines) + "\n").encode() if info is record else src.read(info)
                    dst.writestr(info, data, compress_type=info.compress_type)

        _replace(wheel, write)


def add_to_sdist(sdist: Path, files: Sequence[ExtraFile]) -> None:
    """Add the ``files`` that have a ``source`` path to ``sdist`` (a ``.tar.gz``), under its top
    folder; their timestamp is that of the sdist's ``PKG-INFO``."""
    files = [f for f in files if f.get("source")]
    if not files:
        return
    with tarfile.open(sdist, "r:gz") as src:
        members = src.getmembers()
        top = members[0].name.split("/", 1)[0] if members else ""
        names = {m.name for m in members}
        stamp = next((m.mtime for m in members if m.name == f"{top}/PKG-INFO"), 0)
        for file in files:
            if f"{top}/{file['source']}" in names:
                raise FlowError(f"a flow_python_before_build plugin adds {file['source']} to "
                                f"{sdist.name}, which already has it", FIX)

        def write(out: IO[bytes]) -> None:
            import gzip

            with gzip.GzipFile(fileobj=out, mode="wb", mtime=int(stamp)) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=src.format) as dst:
                for member in members:
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
                for file in files:
                    data = file["content"].encode("utf-8")
                    info = tarfile.TarInfo(f"{top}/{file['source']}")
                    info.size, info.mtime, info.mode = len(data), stamp, 0o644
                    dst.addfile(info, io.BytesIO(data))

        _replace(sdist, write)
