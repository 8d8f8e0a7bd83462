"""Build provenance: what built a deployment, as a signed in-toto statement (SLSA provenance v1).

Both halves use this module: the server makes a statement at the end of a task and signs it
(:func:`make_statement`, :func:`sign`), ``flow verify`` opens it with a public key the user holds
(:func:`open_envelope`, :func:`subject_digests`). It sits beside ``protocol`` because it is a
contract too: a statement one version of the server signs is one every later client must read.

Formats, all public standards so that other tools can check what flow signs:

* the statement is an `in-toto Statement v1 <https://github.com/in-toto/attestation>`_ whose
  subjects are the deployment's files (name and sha256) and whose predicate is `SLSA provenance
  v1 <https://slsa.dev/provenance/v1>`_: the source, the build command, the toolchain, the
  builder, when;
* it is signed in a `DSSE <https://github.com/secure-systems-lab/dsse>`_ envelope with Ed25519:
  the signature covers DSSE's pre-authentication encoding of the payload type and the payload
  bytes, so neither can be swapped without breaking it, and the payload is verified as the bytes
  that were signed (never re-serialised JSON).

``cryptography`` is imported inside the functions that need it: the client imports this module
for ``flow verify`` only, and ``flow --help`` must not pay for it.

Everything read here may come from a stranger (a deployment URL, a file someone sent): the
envelope is refused past :data:`MAX_STATEMENT_BYTES`, every field is type-checked before use, and
:class:`VerifyError` says in one line what failed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PAYLOAD_TYPE", "STATEMENT_TYPE", "PREDICATE_TYPE", "BUILD_TYPE", "PROVENANCE_PATH", "KEY_PATH",
    "MAX_STATEMENT_BYTES", "MAX_KEY_BYTES", "VerifyError", "make_statement", "sign", "key_id", "public_pem",
    "load_public_key", "open_envelope", "subject_digests",
]

#: DSSE payload type of an in-toto statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
#: What "a flow cloud build" means (SLSA's buildType): a task of flow-cloudbuild-server that
#: fetched ``externalParameters.source``, installed the project's dependencies, ran
#: ``externalParameters.buildCommand`` in the sandbox and published the output directory's regular
#: files. The host is reserved (RFC 2606 ``.invalid``): no one can ever register it and serve
#: something else under this name; the definition is docs/cloud-build.md's provenance section.
#: A change of what those parameters mean gets a new version (``/v2``), never a new meaning.
BUILD_TYPE = "https://flow.invalid/cloudbuild/build-type/v1"
#: Where a deployment serves its statement, on the deployment's own origin.
PROVENANCE_PATH = "/.well-known/flow/provenance.json"
#: Where a server serves its public key (PEM), on the server's own origin.
KEY_PATH = "/.well-known/flow/build-key.pub"
#: The largest envelope read or made: a statement names every file of a deployment (about 100
#: bytes each); 4 MiB is ~40,000 files and bounds what a hostile target can make a client parse.
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
#: The largest public key file read (an Ed25519 PEM is 113 bytes).
MAX_KEY_BYTES = 64 * 1024
#: Signatures of one envelope tried at most (each is one Ed25519 check).
MAX_SIGNATURES = 16
MAX_NAME_LENGTH = 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class VerifyError(Exception):
    """A statement, envelope or key cannot be trusted; ``str()`` is one line naming what failed.

    ``kind`` says which check failed (``size``, ``json``, ``envelope``, ``payload-type``,
    ``signature``, ``statement``, ``subjects``, ``key``), so a caller can add what only it knows
    (``flow verify`` names the key file for ``signature``).
    """

    def __init__(self, message: str, kind: str = "statement") -> None:
        self.kind = kind
        super().__init__(message)


# -- making a statement (server) ------------------------------------------------------------------

def _rfc3339(ms: int) -> str:
    """``2026-12-06T22:23:14.123Z``: milliseconds since the epoch as RFC 3339 UTC."""
    moment = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _source_parts(source: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(externalParameters.source, the resolved dependency) of a git or upload source.

    The git commit is what the ref resolved to, so it is a resolved dependency (SLSA): the user
    asked for ``repo`` at ``ref``; an upload is its own input, named by its digest in both.
    """
    kind = source.get("kind")
    if kind == "git":
        repo, ref, commit = source.get("repo"), source.get("ref"), source.get("commit")
        if not (isinstance(repo, str) and isinstance(ref, str) and isinstance(commit, str)):
            raise ValueError("a git source needs repo, ref and commit (strings)")
        return ({"kind": "git", "repo": repo, "ref": ref},
                {"uri": f"git+{repo}@{ref}", "digest": {"gitCommit": commit}})
    if kind == "upload":
        digest = source.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ValueError("an upload source needs sha256 (64 lower-case hex digits)")
        return {"kind": "upload", "sha256": digest}, {"name": "upload.tar.gz", "digest": {"sha256": digest}}
    raise ValueError(f"unknown source kind {kind!r} (git or upload)")


