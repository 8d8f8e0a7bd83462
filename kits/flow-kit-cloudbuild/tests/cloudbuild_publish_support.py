"""Real parts for the ``flow publish`` tests: a build server, a git host, projects.

* :class:`BuildServer` runs the real ``flow-cloudbuild-server`` (from the flow-managed
  environment the kit was installed into) on a free loopback port with its own data dir.
* :class:`GitHost` serves bare repositories with ``git daemon`` on a free loopback port, so
  ``--source git`` builds from a real ``git://`` remote.
* :func:`make_site` writes a small npm project with no dependencies (a committed
  package-lock.json, ``node`` scripts that print, fail or take their time).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path)

from offline import FLOW, REPO, offline_env

__all__ = ["BuildServer", "Flow", "GitHost", "free_port", "make_site", "git", "open_deployment", "is_deployment_url",
           "TOKEN", "needs_node", "publish", "json_lines",
           "assert_protocol_shape", "error_lines", "git_project"]

TOKEN = "publish-tests-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_deployment_url(url: str, port: int) -> bool:
    """``http://<24 hex digits>.localhost:<port>/``: what ``flow publish`` prints last."""
    import re

    return re.fullmatch(rf"http://[0-9a-f]{{24}}\.localhost:{port}/", url) is not None


def open_deployment(url: str, path: str = "") -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` + ``path`` (``http://<label>.localhost:<port>/``) from 127.0.0.1 with the Host
    header a browser sends (browsers resolve *.localhost themselves; this machine's resolver
    need not)."""
    import http.client

    host = url.split("://", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection("127.0.0.1", int(host.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/" + path, headers={"Host": host})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"git {args}: {result.stderr}"
    return result.stdout


class BuildServer:
    """The real flow-cloudbuild-server as a subprocess (restartable on the same port)."""

    def __init__(self, executable: Path, data_dir: Path, token: str = TOKEN,
                 port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.executable = executable
        self.data_dir = data_dir
        self.token = token
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BuildServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_CLOUDBUILD")}
        self.proc = subprocess.Popen(
            [str(self.executable), "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--token", self.token, *self.extra],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str) -> object:
        request = urllib.request.Request(self.url + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())


class GitHost:
    """``git daemon`` serving every bare repository under ``base`` on a loopback port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--export-all", f"--base-path={base}", "--reuseaddr",
             "--listen=127.0.0.1", f"--port={self.port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("git daemon did not start")

    def new_repo(self, name: str) -> tuple[str, Path]:
        """A bare repository: ``(git:// URL to fetch, local path to push to)``."""
        path = self.base / f"{name}.git"
        git(self.base, "init", "-q", "--bare", "-b", "main", str(path))
        return f"git://127.0.0.1:{self.port}/{name}.git", path

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


BUILD_JS = """\
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.html", "<h1>" + require("./package.json").version + "</h1>\\n");
console.log("wrote dist/index.html");
"""

SLOW_JS = """\
const fs = require("fs");
const lines = Number(process.env.SLOW_LINES || "%d");
let i = 0;
const timer = setInterval(() => {
  i += 1;
  console.log("slow line " + i);
  if (i >= lines) {
    clearInterval(timer);
    fs.mkdirSync("dist", { recursive: true });
    fs.writeFileSync("dist/slow.txt", "done\\n");
  }
}, %d);
"""


def make_site(root: Path, name: str = "demo-site", version: str = "1.0.0",
              slow_lines: int = 40, slow_interval_ms: int = 100,
              flow_toml: str | None = None) -> Path:
    """An npm project without dependencies; scripts: build, slow, fail."""
    root.mkdir(parents=True, exist_ok=True)
    package = {"name": name, "version": version, "private": True,
               "scripts": {"build": "node build.js", "slow": "node slow.js",
                           "fail": "node fail.js"}}
    (root / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    lock = {"name": name, "version": version, "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": name, "version": version}}}
    (root / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    (root / "build.js").write_text(BUILD_JS)
    (root / "slow.js").write_text(SLOW_JS % (slow_lines, slow_interval_ms))
    (root / "fail.js").write_text('console.log("compiling");\n'
                                  'console.error("error: boom in fail.js");\nprocess.exit(3);\n')
    (root / "flow.toml").write_text(flow_toml if flow_toml is not None else
                                    '[tool.flow]\nbuildkit = "flow-kit-cloudbuild"\n')
    (root / ".gitignore").write_text("node_modules/\ndist/\n.flow/\n")
    return root
# -- flow with the kit installed, and the fixtures of the publish tests ----------------------

KIT_DIR = REPO / "kits" / "flow-kit-cloudbuild"

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="the cloud build tests build npm projects: need node, npm")


class Flow:
    """Runs ``flow`` with one FLOW_HOME (the kit installed there)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        env = offline_env(self.home, **extra)
        for key in ("FLOW_CLOUDBUILD_TOKEN", "FLOW_CLOUDBUILD_SERVER"):
            if key not in extra:
                env.pop(key, None)
        return env

    def __call__(self, *args: str, cwd: Path, timeout: float = 180,
                 **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FLOW, *args], cwd=cwd, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, *args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*FLOW, *args], cwd=cwd, env=self.env(**env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)


def publish(flow: Flow, server: BuildServer, project: Path, *args: str,
            **env: str) -> subprocess.CompletedProcess[str]:
    return flow("publish", "--server", server.url, "--token", server.token, *args,
                cwd=project, **env)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def assert_protocol_shape(messages: list[dict]) -> None:
    for message in messages:
        assert set(message) == {"meta", "data"}
        assert set(message["meta"]) == {"timestamp", "taskId", "seq"}
        assert isinstance(message["meta"]["timestamp"], int)
        assert isinstance(message["meta"]["seq"], int)
        assert set(message["data"]) == {"action", "payload"}
        assert isinstance(message["data"]["payload"]["message"], str)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("flow: error:")]


def git_project(root: Path, git_host: GitHost, name: str, **site) -> tuple[Path, Path]:
    """A site cloned from the git host (fetch URL git://...), pushes going to the bare path."""
    url, bare = git_host.new_repo(name)
    seed = make_site(root.parent / f"{name}-seed", name=name, **site)
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "first")
    git(seed, "push", "-q", str(bare), "main")
    git(root.parent, "clone", "-q", url, str(root))
    git(root, "remote", "set-url", "--push", "origin", str(bare))
    return root, bare
