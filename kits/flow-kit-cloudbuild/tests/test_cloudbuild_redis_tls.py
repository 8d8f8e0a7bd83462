"""Redis mode over TLS (``rediss://``), as docs/cloud-build.md ("Running across machines") shows
it: a real redis-server that listens with TLS only (a certificate for 127.0.0.1 from a throw-away
CA made with openssl) and wants a password; a gateway and a worker that name the CA in the URL
(``?ssl_ca_certs=``) run a build through it and print no password. A server given another CA,
none, a CA file that is not there, or a host name the certificate does not hold stops in one
line naming the certificate problem and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from cloudbuild_redis_support import Cluster, RedisServer, needs_redis, secret_file, wait_for, worker_pid
from cloudbuild_server_support import TOKEN, Client, final, http_get, npm_project, protocol, server_env, tar_gz, upload
from tls_support import make_ca

pytestmark = [needs_redis,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="makes the test CA with openssl"),
              pytest.mark.skipif(shutil.which("npm") is None, reason="builds npm projects")]

PASSWORD = "tls-redis-password-0123"


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory):
    base = tmp_path_factory.mktemp("redis-tls")
    r = RedisServer(base / "redis", password=PASSWORD, tls=make_ca(base / "ca", "flow redis test CA of redis"))
    try:
        r.start()
    except RuntimeError:
        log = r.log()
        if "tls" in log.lower():  # a redis-server built without TLS rejects --tls-port
            pytest.skip("redis-server here has no TLS support (built without BUILD_TLS=yes): "
                        + " ".join(log.strip().splitlines()[-2:])[:300])
        raise
    yield r
    r.stop()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA that did not sign Redis's certificate."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "flow redis test CA unrelated")[0]


@pytest.fixture(scope="module")
def tls_deployment(tmp_path_factory, redis_tls):
    """A gateway given the whole URL on the command line (``--redis-url rediss://:PASSWORD@...
    ?ssl_ca_certs=CA``; the server warns about ps) and a worker given it without the password,
    which comes from --redis-password-file, as the docs' example does."""
    base = tmp_path_factory.mktemp("tls-deployment")
    password_file = base / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    cluster = Cluster(base, redis_tls)
    try:
        gateway = cluster.add("gateway")
        worker = cluster.add("worker", extra=("--redis-url", redis_tls.url_for(None, None),
                                                       "--redis-password-file", str(password_file)))
        yield cluster, gateway, worker
    finally:
        cluster.stop()


def server_argv(tmp_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir", str(tmp_path / "d"),
            *args]


def test_redis_listens_with_tls_only(redis_tls):
    import redis

    assert redis_tls.client().ping()   # rediss:// with the CA
    plain = redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{redis_tls.port}/0", socket_connect_timeout=3,
                                 socket_timeout=3)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


def test_a_gateway_and_a_worker_over_tls_run_a_build_and_print_no_password(redis_tls, tls_deployment):
    cluster, gateway, worker = tls_deployment
    assert redis_tls.url.startswith("rediss://") and "ssl_ca_certs=" in redis_tls.url
    assert PASSWORD in " ".join(gateway.args) and PASSWORD not in " ".join(worker.args)
    status, body = upload(gateway, tar_gz(npm_project(name="over-tls")))
    assert status == 201, body
    with Client(gateway.url) as client:
        ack = client.publish(name="over-tls", version="1.0.0", source="upload", uploadId=body["uploadId"],
                             buildCmd=["npm", "run", "build"], prod=False, force=False)
        assert ack["ok"], ack
        msgs = client.wait(ack["taskId"], timeout=90)
    assert final(msgs)["action"] == "done", final(msgs)
    assert worker_pid(msgs) == [worker.proc.pid]   # the worker took the job from Redis over TLS
    for proc in (gateway, worker):
        assert PASSWORD not in proc.stderr(), proc.stderr()
    assert "visible to every user in ps" in gateway.stderr()


def test_the_url_is_printed_with_the_ca_and_without_the_password(tmp_path, redis_tls, tls_deployment):
    """A gateway with the URL in the environment (FLOW_CLOUDBUILD_REDIS_URL): everything it prints,
    stdout and stderr, holds the URL only as ``rediss://:***@...``."""
    cluster, _, _ = tls_deployment
    proc = subprocess.Popen(
        server_argv(tmp_path, "--role", "gateway", "--shared-dir", str(cluster.shared),
                    "--secret-file", str(cluster.secret)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=server_env(**{protocol.TOKENS_ENV: TOKEN, "FLOW_CLOUDBUILD_REDIS_URL": redis_tls.url}))
    out: list[str] = []
    try:
        while not any(line.startswith("redis: ") for line in out):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the server stopped: {out} {proc.stderr.read() if proc.poll() is not None else ''}"
            out.append(line)
        [shown] = [line for line in out if line.startswith("redis: ")]
        ca = redis_tls.tls[0]
        assert shown == f"redis: rediss://:***@127.0.0.1:{redis_tls.port}/0?ssl_ca_certs={ca} (role gateway)\n"
        url = out[0].rsplit(" ", 1)[1].strip()
        wait_for(lambda: _healthy(url), 20, "the gateway to listen")
    finally:
        proc.terminate()
        rest, err = proc.communicate(timeout=20)
    assert PASSWORD not in "".join(out) + rest + err


def _healthy(url: str) -> bool:
    try:
        return http_get(url + "/healthz")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("case", ["unrelated-ca", "no-ca", "missing-ca-file", "wrong-host"])
def test_a_certificate_the_server_cannot_check_stops_it_in_one_line(tmp_path, redis_tls, other_ca, case):
    ca = {"unrelated-ca": str(other_ca), "no-ca": None, "missing-ca-file": str(tmp_path / "no-such-ca.pem"),
          "wrong-host": str(redis_tls.tls[0])}[case]
    host = "localhost" if case == "wrong-host" else "127.0.0.1"
    url = f"rediss://:{PASSWORD}@{host}:{redis_tls.port}/0" + (f"?ssl_ca_certs={ca}" if ca else "")
    result = subprocess.run(server_argv(tmp_path, "--role", "worker", "--secret-file", str(secret_file(tmp_path))),
                            capture_output=True, text=True, timeout=60,
                            env=server_env(**{protocol.TOKENS_ENV: TOKEN, "FLOW_CLOUDBUILD_REDIS_URL": url}))
    assert result.returncode == 2, result
    assert result.stdout == "", result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("flow-cloudbuild-server: error: "), line
    assert f"rediss://:***@{host}:{redis_tls.port}/0" in line, line
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr + result.stdout
    if case == "missing-ca-file":
        assert f"cannot read the CA file {ca} " in line and "No such file or directory" in line, line
    elif case == "wrong-host":
        assert "sent a TLS certificate for another name: Hostname mismatch" in line, line
        assert "Connect by a host name or address that Redis's certificate holds" in line, line
    else:
        assert "sent a TLS certificate this server does not trust: " in line, line
        assert "certificate" in line.split("does not trust: ", 1)[1], line   # the cause, as OpenSSL says it
    if case != "wrong-host":
        assert "Give the CA that signed Redis's certificate in the URL: " \
               "rediss://HOST:PORT/0?ssl_ca_certs=/path/ca.pem" in line, line
