"""flow-plugin-secretguard: what looks like a secret, and the refusal as ``flow publish`` prints it.

Written only with the plugin itself, ``flowcore.api`` and ``flowcore.testing`` (its fixtures
come from flowcore's pytest plugin). The publish tests install the real kit and this plugin
into a temporary FLOW_HOME and point ``flow publish`` at a loopback socket that records
connections: a refused upload must not even connect, an allowed one does. The kit's own suite
(kits/flow-kit-cloudbuild/tests/test_cloudbuild_publish_hooks.py) publishes through a real
build server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow_plugin_secretguard import READ_LIMIT, allowed, secret_reason
from flowcore.testing import FlowRunner

PLUGIN_DIR = Path(__file__).resolve().parent.parent
KIT_DIR = PLUGIN_DIR.parent.parent / "kits" / "flow-kit-cloudbuild"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / rel).write_bytes(content)
        else:
            (root / rel).write_text(content)
    return root


@pytest.mark.parametrize("rel, content", [
    (".env", "TOKEN=x\n"),
    ("config/.env.production", "DB=x\n"),
    ("id_rsa", "anything"),
    ("keys/server.pem", CERT + KEY),
    ("tls/site.key", KEY.replace("OPENSSH ", "RSA ")),
    (".aws/credentials", "[default]\naws_access_key_id = A\n"),
    ("gcp/sa.json", json.dumps({"type": "service_account", "private_key": "-----BEGIN"})),
    (".npmrc", "//registry.npmjs.org/:_authToken=npm_abc\n"),
    (".pypirc", "[pypi]\nusername = __token__\npassword = pypi-abc\n"),
])
def test_secrets_are_recognised(tmp_path: Path, rel: str, content: str) -> None:
    write(tmp_path, {rel: content})
    assert secret_reason(tmp_path, rel) is not None


@pytest.mark.parametrize("rel, content", [
    (".env.example", "TOKEN=\n"),
    ("id_rsa.pub", "ssh-rsa AAAA"),
    ("certs/ca.pem", CERT),                                  # a certificate is public
    ("package.json", json.dumps({"name": "site", "private_key": False})),  # not a string key
    (".npmrc", "registry=https://registry.npmjs.org/\n"),
    (".pypirc", "[pypi]\nusername = __token__\n"),
    ("docs/env.md", "put TOKEN in .env"),
])
def test_ordinary_files_pass(tmp_path: Path, rel: str, content: str) -> None:
    write(tmp_path, {rel: content})
    assert secret_reason(tmp_path, rel) is None


def test_content_is_read_bounded(tmp_path: Path) -> None:
    """A key block past the first 64 KiB is not looked for: the read stops there."""
    write(tmp_path, {"big.pem": b"x" * READ_LIMIT + KEY.encode(), "top.pem": KEY + "x" * READ_LIMIT})
    assert secret_reason(tmp_path, "big.pem") is None
    assert secret_reason(tmp_path, "top.pem") is not None


def test_a_link_is_judged_by_its_name_only(tmp_path: Path) -> None:
    """The upload sends a link as a link: what it points to is not read (nor sent)."""
    write(tmp_path, {"outside/real.pem": KEY})
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "linked.pem").symlink_to(tmp_path / "outside" / "real.pem")
    (tmp_path / "project" / ".env").symlink_to(tmp_path / "outside" / "real.pem")
    assert secret_reason(tmp_path / "project", "linked.pem") is None
    assert secret_reason(tmp_path / "project", ".env") is not None


def test_allow_takes_paths_and_globs() -> None:
    assert allowed(".env", [".env"])
    assert not allowed("app/.env", [".env"])
    assert allowed("app/.env", ["*/.env"])
    assert allowed("fixtures/keys/test.pem", ["fixtures/*.pem"])
    assert not allowed("keys/test.pem", ["fixtures/*.pem"])


# -- flow publish, with the real kit and plugin installed --------------------------------------

PACKAGE_JSON = json.dumps({"name": "guarded", "version": "1.0.0", "scripts": {"build": "node build.js"}})


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback socket standing in for the build server: it accepts and answers nothing, so
    a test can tell whether ``flow publish`` connected at all."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def test_publish_refuses_a_secret_before_connecting_and_the_override_lets_it_through(
        flow: FlowRunner, make_project, listener: socket.socket) -> None:
    flow.install_kit(KIT_DIR)
    project = make_project("site", kit="flow-kit-cloudbuild", trust=True,
                           files={"package.json": PACKAGE_JSON, "build.js": "", ".env": "TOKEN=x\n"})
    flow.install_plugin(PLUGIN_DIR, cwd=project)
    server = f"http://127.0.0.1:{listener.getsockname()[1]}"
    publish = ("publish", "--source", "upload", "--server", server, "--token", "t" * 24,
               "--connect-timeout", "1")

    refused = flow.run(*publish, cwd=project)

    assert refused.exit_code == 1, refused
    assert refused.stderr.splitlines()[-1] == (
        "flow: error: refusing to upload .env: it looks like a secret (an environment file). "
        "Leave it out of the upload (add it to .flowignore), or allow it with "
        '[tool.flow.secretguard] allow = [".env"]')
    assert connections(listener) == 0

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.flow.secretguard]\nallow = [".env"]\n')
    flow.trust(project)  # trust covers the project file: an edit is reviewed again
    allowed_run = flow.run(*publish, cwd=project)

    assert allowed_run.exit_code != 0  # the stand-in server never answers
    assert "refusing to upload" not in allowed_run.stderr, allowed_run
    assert "flow: warning" not in allowed_run.stderr and "not using" not in allowed_run.stderr
    assert connections(listener) >= 1


def test_a_wrong_allow_value_is_a_usage_error(flow: FlowRunner, make_project) -> None:
    flow.install_kit(KIT_DIR)
    project = make_project("site", kit="flow-kit-cloudbuild", trust=True,
                           files={"package.json": PACKAGE_JSON, "flow-ignored.txt": ""})
    flow.install_plugin(PLUGIN_DIR, cwd=project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.flow.secretguard]\nallow = ".env"\n')
    flow.trust(project)

    result = flow.run("publish", "--source", "upload", "--server", "http://127.0.0.1:9",
                      "--token", "t" * 24, cwd=project)

    assert result.exit_code == 2, result
    assert result.stderr.splitlines()[-1] == (
        "flow: error: [tool.flow.secretguard] allow must be a list of paths or globs. "
        'Write it as allow = ["path/or/glob", ...]')
