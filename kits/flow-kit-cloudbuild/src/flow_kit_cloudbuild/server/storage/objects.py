"""Object storage: one interface for artifacts and uploads, a local directory or S3.

``ObjectStore`` keeps bytes under ``/``-separated keys. ``LocalObjectStore`` maps a key to a
file under a directory (the embedded default, the data dir: the same layout as before), and
``S3ObjectStore`` to an object under ``s3://bucket/prefix/`` of any S3-compatible service
(``--store s3://bucket/prefix`` with the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``). With S3 no process needs a shared directory: in
Redis mode gateways and workers on separate machines meet in the bucket.

The client library is boto3 (docs/cloud-build.md, "Object storage" says why). Its calls block,
so every one runs in a worker thread (``asyncio.to_thread``); the event loop never waits on S3.
``child(name)`` is the same store seen under ``name/`` (artifacts and uploads each get one).

Keys come from the server (task ids, upload ids, checked artifact names), never straight from a
request; ``_check_key`` refuses anything with an empty, ``.`` or ``..`` part all the same.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from flow_kit_cloudbuild.server.errors import ServerConfigError

CHUNK = 256 * 1024
COPY_CHUNK = 1024 * 1024
MAX_SMALL = 16 * 1024 * 1024  # get_bytes refuses objects larger than this (manifests, upload records)


class ObjectTooLarge(Exception):
    """The source grew past the size it was stored with (``put_file``'s ``limit``)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str           # relative to the store it was listed from
    size: int
    etag: str
    mtime: float       # seconds since the epoch


@dataclass
class Opened:
    size: int
    etag: str
    chunks: AsyncIterator[bytes]


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or len(key) > 1024 or any(p in ("", ".", "..") for p in parts):
        raise KeyError(key)
    return key


class ObjectStore(Protocol):
    """Bytes under keys. Every method is safe to call from the event loop."""

    def child(self, name: str) -> ObjectStore:
        """This store seen under ``name/``."""

    async def put_file(self, key: str, src: IO[bytes], *, limit: int = -1, content_type: str | None = None,
                       cache_control: str | None = None) -> int:
        """Store what ``src`` (an open binary file) holds; returns the bytes stored. Raises
        ObjectTooLarge (and stores nothing) past ``limit`` bytes (-1: none)."""

    async def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store ``data`` (replacing what was there)."""

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` only if nothing is under ``key``; False when something was."""

    async def copy(self, src: str, dest: str) -> bool:
        """Copy the object ``src`` to ``dest`` inside this store without the bytes passing through
        this process where the store allows (a hard link, S3's server-side copy); False when
        there is no ``src``. Why: a build-cache hit makes a new deployment of stored files."""

    async def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes (at most MAX_SMALL), or None when there is none."""

    async def open(self, key: str) -> Opened | None:
        """(size, etag, chunks) of an object, or None when there is none."""

    async def download(self, key: str, dest: Path) -> bool:
        """Copy an object into a local file; False when there is none."""

    async def head(self, key: str) -> ObjectInfo | None:
        """Size, etag and time of an object, or None."""

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""

    async def delete(self, key: str) -> None:
        """Delete one object (nothing if there is none)."""

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (which must end with ``/``)."""


# -- local directory ----------------------------------------------------------------------------
class LocalObjectStore:
    """Keys as files under ``root``; written to a temporary name and renamed, so a reader sees
    a whole file or none."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def child(self, name: str) -> LocalObjectStore:
        return LocalObjectStore(self.root / _check_key(name))

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def _tmp(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"

    async def put_file(self, key: str, src: IO[bytes], *, limit: int = -1, content_type: str | None = None,
                       cache_control: str | None = None) -> int:
        return await asyncio.to_thread(self._put_file, self.path(key), src, limit)

    def _put_file(self, dest: Path, src: IO[bytes], limit: int) -> int:
        tmp = self._tmp(dest)
        written = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(COPY_CHUNK if limit < 0 else min(COPY_CHUNK, limit - written + 1)):
                    written += len(chunk)
                    if 0 <= limit < written:
                        raise ObjectTooLarge(f"the file grew past {limit} bytes while it was stored")
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return written

    async def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._put_bytes, self.path(key), data)

    def _put_bytes(self, dest: Path, data: bytes) -> None:
        tmp = self._tmp(dest)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        return await asyncio.to_thread(self._put_if_absent, self.path(key), data)

    @staticmethod
    def _put_if_absent(dest: Path, data: bytes) -> bool:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    async def copy(self, src: str, dest: str) -> bool:
        return await asyncio.to_thread(self._copy, self.path(src), self.path(dest))

    def _copy(self, src: Path, dest: Path) -> bool:
        """A hard link to a temporary name renamed over ``dest`` (objects are never changed in
        place, only replaced, so sharing the inode is safe); a copy where links fail."""
        tmp = self._tmp(dest)
        try:
            try:
                os.link(src, tmp, follow_symlinks=False)
            except FileNotFoundError:
                return False
            except OSError:  # another file system, or links not allowed: copy the bytes
                shutil.copyfile(src, tmp, follow_symlinks=False)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return True

    async def get_bytes(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_SMALL + 1)
        except OSError:
            return None
        return data if len(data) <= MAX_SMALL else None

    async def open(self, key: str) -> Opened | None:
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW)
        except (OSError, KeyError):
            return None
        f = os.fdopen(fd, "rb")
        st = os.fstat(fd)

        async def chunks() -> AsyncIterator[bytes]:
            with f:
                while block := f.read(CHUNK):
                    yield block

        return Opened(st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', chunks())

    async def download(self, key: str, dest: Path) -> bool:
        src = self.path(key)
        try:
            await asyncio.to_thread(shutil.copyfile, src, dest)
        except FileNotFoundError:
            return False
        return True

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self.path(key).stat()
        except (OSError, KeyError):
            return None
        return ObjectInfo(key, st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        found: builtins.list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if base and not (base.startswith(prefix) or prefix.startswith(base)):
                dirnames.clear()
                continue
            for name in filenames:
                key = base + name
                if name.startswith(".") and name.endswith(".part") or not key.startswith(prefix):
                    continue
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    found.append(ObjectInfo(key, st.st_size, "", st.st_mtime))
        return found

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, KeyError):
            await asyncio.to_thread(self.path(key).unlink)

    async def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise KeyError(prefix)
        await asyncio.to_thread(shutil.rmtree, self.path(prefix.rstrip("/")), True)


# -- S3 ------------------------------------------------------------------------------------------
class _Capped:
    """A read-only file that yields at most ``limit`` bytes of ``src`` and raises past them, so
    a file that grows while it is uploaded stores no more than it was allowed."""

    def __init__(self, src: IO[bytes], limit: int) -> None:
        self.src, self.limit, self.read_bytes = src, limit, 0

    def read(self, size: int = -1) -> bytes:
        want = COPY_CHUNK if size is None or size < 0 else size
        if self.limit >= 0:
            want = min(want, self.limit - self.read_bytes + 1)
        data = self.src.read(want)
        self.read_bytes += len(data)
        if 0 <= self.limit < self.read_bytes:
            raise ObjectTooLarge(f"the file grew past {self.limit} bytes while it was stored")
        return data


def s3_client(max_connections: int = 32) -> Any:
    """A boto3 S3 client configured from the standard AWS variables (AWS_ENDPOINT_URL, keys,
    AWS_REGION); path-style addressing, which every S3-compatible server answers."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", config=Config(max_pool_connections=max_connections, s3={"addressing_style": "path"},
                            retries={"max_attempts": 4, "mode": "standard"},
                            request_checksum_calculation="when_required",
                            response_checksum_validation="when_required"))


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url[:100]!r} is not s3://BUCKET/PREFIX")
    prefix = parts.path.strip("/")
    if prefix:
        _check_key(prefix)
    return parts.netloc, prefix


