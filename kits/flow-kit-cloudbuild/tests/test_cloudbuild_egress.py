"""The install step's network (issue 18, part 2): a namespace with only loopback whose one way out
is the server's egress proxy, which reaches the allowed package registries and nothing else.

What was found: a tenant's ``preinstall`` script connected to the deployment's Redis and to the
server's own port (install ran in the host's network namespace), and a Python build whose backend
comes from an index failed on a host whose TLS trust is set by SSL_CERT_FILE (the sandbox dropped
it: ``invalid peer certificate: UnknownIssuer``).

The end-to-end tests run the real server with real bubblewrap, offline: the registries are a
static npm registry (npm_registry.py) and a PEP 503 index over HTTPS with a CA made here
(tests/package_index.py), both on loopback, named on the server's allowlist as 127.0.0.1:PORT.
The unit tests drive the proxy's checks and the proxy itself over a real unix socket.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import distribution
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path: package_index)
from cloudbuild_server_support import TOKEN, Client, ServerProc, final, http_get, logs, new_repo
from npm_registry import StaticNpmRegistry
from tls_support import make_ca

from flow_kit_cloudbuild.server.registry_hosts import parse_registry_host, parse_registry_hosts
from flow_kit_cloudbuild.server.runtime import egress
from flow_kit_cloudbuild.server.runtime.egress import (
    EgressPolicy,
    EgressProxy,
    Refused,
    address_problem,
)
from package_index import build_simple_index

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run)")


# -- the address checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "198.18.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",    # IPv4-mapped
    "64:ff9b::a00:1", "64:ff9b::7f00:1",                                  # NAT64 of 10.0.0.1, 127.0.0.1
    "2002:7f00:1::1", "2002:a00:1::1",                                    # 6to4 of 127.0.0.1, 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",                              # Teredo, client 10.0.0.1
])
def test_loopback_private_link_local_and_wrapped_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["104.16.1.35", "151.101.0.223", "2606:4700::6810:123",
                                     "2a04:4e42::223", "64:ff9b::6810:123"])
def test_global_addresses_are_allowed(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_the_servers_own_addresses_are_refused_even_when_global():
    own = frozenset({ipaddress.ip_address("104.16.1.35"), ipaddress.ip_address("2606:4700::1")})
    assert "address of the build server" in address_problem(ipaddress.ip_address("104.16.1.35"), own)
    assert address_problem(ipaddress.ip_address("::ffff:104.16.1.35"), own) is not None
    assert address_problem(ipaddress.ip_address("2606:4700::1"), own) is not None
    assert address_problem(ipaddress.ip_address("104.16.1.36"), own) is None


def test_own_addresses_holds_this_machines_loopback_and_interfaces():
    found = egress.own_addresses()
    assert ipaddress.ip_address("127.0.0.1") in found


def test_registry_host_entries():
    assert parse_registry_host("Registry.NPMjs.org").ports() == (443, 80)
    assert parse_registry_host("127.0.0.1:4873") == egress.RegistryHost("127.0.0.1", 4873,
                                                                        ipaddress.ip_address("127.0.0.1"))
    assert parse_registry_host("[::1]:4873").address == ipaddress.ip_address("::1")
    pinned = parse_registry_host("mirror.corp:8443=10.1.2.3")
    assert (pinned.host, pinned.port, str(pinned.address)) == ("mirror.corp", 8443, "10.1.2.3")
    for bad in ("", "http://x", "a b", "host:0", "host:99999", "x:1=notanip", "10.0.0.1=10.0.0.2", "-x.org"):
        with pytest.raises(ValueError):
            parse_registry_host(bad)


def fake_dns(answers: dict[str, list[str]], asked: list[str] | None = None):
    async def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in answers:
            raise OSError("no such name")
        return answers[host]
    return resolve


def policy(*entries: str, dns: dict[str, list[str]] | None = None, asked: list[str] | None = None,
           own_ports: tuple[int, ...] = (7001,)) -> EgressPolicy:
    return EgressPolicy(parse_registry_hosts(entries), own_ports=own_ports,
                        own=frozenset({ipaddress.ip_address("127.0.0.1")}), resolver=fake_dns(dns or {}, asked))


def check(p: EgressPolicy, host: str, port: int) -> list[str]:
    return [str(ip) for ip in asyncio.run(p.addresses(host, port))]


def refusal(p: EgressPolicy, host: str, port: int) -> str:
    with pytest.raises(Refused) as caught:
        asyncio.run(p.addresses(host, port))
    return str(caught.value)


def test_an_allowed_name_that_resolves_to_a_private_address_is_refused():
    p = policy("registry.npmjs.org", dns={"registry.npmjs.org": ["10.0.0.7", "::ffff:127.0.0.1", "169.254.169.254"]})
    why = refusal(p, "registry.npmjs.org", 443)
    assert "10.0.0.7 is a private" in why and "link-local" in why and "loopback" in why


def test_only_the_checked_answers_are_used():
    p = policy("registry.npmjs.org", dns={"registry.npmjs.org": ["10.0.0.7", "104.16.1.35", "104.16.1.35"]})
    assert check(p, "registry.npmjs.org", 443) == ["104.16.1.35"]


def test_a_name_not_on_the_allowlist_is_refused_before_any_dns_lookup():
    asked: list[str] = []
    p = policy("registry.npmjs.org", dns={"evil.example": ["104.16.1.35"]}, asked=asked)
    assert "not an allowed package registry" in refusal(p, "evil.example", 443)
    assert "not on port 6379" in refusal(p, "registry.npmjs.org", 6379)
    assert asked == []


def test_loopback_is_reachable_only_where_the_allowlist_names_that_address_and_port():
    p = policy("127.0.0.1:4873", "mirror.corp:8443=10.1.2.3", dns={"localhost": ["127.0.0.1"]})
    assert check(p, "127.0.0.1", 4873) == ["127.0.0.1"]
    assert check(p, "mirror.corp", 8443) == ["10.1.2.3"]       # pinned: no DNS, the named address
    refusal(p, "127.0.0.1", 6379)
    refusal(p, "localhost", 4873)                            # a name is not the address
    refusal(p, "10.1.2.3", 8443)


def test_the_servers_own_port_is_refused_even_when_named():
    p = policy("127.0.0.1:7001", own_ports=(7001,))
    assert "the build server itself" in refusal(p, "127.0.0.1", 7001)


# -- the proxy over a real unix socket ---------------------------------------------------------------
class Listener:
    """A plain TCP service on loopback (a stand-in for Redis) that counts who connected."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"+PONG\r\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


