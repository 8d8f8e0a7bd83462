"""Signed build provenance (attestation.py, server/signing_key.py) and ``flow verify``
(client/verify.py), through the real ``flow`` with the kit installed.

The deployment's files are real files; the statement is made and signed with the same functions
the server uses; a deployment URL is served by a real loopback HTTP server (``http.server`` in a
thread, HTTP/1.1 so the connection is kept alive across files). What each test holds: a good
deployment verifies (directory, URL, ``*.localhost`` URL); each kind of change is named in one
line, exit 1, no traceback: a file edited, removed, added, the statement edited with its
signature kept, another key, a statement that is not JSON, a name that climbs out. The end-to-end
test with a real build server (the statement served by a deployment) is in the deployments tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts the kit's src on sys.path)
from cloudbuild_publish_support import error_lines
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flow_kit_cloudbuild import attestation
from flow_kit_cloudbuild.attestation import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    PROVENANCE_PATH,
    STATEMENT_TYPE,
    VerifyError,
    key_id,
    make_statement,
    open_envelope,
    public_pem,
    sign,
    subject_digests,
)
from flow_kit_cloudbuild.server.errors import ServerConfigError
from flow_kit_cloudbuild.server.signing_key import derive_key, load_key, load_or_create

FILES = {
    "index.html": b"<h1>hello</h1>\n",
    "assets/app.js": b"console.log('app');\n",
    "assets/style.css": b"body { color: red }\n",
}
COMMIT = "3f2a9c1b" * 5


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statement_for(files: dict[str, bytes], **overrides) -> dict:
    args = dict(
        subjects=[{"name": n, "sha256": sha(d)} for n, d in files.items()],
        builder_id="http://127.0.0.1:7001", invocation_id="0123456789abcdef01234567",
        source={"kind": "git", "repo": "git://127.0.0.1/site.git", "ref": "main", "commit": COMMIT},
        build_command=["npm", "run", "build"], toolchain={"node": "v20.20.2", "npm": "11.19.1"},
        build_env_names=["NODE_ENV", "API_TOKEN"], kit_version="0.1.0", build_key="ab" * 32,
        started_ms=1_765_059_794_000, finished_ms=1_765_059_799_123,
        project={"name": "demo-site", "version": "1.0.0", "prod": False},
    )
    args.update(overrides)
    return make_statement(**args)


def write_site(root: Path, key: Ed25519PrivateKey, files: dict[str, bytes] = FILES) -> Path:
    """A deployment's files and its signed statement at .well-known/flow/provenance.json."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    provenance = root / PROVENANCE_PATH.lstrip("/")
    provenance.parent.mkdir(parents=True, exist_ok=True)
    provenance.write_bytes(sign(statement_for(files), key))
    return root


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "build-key.pub"
    path.write_bytes(public_pem(key))
    return path


