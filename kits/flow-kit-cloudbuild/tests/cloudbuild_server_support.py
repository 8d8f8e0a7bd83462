"""Real parts for the cloud build server tests: the server in a subprocess on loopback, a real
`git daemon` serving real repositories over git://, real npm and Python projects, and a
python-socketio client that collects a task's messages in seq order."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
KIT_SRC = REPO / "kits" / "flow-kit-cloudbuild" / "src"
if str(KIT_SRC) not in sys.path:
    sys.path.insert(0, str(KIT_SRC))

from flow_kit_cloudbuild import protocol  # noqa: E402

CHROMIUM = "/usr/bin/chromium"  # Debian's, driven through Playwright (it cannot download browsers here)
TOKEN = "test-token-alpha"
OTHER_TOKEN = "test-token-bravo"  # tokens have at least 16 characters
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "FLOW_CLOUDBUILD", "npm_config"))}
    env.update(PYTHONPATH=str(KIT_SRC), PYTHONUNBUFFERED="1", SERVER_SECRET="do-not-leak-me")
    env.update(extra)
    return env


OFFLINE_BUILD_ENV = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1", "UV_OFFLINE": "1",
                     "UV_PYTHON_DOWNLOADS": "never"}


class ServerProc:
    """`python -m flow_kit_cloudbuild.server` on a free loopback port."""

    def __init__(self, data_dir: Path, *args: str, config: dict | None = None,
                 tokens: tuple[str, ...] = (TOKEN, OTHER_TOKEN), env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.config = dict(config or {})
        self.config.setdefault("build-env", {}).update(OFFLINE_BUILD_ENV)
        self.config.setdefault("offline", True)
        self.tokens = tokens
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.data_dir.parent / f"{self.data_dir.name}-server.json"
        cfg_file.write_text(json.dumps(self.config))
        argv = [sys.executable, "-m", "flow_kit_cloudbuild.server", "--port", "0", "--data-dir",
                str(self.data_dir), "--config", str(cfg_file), *self.args]
        env = dict(self.env)
        if self.tokens:  # the environment, not --token: argv is visible in ps (the server warns)
            env[protocol.TOKENS_ENV] = ",".join(self.tokens)
        self.stderr_path = self.data_dir.parent / f"{self.data_dir.name}-stderr.log"
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"),
                                     text=True, env=server_env(**env), cwd=str(self.data_dir.parent))
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if "listening on" not in line:
            self.proc.wait(5)
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if http_get(self.url + "/healthz")[0] == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("server never became healthy: " + self.stderr())

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProc:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class GitDaemon:
    """`git daemon` serving every repository under ``base`` as git://127.0.0.1:<port>/<name>."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
             f"--port={self.port}", "--reuseaddr", "--informative-errors", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **GIT_ENV})
        _wait_port(self.port)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def commit_tree(repo: Path, files: dict[str, str | bytes], message: str = "commit") -> str:
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "main")
    for name, content in files.items():
        p = repo / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def npm_project(name: str = "demo", version: str = "1.0.0", build_js: str | None = None,
                scripts: dict[str, str] | None = None) -> dict[str, str]:
    """A package.json with no dependencies, its package-lock.json and a node build script."""
    build_js = build_js or (
        "const fs = require('fs');\n"
        "fs.mkdirSync('dist', {recursive: true});\n"
        "fs.writeFileSync('dist/app.js', 'console.log(\"built\");\\n');\n"
        "console.log('build done');\n")
    scripts = scripts or {"build": "node build.js"}
    pkg = {"name": name, "version": version, "private": True, "scripts": scripts}
    lock = {"name": name, "version": version, "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": name, "version": version}}}
    return {"package.json": json.dumps(pkg, indent=2) + "\n",
            "package-lock.json": json.dumps(lock, indent=2) + "\n", "build.js": build_js}


PY_BACKEND = '''\
"""A complete PEP 517 backend in the project itself: builds need nothing from an index."""
import base64, hashlib, os, tarfile, zipfile

NAME, VERSION = "pydemo", "0.1.0"

def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    fname = f"{NAME}-{VERSION}-py3-none-any.whl"
    files = {
        "pydemo/__init__.py": open("src/pydemo/__init__.py", "rb").read(),
        f"{NAME}-{VERSION}.dist-info/METADATA":
            f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
        f"{NAME}-{VERSION}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\\nGenerator: inline\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = f"{NAME}-{VERSION}.dist-info/RECORD"
    with zipfile.ZipFile(os.path.join(wheel_directory, fname), "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(record, "\\n".join([_record_line(n, d) for n, d in files.items()] + [f"{record},,"]) + "\\n")
    print("built wheel", fname)
    return fname

def build_sdist(sdist_directory, config_settings=None):
    base = f"{NAME}-{VERSION}"
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as tf:
        for name in ("pyproject.toml", "backend.py", "src/pydemo/__init__.py"):
            tf.add(name, arcname=f"{base}/{name}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode()
        info.size = len(data)
        import io
        tf.addfile(info, io.BytesIO(data))
    return base + ".tar.gz"
'''