class S3ObjectStore:
    """Keys as objects under ``s3://bucket/prefix/`` through one thread-safe boto3 client."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else s3_client()

    def __repr__(self) -> str:
        return f"S3ObjectStore('s3://{self.bucket}/{self.prefix}')"

    @classmethod
    def from_url(cls, url: str, client: Any = None) -> S3ObjectStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, client)

    def child(self, name: str) -> S3ObjectStore:
        return S3ObjectStore(self.bucket, f"{self.prefix}/{_check_key(name)}".lstrip("/"), self.client)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}".lstrip("/")

    def _base(self, prefix: str) -> str:
        base = f"{self.prefix}/" if self.prefix else ""
        return base + prefix

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    async def put_file(self, key: str, src: IO[bytes], *, limit: int = -1, content_type: str | None = None,
                       cache_control: str | None = None) -> int:
        extra: dict[str, str] = {}
        if content_type:
            extra["ContentType"] = content_type
        if cache_control:
            extra["CacheControl"] = cache_control
        capped = _Capped(src, limit)
        await asyncio.to_thread(self.client.upload_fileobj, capped, self.bucket, self._key(key),
                                ExtraArgs=extra or None)
        return capped.read_bytes

    async def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:  # a conditional write (If-None-Match: *): one of two racing writers wins
            await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                                    IfNoneMatch="*")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("PreconditionFailed", "412",
                                                                   "ConditionalRequestConflict"):
                return False
            raise
        return True

    async def copy(self, src: str, dest: str) -> bool:
        # the managed copy: one CopyObject, or a multipart copy for objects above its threshold
        try:
            await asyncio.to_thread(self.client.copy, {"Bucket": self.bucket, "Key": self._key(src)},
                                    self.bucket, self._key(dest))
        except Exception as exc:
            if self._missing(exc):
                return False
            raise
        return True

    async def get_bytes(self, key: str) -> bytes | None:
        opened = await self.open(key)
        if opened is None or opened.size > MAX_SMALL:
            if opened is not None:
                await opened.chunks.aclose()  # type: ignore[attr-defined]
            return None
        return b"".join([c async for c in opened.chunks])

    async def open(self, key: str) -> Opened | None:
        from botocore.exceptions import ClientError

        try:
            got = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise
        body = got["Body"]
        blocks: Iterator[bytes] = body.iter_chunks(CHUNK)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while block := await asyncio.to_thread(next, blocks, b""):
                    yield block
            finally:
                body.close()

        return Opened(int(got["ContentLength"]), str(got.get("ETag", "")), chunks())

    async def download(self, key: str, dest: Path) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.download_file, self.bucket, self._key(key), str(dest))
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise
        return True

    async def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            got = await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise
        return ObjectInfo(key, int(got["ContentLength"]), str(got.get("ETag", "")),
                          got["LastModified"].timestamp() if got.get("LastModified") else time.time())

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        base = self._base("")
        found: builtins.list[ObjectInfo] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
        for page in pages:
            for item in page.get("Contents", []):
                found.append(ObjectInfo(item["Key"][len(base):], int(item["Size"]), str(item.get("ETag", "")),
                                        item["LastModified"].timestamp()))
        return found

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise KeyError(prefix)
        keys = [self._base(o.key) for o in await self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            await asyncio.to_thread(self.client.delete_objects, Bucket=self.bucket, Delete=batch)


def make_object_store(url: str | None, data_dir: Path) -> ObjectStore:
    """The store ``--store`` names: None (the data dir) or ``s3://bucket/prefix``."""
    if not url:
        return LocalObjectStore(data_dir)
    try:
        return S3ObjectStore.from_url(url)
    except ValueError as exc:
        raise ServerConfigError(f"--store: {exc}", "Write it like --store s3://my-bucket/flow "
                                "(the endpoint and keys come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                                "AWS_SECRET_ACCESS_KEY, AWS_REGION)") from None