@pytest.fixture
def site(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    return write_site(tmp_path / "site", key)


class Served:
    """``root`` served on a free loopback port by http.server in a thread (HTTP/1.1)."""

    def __init__(self, root: Path, handler_class: type[http.server.SimpleHTTPRequestHandler] | None = None) -> None:
        handler = functools.partial(handler_class or _QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: flow verify fetches every file on one connection

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ClosingHandler(_QuietHandler):
    protocol_version = "HTTP/1.0"  # a connection per request: flow verify opens the next one itself


@pytest.fixture
def served(site: Path) -> Iterator[Served]:
    s = Served(site)
    yield s
    s.stop()


def verify(flow, target: str | Path, key_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return flow("verify", str(target), "--key", str(key_file), *args, cwd=key_file.parent)


def only_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``flow: error:`` line of a failed verify (exit 1, no traceback)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- the statement and its envelope (in process) ------------------------------------------------

def test_statement_is_in_toto_with_slsa_provenance():
    statement = statement_for(FILES, cached_from="fedcba9876543210fedcba98")
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert [s["name"] for s in statement["subject"]] == sorted(FILES)  # one build, one statement
    assert statement["subject"][0]["digest"] == {"sha256": sha(FILES["assets/app.js"])}
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == attestation.BUILD_TYPE
    assert definition["externalParameters"]["source"] == {"kind": "git", "repo": "git://127.0.0.1/site.git",
                                                          "ref": "main"}
    assert definition["externalParameters"]["buildCommand"] == ["npm", "run", "build"]
    assert definition["externalParameters"]["project"] == {"name": "demo-site", "version": "1.0.0", "prod": False}
    assert definition["resolvedDependencies"] == [{"uri": "git+git://127.0.0.1/site.git@main",
                                                   "digest": {"gitCommit": COMMIT}}]
    internal = definition["internalParameters"]
    assert internal["buildEnvNames"] == ["API_TOKEN", "NODE_ENV"] and internal["buildKey"] == "ab" * 32
    run = statement["predicate"]["runDetails"]
    assert run["builder"] == {"id": "http://127.0.0.1:7001", "version": {"flow-kit-cloudbuild": "0.1.0"}}
    assert run["metadata"]["startedOn"] == "2025-12-06T22:23:14.000Z"
    assert run["metadata"]["finishedOn"] == "2025-12-06T22:23:19.123Z"
    assert run["byproducts"] == [{"name": "build-cache", "annotations": {"reusedFrom": "fedcba9876543210fedcba98"}}]
    upload = statement_for(FILES, source={"kind": "upload", "sha256": "cd" * 32}, cached_from=None)
    assert upload["predicate"]["buildDefinition"]["resolvedDependencies"] == [
        {"name": "upload.tar.gz", "digest": {"sha256": "cd" * 32}}]
    assert "byproducts" not in upload["predicate"]["runDetails"]
    with pytest.raises(ValueError):  # the server never signs a name flow verify would refuse
        statement_for({"../escape.js": b"x"})


def test_envelope_is_dsse_over_pae_with_ed25519(key):
    """Checked with cryptography directly, not through open_envelope: another DSSE verifier
    would accept what the server signs."""
    statement = statement_for(FILES)
    envelope = json.loads(sign(statement, key))
    assert envelope["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(envelope["payload"])
    assert json.loads(payload) == statement
    [signature] = envelope["signatures"]
    assert signature["keyid"] == key_id(key.public_key()) == "sha256:" + sha(key.public_key().public_bytes_raw())
    pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    key.public_key().verify(base64.b64decode(signature["sig"]), pae)  # raises if not
    assert open_envelope(json.dumps(envelope).encode(), key.public_key()) == statement
    assert subject_digests(statement) == {n: sha(d) for n, d in sorted(FILES.items())}


@pytest.mark.parametrize(("names", "why"), [
    (["/etc/passwd"], "absolute"), (["../x.js"], "'..'"), (["a/../../x"], "'..'"),
    (["a//b"], "canonical"), (["./a"], "canonical"), (["a.js", "a.js"], "twice"),
])
def test_unsafe_subject_names_are_refused(names, why):
    statement = {"subject": [{"name": n, "digest": {"sha256": "0" * 64}} for n in names]}
    with pytest.raises(VerifyError, match=re.escape(why)):
        subject_digests(statement)


def test_oversized_envelope_is_refused_before_parsing(key):
    with pytest.raises(VerifyError, match="larger than"):
        open_envelope(b" " * (attestation.MAX_STATEMENT_BYTES + 1), key.public_key())


# -- the server's key ------------------------------------------------------------------------------

def test_key_is_created_once_private_and_kept_across_restarts(tmp_path):
    path = tmp_path / "data" / "provenance-key.pem"
    first = load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_or_create(path)  # a restart
    assert public_pem(first) == public_pem(again)
    assert [p.name for p in path.parent.iterdir()] == ["provenance-key.pem"]  # no temporary left
    assert public_pem(load_key(path)) == public_pem(first)


def test_derived_key_is_the_same_for_the_same_secret_only():
    assert public_pem(derive_key(b"s" * 32)) == public_pem(derive_key(b"s" * 32))
    assert public_pem(derive_key(b"s" * 32)) != public_pem(derive_key(b"t" * 32))
    with pytest.raises(ServerConfigError):
        derive_key(b"")


def test_a_key_file_that_is_not_an_ed25519_private_key_is_a_config_error(tmp_path, key):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cases = {
        "public.pem": public_pem(key),
        "garbage.pem": b"not a key",
        "ec.pem": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ServerConfigError) as err:
            load_key(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ServerConfigError, match="cannot read"):
        load_key(tmp_path / "absent.pem")


def test_the_client_modules_import_no_cryptography():
    """``flow --help`` and the command definitions must not pay for cryptography."""
    code = ("import sys; import flow_kit_cloudbuild.kit, flow_kit_cloudbuild.client.command, "
            "flow_kit_cloudbuild.attestation, flow_kit_cloudbuild.client.verify, "
            "flow_kit_cloudbuild.server.signing_key; "
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    path = os.pathsep.join([str(repo_tests.KIT_SRC), str(repo_tests.REPO / "src")])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- flow verify on a directory ---------------------------------------------------------------------

def test_directory_verified(flow, site, key_file, key):
    result = verify(flow, site, key_file)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"verified 3 files of {site} against its signed provenance" in out
    assert f"git git://127.0.0.1/site.git main at commit {COMMIT}" in out
    assert "builder  http://127.0.0.1:7001 (flow-kit-cloudbuild 0.1.0)" in out
    assert "built    2025-12-06T22:23:19.123Z (task 0123456789abcdef01234567)" in out
    assert key_id(key.public_key()) in out
    as_json = json.loads(verify(flow, site, key_file, "--json").stdout)
    assert as_json["verified"] is True and as_json["files"] == 3 and as_json["reusedFrom"] is None
    assert as_json["subjects"] == {n: sha(d) for n, d in FILES.items()}
    assert as_json["keyId"] == key_id(key.public_key())


def test_tampered_artifact_is_named(flow, site, key_file):
    (site / "assets" / "app.js").write_bytes(b"steal(document.cookie);\n")
    result = verify(flow, site, key_file, "--json")
    assert json.loads(result.stdout)["verified"] is False
    assert json.loads(result.stdout)["error"].startswith("assets/app.js: sha256 differs")
    line = only_error(verify(flow, site, key_file))
    expected, found = sha(FILES["assets/app.js"])[:12], sha(b"steal(document.cookie);\n")[:12]
    assert line.startswith(f"flow: error: assets/app.js: sha256 differs from the provenance "
                           f"(expected {expected}…, found {found}…)"), line


def test_missing_artifact_is_named(flow, site, key_file):
    (site / "index.html").unlink()
    assert only_error(verify(flow, site, key_file)).startswith("flow: error: index.html: missing")


def test_extra_file_is_named(flow, site, key_file):
    (site / "assets" / "evil.js").write_bytes(b"alert(1)\n")
    (site / ".well-known" / "security.txt").write_text("Contact: x\n")  # .well-known/ is not checked
    line = only_error(verify(flow, site, key_file))
    assert line.startswith("flow: error: assets/evil.js: not named by the provenance"), line


def test_symlinked_artifact_is_refused(flow, site, key_file, tmp_path):
    outside = tmp_path / "outside.js"
    outside.write_bytes(FILES["assets/app.js"])  # the same bytes: a link is still not the build's file
    (site / "assets" / "app.js").unlink()
    (site / "assets" / "app.js").symlink_to(outside)
    assert "assets/app.js: a symbolic link" in only_error(verify(flow, site, key_file))


def tamper_statement(path: Path) -> None:
    """Change a digest inside the payload and keep the signature."""
    envelope = json.loads(path.read_bytes())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = sha(b"evil")
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))


def test_tampered_statement_is_named(flow, site, key_file, key):
    tamper_statement(site / PROVENANCE_PATH.lstrip("/"))
    line = only_error(verify(flow, site, key_file))
    assert line.startswith(f"flow: error: the provenance statement's signature does not verify with {key_file} "
                           f"({key_id(key.public_key())})"), line


def test_wrong_key_is_named(flow, site, tmp_path):
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate()))
    line = only_error(verify(flow, site, other))
    assert f"signature does not verify with {other}" in line


def test_statement_that_is_not_json_or_climbs_out_is_named(flow, site, key_file, key, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"payloadType": ')
    assert "the provenance statement is not valid JSON" in only_error(
        verify(flow, site, key_file, "--statement", str(broken)))
    climbing = tmp_path / "climbing.json"
    statement = statement_for(FILES)
    statement["subject"].append({"name": "../../home/user/.bashrc", "digest": {"sha256": "0" * 64}})
    climbing.write_bytes(sign(statement, key))  # signed by the right key, still refused
    line = only_error(verify(flow, site, key_file, "--statement", str(climbing)))
    assert "'../../home/user/.bashrc', which climbs out with '..'" in line


def test_usage_errors_exit_2(flow, site, key_file, key, tmp_path):
    assert verify_no_key(flow, site).returncode == 2
    private = tmp_path / "private.pem"
    from cryptography.hazmat.primitives import serialization

    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    result = verify(flow, site, private)
    assert result.returncode == 2 and "holds a private key" in result.stderr and "Traceback" not in result.stderr
    result = verify(flow, tmp_path / "no-such-dir", key_file)
    assert result.returncode == 2 and "neither a deployment URL" in result.stderr
    result = verify(flow, "ftp://example.com/", key_file)
    assert result.returncode == 2 and "not an http(s) URL" in result.stderr


def verify_no_key(flow, site: Path) -> subprocess.CompletedProcess[str]:
    return flow("verify", str(site), cwd=site.parent)


# -- flow verify on a deployment URL ----------------------------------------------------------------

def test_deployment_url_verified(flow, served, key_file):
    result = verify(flow, served.url, key_file)
    assert result.returncode == 0, result.stderr
    assert f"verified 3 files of {served.url}" in result.stdout
    # *.localhost is loopback (RFC 6761), as flow publish's deployment URLs are, resolver or not
    named = f"http://0123456789abcdef01234567.localhost:{served.port}/"
    result = verify(flow, named, key_file)
    assert result.returncode == 0, result.stderr


def test_deployment_url_verified_one_connection_per_file(flow, site, key_file):
    closing = Served(site, _ClosingHandler)
    try:
        result = verify(flow, closing.url, key_file)
        assert result.returncode == 0, result.stderr
        (site / "index.html").unlink()
        assert only_error(verify(flow, closing.url, key_file)).startswith("flow: error: index.html: missing")
    finally:
        closing.stop()


def test_deployment_url_tampered(flow, site, served, key_file):
    (site / "assets" / "style.css").write_bytes(b"body { display: none }\n")
    assert only_error(verify(flow, served.url, key_file)).startswith(
        "flow: error: assets/style.css: sha256 differs from the provenance")
    (site / "index.html").unlink()
    line = only_error(verify(flow, served.url, key_file))
    assert line.startswith("flow: error: assets/style.css: sha256 differs")  # the first mismatch, in order
    (site / "assets" / "style.css").write_bytes(FILES["assets/style.css"])
    assert only_error(verify(flow, served.url, key_file)).startswith("flow: error: index.html: missing (HTTP 404)")
    tamper_statement(site / PROVENANCE_PATH.lstrip("/"))
    assert "signature does not verify" in only_error(verify(flow, served.url, key_file))
    (site / PROVENANCE_PATH.lstrip("/")).unlink()
    assert "serves no provenance statement (HTTP 404" in only_error(verify(flow, served.url, key_file))


def test_unreachable_deployment_is_one_line(flow, key_file):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = only_error(verify(flow, f"http://127.0.0.1:{port}/", key_file))
    assert f"cannot fetch from http://127.0.0.1:{port}/" in line