def make_statement(*, subjects: Sequence[Mapping[str, str]], builder_id: str, invocation_id: str,
                   source: Mapping[str, Any], build_command: Sequence[str] | str,
                   toolchain: Mapping[str, str], build_env_names: Sequence[str], kit_version: str,
                   build_key: str | None, started_ms: int, finished_ms: int,
                   cached_from: str | None = None, project: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The in-toto statement of one build: its files as subjects, SLSA provenance v1 as predicate.

    ``subjects`` are ``{"name", "sha256"}`` (the deployment's files; sorted by name here, so one
    build always makes the same statement); ``source`` is ``{"kind": "git", "repo", "ref",
    "commit"}`` or ``{"kind": "upload", "sha256"}``. ``build_env_names`` are the names of the
    environment variables the build got, never their values (they may be secrets). ``build_key``
    is the build cache's key, ``cached_from`` the task whose output was reused (a byproduct
    ``build-cache``), so a reader sees that this build did not run its command itself.

    Raises ValueError on input the server should never produce (a bad digest, an unsafe or
    repeated name): a statement is refused rather than signed wrong.
    """
    entries: list[dict[str, Any]] = []
    for subject in subjects:
        name, digest = subject.get("name"), subject.get("sha256")
        if not isinstance(name, str) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ValueError(f"subject {subject!r}: needs a name and a sha256 of 64 lower-case hex digits")
        entries.append({"name": name, "digest": {"sha256": digest}})
    entries.sort(key=lambda e: e["name"])
    external_source, dependency = _source_parts(source)
    external: dict[str, Any] = {
        "source": external_source,
        "buildCommand": build_command if isinstance(build_command, str) else list(build_command),
    }
    if project is not None:
        external["project"] = {key: project.get(key) for key in ("name", "version", "prod")}
    internal: dict[str, Any] = {
        "toolchain": dict(toolchain),
        "buildEnvNames": sorted(set(build_env_names)),
        "kitVersion": kit_version,
    }
    if build_key is not None:
        internal["buildKey"] = build_key
    run_details: dict[str, Any] = {
        "builder": {"id": builder_id, "version": {"flow-kit-cloudbuild": kit_version}},
        "metadata": {"invocationId": invocation_id, "startedOn": _rfc3339(started_ms),
                     "finishedOn": _rfc3339(finished_ms)},
    }
    if cached_from is not None:
        run_details["byproducts"] = [{"name": "build-cache", "annotations": {"reusedFrom": cached_from}}]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": entries,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": [dependency],
            },
            "runDetails": run_details,
        },
    }
    try:  # the same rules flow verify applies: never sign what it would refuse
        subject_digests(statement)
    except VerifyError as exc:
        raise ValueError(str(exc)) from None
    return statement


# -- signing (server) ------------------------------------------------------------------------------

def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, the type bound to the bytes."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw 32-byte public key: the name flow prints and DSSE's keyid."""
    return "sha256:" + hashlib.sha256(_raw_public(public_key)).hexdigest()


