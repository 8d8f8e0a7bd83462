"""``flow dev``: build the site, serve it on 127.0.0.1, rebuild on change, reload the browser.

The loop of a front-end developer (FIS's ``release --watch --live``, Vite's dev server) for a
kit whose build is a command that writes ``dist/``:

- the build runs with the project's build command (``[tool.flow.cloudbuild] build-cmd``, else
  ``npm run build``); its output streams to the terminal;
- after a build that succeeded, ``dist/`` is copied to a snapshot that the server serves, so a
  build that fails half-way (or deletes ``dist/`` first, as the template's does) never takes the
  site away: the last good output stays served, and the error shows in the terminal and as an
  overlay in every open tab;
- live reload: HTML responses get one ``<script src="/__flow/live.js">`` before ``</body>``;
  that script listens on ``/__flow/events`` (server-sent events, which reconnect by themselves)
  and reloads the page when a newer build is served. Nothing else is changed in any response.
- only requests for this machine are answered: ``Host`` must be ``localhost``, ``127.0.0.1`` or
  ``[::1]`` (or the ``--host`` given) with the server's port; anything else gets 403. Why: a web
  page the developer visits can point a name of its own at 127.0.0.1 (DNS rebinding) and would
  then read the unreleased site and its build errors as same-origin.

The server is the standard library's threading HTTP server: local, one user, no dependency.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flow_kit_cloudbuild.client.errors import PublishUsageError

if TYPE_CHECKING:  # http.server costs ~25 ms: imported only when `flow dev` serves
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 8000
PORT_TRIES = 20
OUTPUT_DIRS = ("dist", "build")
LIVE_PATH = "/__flow/live.js"
EVENTS_PATH = "/__flow/events"
KEEPALIVE = 15.0
ERROR_TAIL = 40          # lines of a failed build's output shown in the overlay
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::", "[::]")

LIVE_JS = r"""// flow dev: reload this page when a newer build is served; show build errors over it.
(function () {
  "use strict";
  var me = document.currentScript;
  var build = me ? Number(me.getAttribute("data-build")) : 0;
  var overlay = null;
  function show(message) {
    if (!overlay) {
      overlay = document.createElement("pre");
      overlay.id = "flow-dev-overlay";
      overlay.setAttribute("role", "alert");
      var s = overlay.style;
      s.position = "fixed"; s.left = "0"; s.right = "0"; s.top = "0"; s.maxHeight = "60vh";
      s.overflow = "auto"; s.margin = "0"; s.padding = "16px"; s.zIndex = "2147483647";
      s.background = "rgba(40, 0, 0, 0.93)"; s.color = "#ffdede"; s.font = "13px/1.4 monospace";
      s.whiteSpace = "pre-wrap";
      document.documentElement.appendChild(overlay);
    }
    overlay.textContent = message;  // text, never HTML: build output is not markup
  }
  function hide() { if (overlay) { overlay.remove(); overlay = null; } }
  var events = new EventSource("/__flow/events");
  window.__flowDev = { build: build, open: false };
  events.addEventListener("open", function () { window.__flowDev.open = true; });
  events.addEventListener("state", function (e) {
    var state = JSON.parse(e.data);
    if (state.build > build) { location.reload(); return; }
    if (state.error) { show("flow dev: the build failed; the last good build is shown\n\n" + state.error); }
    else { hide(); }
  });
})();
"""


class DevState:
    """What the server serves and tells the browsers: the current snapshot and the last error."""

    def __init__(self) -> None:
        self.build = 0
        self.site: Path | None = None
        self.error = ""
        self.changed = threading.Condition()

    def publish(self, *, site: Path | None = None, error: str = "") -> None:
        with self.changed:
            if site is not None:
                self.build += 1
                self.site = site
            self.error = error
            self.changed.notify_all()

    def snapshot(self) -> tuple[int, str]:
        with self.changed:
            return self.build, self.error


def served_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values (lower case) this server answers: the loopback names, and the
    ``--host`` given unless it is a wildcard, each with ``port`` (bare too on port 80)."""
    names = set(LOOPBACK_NAMES)
    if host.lower() not in WILDCARDS:
        names.add(f"[{host.strip('[]')}]" if ":" in host else host)
    out = {f"{name.lower()}:{port}" for name in names}
    if port == 80:
        out |= {name.lower() for name in names}
    return frozenset(out)