async def ask(path: Path, head: bytes, read: int = 65536) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(head)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(10):
            while len(data) < read:
                chunk = await reader.read(read)
                if not chunk:
                    break
                data += chunk
                if b"PONG" in data:
                    break
    finally:
        writer.close()
    return data


def test_the_proxy_tunnels_to_an_allowed_registry_and_refuses_the_rest():
    service, other = Listener(), Listener()
    answers = {"registry.npmjs.org": ["127.0.0.1"]}  # DNS pointing an allowed name at loopback

    async def main() -> dict[str, bytes]:
        p = EgressPolicy(parse_registry_hosts([f"127.0.0.1:{service.port}", "registry.npmjs.org"]),
                         own_ports=(7001,), resolver=fake_dns(answers))
        told: list[str] = []

        async def tell(text: str) -> None:
            told.append(text)
        out = {}
        async with EgressProxy(p).listening(on_refusal=tell) as path:
            out["tunnel"] = await ask(path, f"CONNECT 127.0.0.1:{service.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            out["other"] = await ask(path, f"CONNECT 127.0.0.1:{other.port} HTTP/1.1\r\n\r\n".encode())
            out["private"] = await ask(path, b"CONNECT 10.0.0.1:6379 HTTP/1.1\r\n\r\n")
            out["rebound"] = await ask(path, b"CONNECT registry.npmjs.org:443 HTTP/1.1\r\n\r\n")
            out["http"] = await ask(path, f"GET http://127.0.0.1:{other.port}/ HTTP/1.1\r\n\r\n".encode())
            out["garbage"] = await ask(path, b"\x16\x03\x01 hello\r\n\r\n")
            out["huge"] = await ask(path, b"GET http://x/ HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n")
            out["many"] = await ask(path, b"GET http://x/ HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n")
        out["told"] = "\n".join(told).encode()
        return out

    try:
        out = asyncio.run(main())
    finally:
        service.close()
        other.close()
    assert out["tunnel"].startswith(b"HTTP/1.1 200 ") and out["tunnel"].endswith(b"+PONG\r\n")
    for key in ("other", "private", "rebound", "http"):
        assert out[key].startswith(b"HTTP/1.1 403 "), (key, out[key])
    assert b"10.0.0.1 is a private" not in out["private"]           # refused by name, before DNS
    assert b"127.0.0.1 is a loopback address" in out["rebound"]
    assert out["garbage"].startswith(b"HTTP/1.1 400 ")
    assert out["huge"].startswith(b"HTTP/1.1 431 ") and out["many"].startswith(b"HTTP/1.1 431 ")
    assert other.accepted == 0 and service.accepted == 1
    assert b"refused CONNECT 10.0.0.1:6379" in out["told"]


def test_plain_http_is_forwarded_with_keep_alive_and_each_request_is_checked():
    npm = StaticNpmRegistry()
    npm.add_package("egress-demo", "1.0.0", {"index.js": ""})
    other = Listener()

    async def main() -> bytes:
        p = EgressPolicy(parse_registry_hosts([f"127.0.0.1:{npm.port}"]), resolver=fake_dns({}))
        async with EgressProxy(p).listening() as path:
            reader, writer = await asyncio.open_unix_connection(str(path))
            first = (f"GET http://127.0.0.1:{npm.port}/egress-demo HTTP/1.1\r\nHost: evil.example\r\n"
                     "Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n"
                     "Proxy-Connection: keep-alive\r\n\r\n")
            again = f"GET http://127.0.0.1:{npm.port}/egress-demo/-/egress-demo-1.0.0.tgz HTTP/1.1\r\n\r\n"
            # the third request, pipelined on the same connection, goes elsewhere: checked again
            elsewhere = f"GET http://127.0.0.1:{other.port}/ HTTP/1.1\r\n\r\n"
            writer.write((first + again + elsewhere).encode())
            async with asyncio.timeout(10):
                answer = await reader.read()          # the proxy closes after the refusal
            writer.close()
            return answer

    try:
        answer = asyncio.run(main())
    finally:
        npm.stop()
        other.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert json.loads(rest[:length])["name"] == "egress-demo"
    head2, _, rest2 = rest[length:].partition(b"\r\n\r\n")
    length2 = int(head2.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert head2.startswith(b"HTTP/1.1 200 ")
    assert rest2[:length2] == npm.tarballs["/egress-demo/-/egress-demo-1.0.0.tgz"]
    assert rest2[length2:].startswith(b"HTTP/1.1 403 ") and other.accepted == 0
    assert [path for path, _ in npm.requests] == ["/egress-demo", "/egress-demo/-/egress-demo-1.0.0.tgz"]
    headers = npm.requests[0][1]
    assert headers["host"] == f"127.0.0.1:{npm.port}" and headers["via"] == "1.1 flow-egress"
    assert not {"proxy-authorization", "proxy-connection", "connection"} & set(headers)


def test_the_proxy_bounds_connections_and_idle_time():
    async def main() -> tuple[bytes, bytes, float]:
        p = EgressPolicy((), resolver=fake_dns({}))
        proxy = EgressProxy(p, max_per_command=2, head_timeout=0.5)
        async with proxy.listening() as path:
            idle = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
            await asyncio.sleep(0.1)
            third = await ask(path, b"")
            loop = asyncio.get_running_loop()
            started = loop.time()
            timed_out = await idle[0][0].read(1000)
            took = loop.time() - started
            for _, w in idle:
                w.close()
        return third, timed_out, took

    third, timed_out, took = asyncio.run(main())
    assert third.startswith(b"HTTP/1.1 503 ")
    assert timed_out.startswith(b"HTTP/1.1 408 ") and took < 5


def test_the_sandbox_argv_binds_the_socket_and_runs_the_relay(tmp_path):
    from flow_kit_cloudbuild.server.runtime.sandbox import Sandbox, SandboxSpec

    sb = Sandbox()
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    argv = sb.wrap(["npm", "ci"], SandboxSpec(work=tmp_path, egress=tmp_path / "s.sock", trust=(ca, Path("/etc/ssl"))),
                   tmp_path)
    assert "--unshare-net" in argv
    i = argv.index("--bind", argv.index(str(tmp_path / "s.sock")) - 1)
    assert argv[i:i + 3] == ["--bind", str(tmp_path / "s.sock"), egress.SANDBOX_SOCKET]
    assert ["--ro-bind", str(ca), str(ca)] == argv[argv.index(str(ca)) - 1:argv.index(str(ca)) + 2]
    assert argv.count("/etc/ssl") == 0                                  # inside /etc: mounted already
    assert argv[-2:] == ["npm", "ci"] and argv[-3] == "--" and egress.SANDBOX_SOCKET in argv[-6:]


# -- end to end: the real server, real bubblewrap ----------------------------------------------------
def wheel_of_installed(dist_name: str, dest: Path) -> Path:
    """A wheel of a distribution installed in this interpreter (the test environment has setuptools,
    no index has): its files as RECORD lists them, with a fresh RECORD."""
    dist = distribution(dist_name)
    info = next(str(f).split("/")[0] for f in dist.files or () if str(f).endswith(".dist-info/METADATA"))
    tag = "py3-none-any"
    path = dest / f"{dist.metadata['Name'].replace('-', '_').lower()}-{dist.version}-{tag}.whl"
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in dist.files or ():
            name = str(f)
            if name.startswith("..") or "__pycache__" in name or name.endswith(".pyc") or \
                    name in (f"{info}/RECORD", f"{info}/INSTALLER", f"{info}/REQUESTED", f"{info}/direct_url.json"):
                continue
            src = Path(str(f.locate()))
            if not src.is_file():
                continue
            data = src.read_bytes()
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((name, f"sha256={digest}", str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([*rows, (f"{info}/RECORD", "", "")])
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return path


class HttpsIndex:
    """tests/package_index.py's PEP 503 layout served over HTTPS with a certificate of ``make_ca``."""

    def __init__(self, wheels: Path, root: Path, cert: Path, key: Path) -> None:
        build_simple_index(wheels, root)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        handler = partial(SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None  # type: ignore[method-assign, assignment]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    npm = StaticNpmRegistry()
    npm.add_package("egress-demo", "1.0.0", {"index.js": "module.exports = 'from the registry';\n"})
    base = tmp_path_factory.mktemp("registries")
    wheels = base / "wheels"
    wheels.mkdir()
    wheel_of_installed("setuptools", wheels)
    ca, cert, key = make_ca(base / "tls", "flow egress test CA")
    index = HttpsIndex(wheels, base / "index", cert, key)
    yield npm, index, ca
    npm.stop()
    index.stop()


@pytest.fixture(scope="module")
def egress_server(tmp_path_factory, registries):
    npm, index, ca = registries
    srv = ServerProc(tmp_path_factory.mktemp("egress") / "data", "--concurrency", "3", config={
        "offline": False,
        "registry-hosts": [f"127.0.0.1:{npm.port}", f"127.0.0.1:{index.port}"],
        "build-commands": [["npm", "run", "<script>"], ["uv", "build", "--no-build-isolation", "--wheel"]],
    }, env={"SSL_CERT_FILE": str(ca)})
    srv.config["build-env"].update(UV_OFFLINE="0", UV_DEFAULT_INDEX=index.url, npm_config_registry=npm.url)
    srv.start()
    yield srv
    srv.stop()


def publish(server: ServerProc, url: str, **extra) -> list[dict]:
    payload = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
               "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 120, **extra}
    with Client(server.url, TOKEN) as c:
        ack = c.publish(**payload)
        assert ack["ok"], ack
        return c.wait(ack["taskId"], timeout=180)


def artifact(msgs: list[dict], name: str) -> bytes:
    end = final(msgs)
    assert end["action"] == "done", (end, logs(msgs)[-30:])
    [art] = [a for a in end["payload"]["artifacts"] if a["name"] == name]
    return http_get(art["url"])[1]


PROBE = r'''
import json, os, socket
targets = json.loads(os.environ.get("PROBE_TARGETS") or open("targets.json").read())
def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "reached"
    except OSError as exc:
        return f"failed: {exc.strerror or exc}"
def via_proxy(line):
    proxy = os.environ.get("HTTPS_PROXY", "")
    if not proxy:
        return "no proxy"
    host, port = proxy.rsplit("/", 1)[-1].rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(line.encode() + b"\r\n\r\n")
        answer = s.recv(200).split(b"\r\n")[0].decode()
        s.close()
        return answer
    except OSError as exc:
        return f"failed: {exc.strerror or exc}"
out = {"direct": {f"{h}:{p}": direct(h, p) for h, p in targets["direct"]},
       "proxy": {line: via_proxy(line) for line in targets["proxy"]}}
os.makedirs("probe", exist_ok=True)
open("probe/report.json", "w").write(json.dumps(out))
'''


@needs_bwrap
def test_a_preinstall_script_reaches_neither_the_server_nor_loopback_nor_private_addresses(egress_server, git_daemon):
    redis = Listener()
    try:
        targets = {"direct": [["127.0.0.1", egress_server.port], ["127.0.0.1", redis.port], ["10.255.255.1", 6379]],
                   "proxy": [f"CONNECT 127.0.0.1:{egress_server.port} HTTP/1.1",
                             f"CONNECT 127.0.0.1:{redis.port} HTTP/1.1",
                             f"CONNECT [::1]:{redis.port} HTTP/1.1",
                             f"CONNECT localhost:{redis.port} HTTP/1.1",
                             "CONNECT 10.0.0.1:6379 HTTP/1.1",
                             "CONNECT 192.168.1.1:80 HTTP/1.1",
                             "CONNECT 169.254.169.254:80 HTTP/1.1",
                             f"GET http://127.0.0.1:{egress_server.port}/healthz HTTP/1.1"]}
        scripts = {"preinstall": f"{sys.executable} probe.py",
                   "build": "node -e \"require('fs').cpSync('probe', 'dist', {recursive: true})\""}
        files = {"package.json": json.dumps({"name": "probe", "version": "1.0.0", "private": True,
                                             "scripts": scripts}),
                 "package-lock.json": json.dumps({"name": "probe", "version": "1.0.0", "lockfileVersion": 3,
                                                  "packages": {"": {"name": "probe", "version": "1.0.0"}}}),
                 "probe.py": PROBE, "targets.json": json.dumps(targets)}
        msgs = publish(egress_server, new_repo(git_daemon, files))
        got = json.loads(artifact(msgs, "report.json"))
    finally:
        redis.close()
    assert all(v.startswith("failed") for v in got["direct"].values()), got["direct"]
    assert all(v.startswith("HTTP/1.1 403") for v in got["proxy"].values()), got["proxy"]
    assert redis.accepted == 0
    # The refusals are in the task's own log, so its owner sees why the install could not connect.
    assert any(f"egress: refused CONNECT 127.0.0.1:{redis.port}" in line for line in logs(msgs))


@needs_bwrap
def test_npm_ci_installs_from_an_allowed_registry_through_the_proxy(egress_server, registries, git_daemon):
    npm = registries[0]
    seen = len(npm.requests)
    lock = npm.lock("app", {"egress-demo": "1.0.0"})
    files = {"package.json": json.dumps({"name": "app", "version": "1.0.0", "private": True,
                                         "dependencies": {"egress-demo": "1.0.0"},
                                         "scripts": {"build": "node build.js"}}),
             "package-lock.json": json.dumps(lock),
             "build.js": "const fs = require('fs'); fs.mkdirSync('dist');\n"
                         "fs.writeFileSync('dist/out.txt', require('egress-demo'));\n"}
    msgs = publish(egress_server, new_repo(git_daemon, files), buildCmd=["npm", "run", "build"])
    assert artifact(msgs, "out.txt") == b"from the registry"
    fetched = [(path, headers) for path, headers in npm.requests[seen:] if path.endswith(".tgz")]
    assert fetched and all("flow-egress" in headers.get("via", "") for _, headers in fetched), fetched


PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "pyegress"
version = "0.1.0"

[tool.setuptools]
py-modules = ["pyegress"]
'''


@needs_bwrap
def test_a_python_build_fetches_its_backend_over_tls_trusted_through_ssl_cert_file(egress_server, git_daemon):
    # The index's certificate is signed by a CA only SSL_CERT_FILE (set for the server) names,
    # in a file outside every path the sandbox mounts: the build gets both.
    files = {"pyproject.toml": PYPROJECT, "pyegress.py": "VALUE = 1\n"}
    msgs = publish(egress_server, new_repo(git_daemon, files), name="pyegress", version="0.1.0",
                   buildCmd=["uv", "build", "--no-build-isolation", "--wheel"])
    end = final(msgs)
    assert end["action"] == "done", (end, logs(msgs)[-30:])
    assert [a["name"] for a in end["payload"]["artifacts"]] == ["pyegress-0.1.0-py3-none-any.whl"]
    assert any("+ setuptools==" in line for line in logs(msgs)), logs(msgs)[-30:]


def test_registry_hosts_setting_replaces_the_default_list_and_bad_entries_stop_the_start(tmp_path):
    from flow_kit_cloudbuild.server.config import DEFAULT_REGISTRY_HOSTS, ServerConfig, apply_file
    from flow_kit_cloudbuild.server.errors import ServerConfigError

    cfg = ServerConfig(data_dir=tmp_path)
    assert cfg.registry_hosts == DEFAULT_REGISTRY_HOSTS == ("registry.npmjs.org", "pypi.org", "files.pythonhosted.org")
    apply_file(cfg, {"registry-hosts": ["10.1.2.3:8081", "mirror.corp:443=10.1.2.4"]}, tmp_path / "s.toml")
    assert cfg.registry_hosts == ("10.1.2.3:8081", "mirror.corp:443=10.1.2.4")
    for bad in (["http://registry.npmjs.org"], "registry.npmjs.org", [3]):
        with pytest.raises(ServerConfigError, match="registry-hosts"):
            apply_file(cfg, {"registry-hosts": bad}, tmp_path / "s.toml")


def test_a_bad_registry_host_option_stops_the_server_in_one_line(tmp_path):
    from cloudbuild_server_support import server_env

    argv = [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir", str(tmp_path / "data"),
            "--registry-host", "registry.npmjs.org", "--registry-host", "10.0.0.1:99999"]
    done = subprocess.run(argv, capture_output=True, text=True, env=server_env(FLOW_CLOUDBUILD_TOKENS=TOKEN * 2),
                          timeout=60)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "--registry-host" in line and "1-65535" in line and "10.1.2.3:8081" in line