def python_project() -> dict[str, str]:
    """A Python project whose build backend lives in-tree (requires = []): `uv build` works offline."""
    return {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
                          '[project]\nname = "pydemo"\nversion = "0.1.0"\n',
        "backend.py": PY_BACKEND,
        "src/pydemo/__init__.py": "VALUE = 42\n",
    }


def tar_gz(files: dict[str, str] | dict[str, bytes]) -> bytes:
    """A .tar.gz of ``files`` (name -> text or bytes), as `flow publish --source upload` sends."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(server: Any, body: bytes, token: str = TOKEN) -> tuple[int, dict]:
    """POST an archive to /api/uploads: (status, JSON body)."""
    status, raw = http_request("POST", server.url + "/api/uploads", body=body, token=token,
                               headers={"Content-Type": "application/gzip"})
    return status, json.loads(raw)


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    return http_request("GET", url, token=token)


def http_request(method: str, url: str, body: bytes | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Client:
    """A python-socketio sync client that keeps every task's messages, ordered by seq."""

    def __init__(self, url: str, token: str = TOKEN) -> None:
        import socketio

        self.sio = socketio.Client(reconnection=False)
        self._lock = threading.Lock()
        self.messages: dict[str, dict[int, dict]] = {}
        self.duplicates: list[dict] = []
        self._final: dict[str, threading.Event] = {}
        self.sio.on(protocol.EVENT_MESSAGE, self._on_message)
        self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)

    def _event(self, task_id: str) -> threading.Event:
        with self._lock:
            return self._final.setdefault(task_id, threading.Event())

    def _on_message(self, msg: dict) -> None:
        task_id, seq = msg["meta"]["taskId"], msg["meta"]["seq"]
        with self._lock:
            box = self.messages.setdefault(task_id, {})
            if seq in box:
                self.duplicates.append(msg)
            box[seq] = msg
        if msg["data"]["action"] in protocol.FINAL:
            self._event(task_id).set()

    def call(self, event: str, data: Any = None, timeout: float = 15) -> Any:
        return self.sio.call(event, data, timeout=timeout)

    def publish(self, **payload: Any) -> dict:
        return self.call(protocol.EVENT_PUBLISH, payload)

    def wait(self, task_id: str, timeout: float = 120) -> list[dict]:
        """All messages of the task up to its final one, in seq order, checked gapless."""
        if not self._event(task_id).wait(timeout):
            raise AssertionError(f"task {task_id} did not finish in {timeout}s: "
                                 f"{[m['data'] for m in self.ordered(task_id)][-5:]}")
        deadline = time.monotonic() + 10
        while True:  # the final message can overtake earlier ones in the client's threads
            msgs = self.ordered(task_id)
            if msgs and [m["meta"]["seq"] for m in msgs] == list(range(1, len(msgs) + 1)) \
                    and msgs[-1]["data"]["action"] in protocol.FINAL:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(f"messages of {task_id} have gaps: {[m['meta']['seq'] for m in msgs][:50]}")
            time.sleep(0.02)

    def ordered(self, task_id: str) -> list[dict]:
        with self._lock:
            box = dict(self.messages.get(task_id, {}))
        return [box[k] for k in sorted(box)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sio.disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def final(msgs: list[dict]) -> dict:
    return msgs[-1]["data"]


def logs(msgs: list[dict]) -> list[str]:
    """Every output line of the task's log messages, in order (a message may carry several)."""
    return [line for m in msgs if m["data"]["action"] == protocol.ACTION_LOG
            for line in protocol.log_lines(m)]


def actions(msgs: list[dict]) -> list[str]:
    return [m["data"]["action"] for m in msgs if m["data"]["action"] != protocol.ACTION_LOG]


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for s in servers:
            s.stop()


_repo_counter = [0]


def new_repo(git_daemon: GitDaemon, files: dict[str, str | bytes]) -> str:
    """A new repository on the git daemon holding ``files`` on branch main; returns its URL."""
    _repo_counter[0] += 1
    name = f"repo{_repo_counter[0]}"
    commit_tree(git_daemon.base / name, files)
    return git_daemon.url(name)