def _handler(state: DevState, live: bool, host: str = "127.0.0.1") -> type[BaseHTTPRequestHandler]:
    import mimetypes
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        server_version = "flow-dev"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is for builds
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            port = int(self.connection.getsockname()[1])  # the port this request came to
            asked = (self.headers.get("Host") or "").strip()
            if asked.lower() not in served_hosts(host, port):
                return self._send(403, (f"flow dev: refused Host {asked[:80]!r}; open http://localhost:{port}/ "
                                        "(other names are refused against DNS rebinding)\n").encode(),
                                  "text/plain; charset=utf-8")
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            if live and path == LIVE_PATH:
                return self._send(200, LIVE_JS.encode(), "text/javascript; charset=utf-8")
            if live and path == EVENTS_PATH:
                return self._events()
            return self._file(path)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _file(self, path: str) -> None:
            from urllib.parse import unquote

            with state.changed:
                site, build = state.site, state.build
            if site is None:
                return self._send(503, b"flow dev: no build has succeeded yet; see the terminal\n",
                                  "text/plain; charset=utf-8")
            target = (site / unquote(path).lstrip("/")).resolve()
            if not target.is_relative_to(site.resolve()):
                return self._send(404, b"not found\n", "text/plain; charset=utf-8")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                return self._send(404, f"flow dev: no {path[:200]} in the build output\n".encode(),
                                  "text/plain; charset=utf-8")
            body = target.read_bytes()
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if ctype == "text/html":
                if live:
                    body = inject(body, build)
                ctype += "; charset=utf-8"
            return self._send(200, body, ctype)

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen: tuple[int, str] | None = None
            try:
                while True:
                    with state.changed:
                        if state.snapshot() == seen:
                            state.changed.wait(KEEPALIVE)
                        now = (state.build, state.error)
                    if now != seen:
                        seen = now
                        data = json.dumps({"build": now[0], "error": now[1]})
                        self.wfile.write(f"event: state\ndata: {data}\n\n".encode())
                    else:
                        self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                return

    return Handler


def inject(html: bytes, build: int) -> bytes:
    """The page with the live-reload script before ``</body>`` (or at the end)."""
    tag = f'<script src="{LIVE_PATH}" data-build="{build}"></script>'.encode()
    at = html.lower().rfind(b"</body>")
    return html + tag if at < 0 else html[:at] + tag + html[at:]


def bind(host: str, port: int | None) -> ThreadingHTTPServer:
    """A server on ``port``; without one, the first free port from DEFAULT_PORT up."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    candidates = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES))
    last: OSError | None = None
    for p in candidates:
        try:
            server = ThreadingHTTPServer((host, p), BaseHTTPRequestHandler, bind_and_activate=False)
            server.allow_reuse_address = True
            server.daemon_threads = True
            server.server_bind()
            server.server_activate()
            return server
        except OSError as exc:
            last = exc
            server.server_close()
    if port is not None:
        raise PublishUsageError(f"port {port} on {host} is in use ({getattr(last, 'strerror', last)})",
                                "Pass another --port, or --port 0 for any free one")
    raise PublishUsageError(f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_TRIES - 1} on {host} are all in use",
                            "Pass a free one with --port, or --port 0 for any free one")


def build_command(root: Path, configured: list[str] | None) -> list[str]:
    """The project's build command; an npm script that does not exist is an error now."""
    argv = configured or (["npm", "run", "build"] if (root / "package.json").is_file() else None)
    if argv is None:
        raise PublishUsageError(f"no build command for {root}",
                                "Set build-cmd in [tool.flow.cloudbuild] (e.g. build-cmd = \"npm run build\")")
    if argv[:2] == ["npm", "run"] and len(argv) > 2:
        try:
            scripts = json.loads((root / "package.json").read_text(encoding="utf-8")).get("scripts") or {}
        except (OSError, ValueError, AttributeError):
            scripts = {}
        if argv[2] not in scripts:
            raise PublishUsageError(f"package.json has no {argv[2]!r} script",
                                    f"Add \"scripts\": {{\"{argv[2]}\": \"...\"}} to package.json, "
                                    "or set build-cmd in [tool.flow.cloudbuild]")
    if shutil.which(argv[0]) is None:
        raise PublishUsageError(f"{argv[0]} is not installed", f"Install {argv[0]}, or set another build-cmd")
    return argv