def public_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The public half as PEM (SubjectPublicKeyInfo): what the server serves at KEY_PATH."""
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(statement: dict[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """The statement in a DSSE envelope signed with ``private_key`` (Ed25519), as JSON bytes.

    Raises ValueError when the envelope would be larger than MAX_STATEMENT_BYTES: no client would
    read it, so the server must not publish it as if it were fine.
    """
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
    signature = private_key.sign(_pae(PAYLOAD_TYPE, payload))
    envelope = json.dumps({
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": key_id(private_key.public_key()),
                        "sig": base64.b64encode(signature).decode("ascii")}],
    }, separators=(",", ":")).encode("ascii")
    if len(envelope) > MAX_STATEMENT_BYTES:
        raise ValueError(f"the signed provenance is {len(envelope)} bytes, more than the "
                         f"{MAX_STATEMENT_BYTES} a client reads")
    return envelope


# -- reading and checking (client) -----------------------------------------------------------------

def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo), as the server serves at KEY_PATH."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    fix = f"pass the build server's public key (the PEM it serves at {KEY_PATH})"
    if len(data) > MAX_KEY_BYTES:
        raise VerifyError(f"the key file is larger than {MAX_KEY_BYTES} bytes, so not a public key; {fix}", "key")
    if b"PRIVATE KEY" in data:
        raise VerifyError(f"the key file holds a private key; {fix}, and keep the private key on the server",
                          "key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise VerifyError(f"the key file is not a PEM public key; {fix}", "key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerifyError(f"the key file holds a {type(key).__name__.removesuffix('PublicKey') or 'non'} key, "
                          f"not an Ed25519 key; {fix}", "key")
    return key


def _b64(text: Any, what: str) -> bytes:
    """DSSE's base64: standard or URL-safe alphabet, padding optional."""
    if not isinstance(text, str):
        raise VerifyError(f"the provenance envelope's {what} is not a base64 string", "envelope")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise VerifyError(f"the provenance envelope's {what} is not valid base64", "envelope") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VerifyError(f"the provenance {what} is not valid JSON; it is damaged or not a flow provenance "
                          "statement", "json") from None


def open_envelope(data: bytes, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The statement inside a DSSE envelope, once it is known to be signed by ``public_key``.

    Checks, in this order: the size, the envelope's shape, its payload type, a signature by this
    key (any of the envelope's signatures; the keyids are hints only and are not trusted), then
    the statement's type and predicate type. Only the signed bytes are parsed as the statement.
    """
    from cryptography.exceptions import InvalidSignature

    if len(data) > MAX_STATEMENT_BYTES:
        raise VerifyError(f"the provenance statement is larger than {MAX_STATEMENT_BYTES} bytes, the most "
                          "flow reads", "size")
    envelope = _json(data, "statement")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
        raise VerifyError("the provenance statement is not a DSSE envelope (payloadType, payload, signatures)",
                          "envelope")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        shown = str(envelope.get("payloadType"))[:80]
        raise VerifyError(f"the provenance envelope's payload type is {shown!r}, not {PAYLOAD_TYPE!r}",
                          "payload-type")
    payload = _b64(envelope.get("payload"), "payload")
    message = _pae(PAYLOAD_TYPE, payload)
    signatures = envelope["signatures"]
    if not signatures:
        raise VerifyError("the provenance statement is not signed (no signatures)", "signature")
    verified = False
    for entry in signatures[:MAX_SIGNATURES]:
        if not isinstance(entry, dict):
            continue
        signature = _b64(entry.get("sig"), "signature")
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            continue
        verified = True
        break
    if not verified:
        raise VerifyError(f"the provenance statement's signature does not verify with key {key_id(public_key)}",
                          "signature")
    statement = _json(payload, "statement's payload")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerifyError(f"the signed payload is not an in-toto statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        shown = str(statement.get("predicateType"))[:80]
        raise VerifyError(f"the statement's predicate type is {shown!r}, not SLSA provenance ({PREDICATE_TYPE})")
    return statement


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a deployment file's name (relative, canonical, plain), or None.

    Canonical matters as much as relative: ``a/./b`` and ``a/b`` would be one file named twice.
    """
    if not name or len(name) > MAX_NAME_LENGTH:
        return "empty or too long"
    if _CONTROL.search(name):
        return "holds a control character"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if any(part in ("", ".") for part in parts):
        return "is not a canonical path (empty or '.' parts)"
    return None


def subject_digests(statement: Mapping[str, Any]) -> dict[str, str]:
    """``{file name: sha256 hex}`` of the statement's subjects, in their order.

    Refuses a statement whose subjects a verifier could be misled by: no subjects, a name that is
    absolute, climbs out of the deployment (``..``) or is not canonical, a name given twice (two
    digests for one file), or a digest that is not a sha256.
    """
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerifyError("the statement names no files (its subject list is empty or missing)", "subjects")
    found: dict[str, str] = {}
    for entry in subjects:
        name = entry.get("name") if isinstance(entry, dict) else None
        digest = entry.get("digest") if isinstance(entry, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str):
            raise VerifyError("a subject of the statement has no name", "subjects")
        shown = _CONTROL.sub("?", name[:200])
        problem = _name_problem(name)
        if problem:
            raise VerifyError(f"the statement names the file {shown!r}, which {problem}; refused", "subjects")
        if name in found:
            raise VerifyError(f"the statement names {shown!r} twice; refused", "subjects")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise VerifyError(f"the statement gives {shown!r} no sha256 digest", "subjects")
        found[name] = sha
    return found
