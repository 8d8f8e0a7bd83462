"""``flow verify TARGET --key FILE``: are these files what the build server built?

TARGET is a deployment URL or a local directory (a copy of a deployment, a delivery target).
The check, in order, stopping at the first thing that does not match:

1. the provenance statement (TARGET's ``/.well-known/flow/provenance.json``, or ``--statement``)
   is a DSSE envelope signed by the key in ``--key`` (``attestation.open_envelope``);
2. every file it names has the sha256 it gives (fetched from the deployment, or read from the
   directory), streamed into the hash, never held whole;
3. for a directory: no other file is there (outside ``.well-known/``): an added script is as
   much a change as an edited one.

Why the key is only ever ``--key``: trust is decided offline, once, by the user (who saved the
server's ``/.well-known/flow/build-key.pub`` beforehand, or got it from the operator). A key
fetched from the target would let whoever controls the target sign whatever it serves.

Everything the target sends is bounded: the statement by ``attestation.MAX_STATEMENT_BYTES``,
each file by :data:`MAX_FILE_BYTES`, every read by a timeout; redirects are not followed (a file
of the deployment is served where the statement says, or it is missing).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click

from flow_kit_cloudbuild.attestation import (
    KEY_PATH,
    MAX_KEY_BYTES,
    MAX_STATEMENT_BYTES,
    PROVENANCE_PATH,
    VerifyError,
    key_id,
    load_public_key,
    open_envelope,
    subject_digests,
)
from flow_kit_cloudbuild.client.http import MAX_DOWNLOAD_BYTES, TRANSFER_TIMEOUT
from flow_kit_cloudbuild.client.settings import CONNECT_TIMEOUT
from flowcore.api import FlowError, UsageError, printable_line

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["VerifyFailed", "MAX_FILE_BYTES", "run", "verify_directory", "verify_url"]

#: The largest file hashed (the same bound as an artifact download).
MAX_FILE_BYTES = MAX_DOWNLOAD_BYTES
CHUNK = 1024 * 1024
WELL_KNOWN = ".well-known"
USER_AGENT = "flow-verify"

NOT_BUILT = ("This is not what the build server built: redeploy from the server (flow promote, or flow publish) "
             "and find out what changed it")


class VerifyFailed(FlowError):
    """Something does not match the signed provenance, or it cannot be checked (exit code 1)."""


def _short(digest: str) -> str:
    return digest[:12] + "…"


def _read_file(path: Path, limit: int, what: str, fix: str = "") -> bytes:
    """Up to ``limit`` + 1 bytes of a regular file (so the caller sees "too large"); a FIFO or a
    device is refused rather than read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise VerifyFailed(f"there is no {what} at {path}", fix) from None
    except OSError as exc:
        raise VerifyFailed(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise VerifyFailed(f"the {what} {path} is not a regular file")
        return f.read(limit + 1)


def _load_key(key_file: Path) -> Ed25519PublicKey:
    try:
        return load_public_key(_read_file(key_file, MAX_KEY_BYTES, "key file"))
    except VerifyError as exc:
        raise UsageError(f"--key {key_file}: {exc}") from None


def _open(data: bytes, public_key: Ed25519PublicKey, key_file: Path, where: str) -> dict[str, Any]:
    """The statement, or the one-line reason it cannot be trusted (naming the key file)."""
    try:
        return open_envelope(data, public_key)
    except VerifyError as exc:
        if exc.kind == "signature":
            raise VerifyFailed(f"the provenance statement's signature does not verify with {key_file} "
                               f"({key_id(public_key)})",
                               f"Check that --key is the build server's key (it serves it at {KEY_PATH}); "
                               "if it is, the statement was changed after the server signed it") from None
        raise VerifyFailed(f"{exc} ({where})") from None


def _subjects(statement: dict[str, Any]) -> dict[str, str]:
    try:
        return subject_digests(statement)
    except VerifyError as exc:
        raise VerifyFailed(str(exc)) from None


def _differs(name: str, expected: str, found: str) -> VerifyFailed:
    return VerifyFailed(f"{name}: sha256 differs from the provenance (expected {_short(expected)}, "
                        f"found {_short(found)})", NOT_BUILT)


def _hash_stream(read: Any, name: str) -> str:
    """sha256 of what ``read(n)`` yields, stopped past MAX_FILE_BYTES."""
    digest = hashlib.sha256()
    size = 0
    while chunk := read(CHUNK):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise VerifyFailed(f"{name}: larger than {MAX_FILE_BYTES} bytes, the most flow verify reads of one file",
                               NOT_BUILT)
        digest.update(chunk)
    return digest.hexdigest()


# -- a local directory ----------------------------------------------------------------------------

def _hash_local(root: Path, name: str) -> str:
    """sha256 of ``root/name``, a regular file that is not a symbolic link (the build's files are
    regular files: a link could make the check read something the deployment does not serve)."""
    try:
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise VerifyFailed(f"{name}: missing", NOT_BUILT) from None
        if exc.errno == errno.ELOOP:
            raise VerifyFailed(f"{name}: a symbolic link, not the file the build made", NOT_BUILT) from None
        raise VerifyFailed(f"{name}: cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise VerifyFailed(f"{name}: not a regular file", NOT_BUILT)
        return _hash_stream(f.read, name)


def _entries(root: Path) -> Iterator[str]:
    """Every file (and symbolic link) under ``root`` as a relative POSIX name, sorted, outside
    the top-level ``.well-known/`` (where the statement itself lives); links are not followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        if base == root and WELL_KNOWN in dirnames:
            dirnames.remove(WELL_KNOWN)
        links = [d for d in dirnames if (base / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for entry in sorted([*filenames, *links]):
            yield (base / entry).relative_to(root).as_posix()


def verify_directory(root: Path, statement_data: bytes, public_key: Ed25519PublicKey, key_file: Path,
                     where: str) -> tuple[dict[str, Any], int]:
    """Check ``root`` against the signed statement; (the statement, files verified) or VerifyFailed."""
    statement = _open(statement_data, public_key, key_file, where)
    subjects = _subjects(statement)
    for name, expected in subjects.items():
        found = _hash_local(root, name)
        if found != expected:
            raise _differs(name, expected, found)
    for name in _entries(root):
        if name not in subjects:
            raise VerifyFailed(f"{name}: not named by the provenance (a file the build did not make)", NOT_BUILT)
    return statement, len(subjects)


# -- a deployment URL -----------------------------------------------------------------------------

def _is_localhost(host: str) -> bool:
    """``localhost`` and ``*.localhost`` are loopback (RFC 6761), as browsers and curl treat them:
    ``flow publish`` prints ``http://<id>.localhost:7001/`` and this machine's resolver need not
    know such names."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def _socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection within CONNECT_TIMEOUT, then reads and writes with ``timeout``."""
    addresses = [("127.0.0.1", port), ("::1", port)] if _is_localhost(host) else [(host, port)]
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            error = exc
            continue
        sock.settimeout(timeout)
        return sock
    assert error is not None
    raise error


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = _socket(self.host, self.port, self.timeout or TRANSFER_TIMEOUT)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        import ssl

        raw = _socket(self.host, self.port, self.timeout or TRANSFER_TIMEOUT)
        self.sock = ssl.create_default_context().wrap_socket(raw, server_hostname=self.host)


class _Deployment:
    """GETs on one deployment's origin over one kept-alive connection (reopened when closed)."""

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"TARGET {url[:200]!r} is not a valid URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise UsageError(f"TARGET {url[:200]!r} is not an http(s) URL", "Pass a deployment URL or a directory")
        if parts.query or parts.fragment:
            raise UsageError(f"TARGET {url[:200]!r} has a query or fragment", "Pass the deployment's URL")
        self.url = url
        self.base = parts.path.rstrip("/")
        cls = _TLSConnection if parts.scheme.lower() == "https" else _Connection
        self.conn = cls(parts.hostname, port, timeout=TRANSFER_TIMEOUT)

    def close(self) -> None:
        self.conn.close()

    def get(self, path: str) -> http.client.HTTPResponse:
        """The response to GET ``base + path`` (a kept-alive connection the server closed is
        reopened once)."""
        for attempt in (1, 2):
            try:
                self.conn.request("GET", self.base + path, headers={"User-Agent": USER_AGENT,
                                                                    "Accept-Encoding": "identity"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.conn.close()
                if attempt == 2:
                    raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    def _unreachable(self, exc: BaseException) -> VerifyFailed:
        reason = str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
        if isinstance(exc, TimeoutError) or "timed out" in reason:
            reason = "no answer in time"
        return VerifyFailed(f"cannot fetch from {self.url}: {reason}",
                            "Check the URL and that the deployment's server is running")

    def read_statement(self) -> bytes:
        response = self.get(PROVENANCE_PATH)
        with response:
            if response.status != 200:
                raise VerifyFailed(f"the deployment at {self.url} serves no provenance statement "
                                   f"(HTTP {response.status} for {PROVENANCE_PATH})",
                                   "It was built by a server that does not sign its builds, or it is not a flow "
                                   "deployment; pass --statement FILE if you have its statement")
            try:
                return response.read(MAX_STATEMENT_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None

    def hash_file(self, name: str) -> str:
        response = self.get("/" + quote(name, safe="/"))
        with response:
            if response.status in (404, 410):
                body_ok = _drain(response)
                if not body_ok:
                    self.conn.close()
                raise VerifyFailed(f"{name}: missing (HTTP {response.status})", NOT_BUILT)
            if response.status != 200:
                self.conn.close()
                raise VerifyFailed(f"{name}: the deployment answered HTTP {response.status}"
                                   + (" (a redirect, not followed)" if 300 <= response.status < 400 else ""),
                                   NOT_BUILT)
            try:
                return _hash_stream(response.read, name)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None


def _drain(response: http.client.HTTPResponse) -> bool:
    """Read a small error body so the connection can be reused; False if it is not small."""
    try:
        return len(response.read(64 * 1024 + 1)) <= 64 * 1024
    except (OSError, http.client.HTTPException):
        return False


def verify_url(url: str, statement_data: bytes | None, public_key: Ed25519PublicKey,
               key_file: Path) -> tuple[dict[str, Any], int]:
    """Check the deployment at ``url`` against its signed statement (fetched from it unless
    given); (the statement, files verified) or VerifyFailed."""
    site = _Deployment(url)
    try:
        where = "from --statement" if statement_data is not None else f"at {url.rstrip('/')}{PROVENANCE_PATH}"
        data = site.read_statement() if statement_data is None else statement_data
        statement = _open(data, public_key, key_file, where)
        subjects = _subjects(statement)
        for name, expected in subjects.items():
            found = site.hash_file(name)
            if found != expected:
                raise _differs(name, expected, found)
        return statement, len(subjects)
    finally:
        site.close()


# -- the command ----------------------------------------------------------------------------------

def _is_url(target: str) -> bool:
    return "://" in target


def _facts(statement: dict[str, Any]) -> dict[str, Any]:
    """What the summary says, read defensively (the statement is signed, but its fields' shapes
    were only checked where the check needed them)."""
    def get(obj: Any, *keys: str) -> Any:
        for key in keys:
            obj = obj.get(key) if isinstance(obj, dict) else None
        return obj

    predicate = statement.get("predicate")
    dependencies = get(predicate, "buildDefinition", "resolvedDependencies")
    byproducts = get(predicate, "runDetails", "byproducts")
    reused = next((get(b, "annotations", "reusedFrom") for b in byproducts or [] if get(b, "name") == "build-cache"),
                  None) if isinstance(byproducts, list) else None
    return {
        "source": get(predicate, "buildDefinition", "externalParameters", "source"),
        "resolvedDependencies": dependencies if isinstance(dependencies, list) else [],
        "buildCommand": get(predicate, "buildDefinition", "externalParameters", "buildCommand"),
        "builder": get(predicate, "runDetails", "builder"),
        "invocationId": get(predicate, "runDetails", "metadata", "invocationId"),
        "startedOn": get(predicate, "runDetails", "metadata", "startedOn"),
        "finishedOn": get(predicate, "runDetails", "metadata", "finishedOn"),
        "reusedFrom": reused,
    }


def _source_line(facts: dict[str, Any]) -> str:
    source = facts["source"] if isinstance(facts["source"], dict) else {}
    if source.get("kind") == "git":
        commit = next((d.get("digest", {}).get("gitCommit") for d in facts["resolvedDependencies"]
                       if isinstance(d, dict) and isinstance(d.get("digest"), dict)), None)
        return f"git {source.get('repo')} {source.get('ref')} at commit {commit}"
    if source.get("kind") == "upload":
        return f"upload sha256 {source.get('sha256')}"
    return "(not stated)"


def _summary(target: str, files: int, statement: dict[str, Any], public_key: Ed25519PublicKey) -> list[str]:
    facts = _facts(statement)
    builder = facts["builder"] if isinstance(facts["builder"], dict) else {}
    version = builder.get("version")
    kit = version.get("flow-kit-cloudbuild") if isinstance(version, dict) else None
    lines = [
        f"verified {files} file{'s' if files != 1 else ''} of {target} against its signed provenance",
        f"  source   {_source_line(facts)}",
        f"  builder  {builder.get('id')}" + (f" (flow-kit-cloudbuild {kit})" if kit else ""),
        f"  built    {facts['finishedOn']} (task {facts['invocationId']})",
    ]
    if facts["reusedFrom"]:
        lines.append(f"  reused   the build output of task {facts['reusedFrom']} (build cache)")
    lines.append(f"  key      {key_id(public_key)}")
    return [printable_line(str(line)) for line in lines]


def run(*, target: str, key_file: str, statement_file: str | None, json_mode: bool) -> None:
    """``flow verify``: exit 0 with a summary, or one line naming the first mismatch (exit 1)."""
    key_path = Path(key_file)
    public_key = _load_key(key_path)
    statement_data: bytes | None = None
    if statement_file is not None:
        statement_data = _read_file(Path(statement_file), MAX_STATEMENT_BYTES, "provenance statement")
    try:
        if _is_url(target):
            statement, files = verify_url(target, statement_data, public_key, key_path)
        else:
            root = Path(target)
            if not root.is_dir():
                raise UsageError(f"TARGET {target!r} is neither a deployment URL (http:// or https://) nor a directory")
            where = "from --statement" if statement_file else f"in {root / PROVENANCE_PATH.lstrip('/')}"
            if statement_data is None:
                statement_data = _read_file(root / PROVENANCE_PATH.lstrip("/"), MAX_STATEMENT_BYTES,
                                            "provenance statement",
                                            "Pass it with --statement FILE (a deployment serves it at "
                                            f"<deployment URL>{PROVENANCE_PATH})")
            statement, files = verify_directory(root, statement_data, public_key, key_path, where)
    except VerifyFailed as exc:
        if json_mode:
            click.echo(json.dumps({"verified": False, "target": target, "error": exc.cause, "fix": exc.fix}))
        raise
    if json_mode:
        facts = _facts(statement)
        click.echo(json.dumps({"verified": True, "target": target, "files": files, "keyId": key_id(public_key),
                               **facts, "subjects": subject_digests(statement)}))
        return
    for line in _summary(target, files, statement, public_key):
        click.echo(line)