class Builder:
    """Runs the build, streams its output, and hands a good output to the server."""

    def __init__(self, root: Path, argv: list[str], state: DevState, snapshots: Path) -> None:
        self.root, self.argv, self.state, self.snapshots = root, argv, state, snapshots

    def __call__(self, changes: list[Any]) -> None:
        import collections
        import subprocess

        tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL)
        proc = subprocess.Popen(self.argv, cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            click.echo(line, err=True)
            tail.append(line)
        code = proc.wait()
        out = next((self.root / d for d in OUTPUT_DIRS if (self.root / d).is_dir()), None)
        if code != 0 or out is None:
            why = (f"`{' '.join(self.argv)}` exited with status {code}" if code != 0
                   else "the build wrote no dist/ or build/ directory")
            self.state.publish(error=why + "\n\n" + "\n".join(tail))
            raise PublishUsageError(f"build failed: {why}; the last good build stays served",
                                    "Fix the error above and save again")
        site = self.snapshots / f"build-{self.state.build + 1}"
        shutil.copytree(out, site, symlinks=True)
        old = self.state.site
        self.state.publish(site=site)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def run(root: Path, configured: list[str] | None, *, host: str, port: int | None, live: bool) -> None:
    import tempfile

    from flowcore.api import watch

    argv = build_command(root, configured)
    state = DevState()
    server = bind(host, port)
    server.RequestHandlerClass = _handler(state, live, host)
    url = f"http://{host}:{server.server_address[1]}/"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    snapshots = Path(tempfile.mkdtemp(prefix="flow-dev-"))
    click.echo(f"serving the build output at {url} (live reload {'on' if live else 'off'}); "
               "Ctrl-C stops", err=True)
    try:
        watch(root, Builder(root, argv, state, snapshots),
              ignore=[f"/{d}/" for d in OUTPUT_DIRS])
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        raise SystemExit(130) from None
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(snapshots, ignore_errors=True)


@click.command(name="dev")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port on 127.0.0.1 (default {DEFAULT_PORT}, or the next free one; 0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--live/--no-live", default=True, show_default=True,
              help="Reload open browser tabs after each rebuild and show build errors in them.")
@click.option("--build-cmd", default=None,
              help="Build command (default: [tool.flow.cloudbuild] build-cmd, else npm run build).")
def dev(port: int | None, host: str, live: bool, build_cmd: str | None) -> None:
    """Build the site, serve dist/ locally, rebuild on every change and reload the browser."""
    from flow_kit_cloudbuild.client.settings import resolve, split_build_cmd

    context = _context()
    root = Path(context.project_root) if context is not None and context.project_root else Path.cwd()
    configured = split_build_cmd(build_cmd) if build_cmd else resolve(
        context, server=None, token=None, build_cmd=None, timeout=None, source=None, branch=None,
        need_token=False).build_cmd
    run(root, configured, host=host, port=port, live=live)


def _context() -> Any:
    from flowcore.api import current

    try:
        return current()
    except LookupError:
        return None


__all__ = ["dev", "run", "inject", "build_command", "DEFAULT_PORT"]
