"""`flow-cloudbuild-server`: one command, embedded defaults.

    flow-cloudbuild-server                       # 127.0.0.1:7001, data in the user data dir
    flow-cloudbuild-server --port 0 --data-dir /srv/flow --concurrency 4 --config server.toml

Without any token (--token, --tokens-file, FLOW_CLOUDBUILD_TOKENS) the server makes one, keeps
it in <data-dir>/server-token (mode 0600) and prints it, so a first start needs no setup.
The first stdout line is always ``flow-cloudbuild-server listening on <url>``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from flow_kit_cloudbuild import __version__, protocol
from flow_kit_cloudbuild.server.config import (
    GENERATE_SECRET,
    MIN_TOKEN_LENGTH,
    ServerConfig,
    apply_file,
    check_deploy_domain,
    default_data_dir,
    load_file,
    parse_size,
    parse_uid_range,
    read_secret,
    read_tokens,
    token_names,
)
from flow_kit_cloudbuild.server.errors import ServerConfigError
from flow_kit_cloudbuild.server.runtime.sandbox import make_sandbox
from flowcore.api import FlowError

#: A click command callback being decorated with options (each option keeps its type).
_Command = TypeVar("_Command", bound=Callable[..., Any])


def _server_token(data_dir: Path) -> str:
    path = data_dir / "server-token"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError:
        raise click.BadParameter(f"{value[:40]!r} is not a size; write it like 4G, 512M or 65536") from None


def _uid_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_uid_range(value)
    except ValueError:
        raise click.BadParameter(f"{value[:40]!r} is not a uid range; write it like 1000000-1999999") from None


def sandbox_options(f: _Command) -> _Command:
    """The build sandbox's options (docs/cloud-build.md, "Threat model")."""
    options = [
        click.option("--no-sandbox", "no_sandbox", is_flag=True, default=False,
                     help="Run builds without the bubblewrap sandbox: only for a trusted, single-user server."),
        click.option("--no-cgroups", "no_cgroups", is_flag=True, default=False,
                     help="Run builds without cgroups where none can be had: their memory, CPU and IO are "
                          "then unbounded."),
        click.option("--build-user", default=None,
                     help="As root: the user builds run as (default: one unprivileged uid per token)."),
        click.option("--build-network/--no-build-network", default=None,
                     help="Give the build step network access (install reaches the registries; default off)."),
        click.option("--registry-host", "registry_hosts", multiple=True, metavar="HOST[:PORT][=ADDRESS]",
                     help="A package registry the install step may reach through the egress proxy (repeatable; "
                          "replaces the default registry.npmjs.org, pypi.org, files.pythonhosted.org). "
                          "A private or loopback registry must be named by address, e.g. 10.1.2.3:8081."),
        click.option("--build-memory", callback=_size, default=None,
                     help="Memory of a build's processes together, its /tmp and page cache included, "
                          "e.g. 4G (default 4G; 0: no limit)."),
        click.option("--build-processes", type=click.IntRange(0), default=None,
                     help="Processes a build may run at once (default 512; 0: no limit)."),
        click.option("--build-file-size", callback=_size, default=None,
                     help="Largest file a build may write (default 2G)."),
        click.option("--build-disk", callback=_size, default=None,
                     help="Disk a build's work directory may use (default 10G)."),
        click.option("--build-files", type=click.IntRange(1), default=None,
                     help="Files and directories a build's work directory may hold (default 200000)."),
        click.option("--build-uid-range", callback=_uid_range, default=None, metavar="START-END",
                     help="As root: the uids given to token owners' builds, one each (default 1000000-1999999)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def apply_sandbox_options(cfg: ServerConfig, opts: dict, secrets: tuple[Path | None, ...]) -> None:
    """Merge the sandbox options into ``cfg`` and check a sandbox can be made (else refuse)."""
    for key in ("build_user", "build_network", "build_memory", "build_processes", "build_file_size",
                "build_disk", "build_files", "build_uid_range"):
        if opts.get(key) is not None:
            setattr(cfg, key, opts[key])
    if opts.get("no_sandbox"):
        cfg.sandbox = False
    if opts.get("no_cgroups"):
        cfg.build_cgroups = False
    if opts.get("registry_hosts"):
        from flow_kit_cloudbuild.server.registry_hosts import parse_registry_hosts

        try:
            parse_registry_hosts(opts["registry_hosts"])
        except ValueError as exc:
            raise ServerConfigError(f"--registry-host: {exc}", "Write HOST, HOST:PORT, an address, or "
                                    "HOST:PORT=ADDRESS, e.g. --registry-host 10.1.2.3:8081") from None
        cfg.registry_hosts = tuple(opts["registry_hosts"])
    cfg.secret_paths = tuple(Path(p).expanduser().resolve() for p in secrets if p is not None)
    if not cfg.sandbox:
        click.echo("flow-cloudbuild-server: warning: --no-sandbox: builds run as this server's user with "
                   "access to its files, tokens and other tenants' artifacts; use it only on a trusted "
                   "single-user machine", err=True)
        return
    from flow_kit_cloudbuild.server.runtime.cgroups import CgroupsUnavailable
    from flow_kit_cloudbuild.server.runtime.sandbox import SandboxUnavailable

    if not cfg.build_cgroups:
        click.echo("flow-cloudbuild-server: warning: --no-cgroups: a build's memory (its /tmp included), CPU and "
                   "IO are unbounded and its processes are limited per user only (docs/cloud-build.md, "
                   "\"Threat model\")", err=True)
    try:
        make_sandbox(cfg).probe()
    except SandboxUnavailable as exc:
        raise ServerConfigError(
            f"cannot make a build sandbox: {exc}",
            "Install bubblewrap (apt-get install bubblewrap), or pass --no-sandbox on a trusted "
            "single-user machine") from None
    except CgroupsUnavailable as exc:
        raise ServerConfigError(
            f"cannot limit builds with cgroups: {exc}",
            "Run the server as root with the memory and pids cgroup controllers, or in a cgroup v2 subtree "
            "delegated to it (systemd: Delegate=yes); or pass --no-cgroups, which leaves builds' memory, "
            "CPU and IO unbounded") from None


GENERATE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe())"'


def check_tokens(tokens: set[str], *, from_argv: bool) -> None:
    """Refuse guessable tokens; warn that --token shows the token to every user (ps)."""
    short = sum(1 for t in tokens if len(t) < MIN_TOKEN_LENGTH)
    if short:
        raise ServerConfigError(
            f"{short} token(s) are shorter than {MIN_TOKEN_LENGTH} characters and could be guessed",
            f"Generate one with: {GENERATE_TOKEN}")
    if from_argv:
        click.echo("flow-cloudbuild-server: warning: a token given with --token is visible to every user "
                   "in ps; put tokens in FLOW_CLOUDBUILD_TOKENS or a --tokens-file instead", err=True)


def access_options(f: _Command) -> _Command:
    """The handshake deadline, per-token quotas and retention (docs/cloud-build.md)."""
    options = [
        click.option("--auth-timeout", type=click.FloatRange(0.1, 3600), default=None,
                     help="Seconds a connection may stay open without a valid token (default 10)."),
        click.option("--max-builds-per-token", type=click.IntRange(1), default=None,
                     help="Builds one token may run at once (default: concurrency - 1, at least 1)."),
        click.option("--max-pending-upload-bytes", callback=_size, default=None,
                     help="Bytes of uploads one token may hold that no task used yet (default 200M; 0: no limit)."),
        click.option("--max-pending-uploads", type=click.IntRange(1), default=None,
                     help="Uploads one token may hold that no task used yet (default 16)."),
        click.option("--upload-retention-hours", type=click.FloatRange(0, min_open=True), default=None,
                     help="Delete an upload no task used after this many hours (default 1)."),
        click.option("--artifact-max-bytes", callback=_size, default=None,
                     help="Total size of one task's artifacts, sparse files at their full size (default 1G)."),
        click.option("--artifact-max-files", type=click.IntRange(1), default=None,
                     help="Files one task may publish (default 10000)."),
        click.option("--cache-max-bytes", callback=_size, default=None,
                     help="Size of one token's package caches; the least recently used go first (default 2G)."),
        click.option("--cache-max-files", type=click.IntRange(1), default=None,
                     help="Files in one token's package caches (default 200000)."),
        click.option("--retention-days", type=click.FloatRange(0), default=None,
                     help="Delete finished tasks and their artifacts after this many days; prod releases "
                          "stay (default 30; 0: keep everything)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def apply_access_options(cfg: ServerConfig, opts: dict) -> None:
    for key in ("auth_timeout", "max_builds_per_token", "max_pending_upload_bytes", "max_pending_uploads",
                "upload_retention_hours", "retention_days", "artifact_max_bytes", "artifact_max_files",
                "cache_max_bytes", "cache_max_files"):
        value = opts.pop(key, None)
        if value is not None:
            setattr(cfg, key, value)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help=f"Address to bind (default {protocol.DEFAULT_HOST}).")
@click.option("--port", type=int, default=None, help=f"Port (default {protocol.DEFAULT_PORT}; 0 picks a free one).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where tasks, logs, caches and artifacts live (default: the user data dir).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None, help="Tasks built at once (default 2).")
@click.option("--token", "tokens", multiple=True,
              help="A client token (repeatable; visible in ps: prefer --tokens-file or FLOW_CLOUDBUILD_TOKENS).")
@click.option("--tokens-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A file of client tokens, one per line (name:token names who publishes with it).")
@click.option("--token-label", "token_labels", multiple=True, metavar="HASH=NAME",
              help="Name a token in the dashboard: the 8 hex digits it shows as 'token HASH', = and a name "
                   "(repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Server config file (TOML or JSON): allowlists, release gates, limits.")
@click.option("--max-upload-bytes", type=click.IntRange(1), default=None, help="Largest source upload accepted.")
@click.option("--public-url", default=None,
              help="The URL clients use: artifact links, and the only Origin the dashboard accepts "
                   "(default http://host:port).")
@click.option("--forwarded-allow-ips", default=None,
              help="Comma-separated addresses (or networks) of the reverse proxies whose X-Forwarded-For "
                   "names the client (default: none; the TCP peer is the client).")
@click.option("--store", default=None, metavar="s3://BUCKET/PREFIX",
              help="Keep artifacts and uploads in S3-compatible object storage (endpoint and keys from "
                   "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; default: the data "
                   "dir). With --redis-url no process then needs a --shared-dir.")
@click.option("--deploy-domain", default=None, metavar="DOMAIN",
              help="Serve each deployment at its own origin, http://<deployment>.DOMAIN/, and the stable "
                   "aliases at <project>.DOMAIN and <project>--<branch>.DOMAIN; needs a wildcard DNS name "
                   "(default localhost:PORT, which browsers resolve with every subdomain).")
@click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The server secret that signs sessions and Redis records; the same file for every "
                   "process of a Redis deployment (required with --redis-url).")
@click.option("--offline", is_flag=True, default=None, help="Builds get no network index (uv/npm/pip offline).")
@click.option("--build-cache/--no-build-cache", "build_cache", default=None,
              help="Reuse the artifacts of an earlier build of the same source, command and toolchain "
                   "instead of building again (default: on).")
@click.option("--cache-scope", type=click.Choice(["token", "team"]), default=None,
              help="Whose builds a publish may reuse: its own token's (token, the default), or those of "
                   "every token of this server (team).")
@click.option("--provenance-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The Ed25519 private key (PEM) that signs each deployment's provenance (default: derived "
                   "from --secret-file, else made once in the data dir).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.option("--redis-url", default=None, envvar="FLOW_CLOUDBUILD_REDIS_URL", show_envvar=True,
              help="Keep tasks, the job queue and Socket.IO fan-out in Redis (several gateways and workers); "
                   "rediss:// for TLS. With a password, pass it in the environment or --redis-password-file.")
@click.option("--redis-password-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --redis-url: a file whose first line is the Redis password (of the URL's user).")
@click.option("--role", type=click.Choice(["all", "gateway", "worker"]), default="all", show_default=True,
              help="With --redis-url: serve clients (gateway), run builds (worker), or both.")
@click.option("--shared-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --redis-url: uploads and artifacts, shared by every process (default: the data dir).")
@click.option("--heartbeat-timeout", type=click.FloatRange(0.5), default=30.0, show_default=True,
              help="With --redis-url: seconds without a worker heartbeat before its task is retried.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True,
              help="With --redis-url: attempts of a task whose worker died, before it fails.")
@click.option("--queue-timeout", type=click.FloatRange(0.5), default=None,
              help="With --redis-url: seconds a task waits while no worker is running, before it fails "
                   "(default 600).")
@access_options
@sandbox_options
@click.version_option(__version__, prog_name="flow-cloudbuild-server",
                      message="%(prog)s %(version)s")  # as `flow --version`: NAME VERSION
def serve(host: str | None, port: int | None, data_dir: Path | None, concurrency: int | None,
          tokens: tuple[str, ...], tokens_file: Path | None, token_labels: tuple[str, ...],
          config_file: Path | None,
          max_upload_bytes: int | None, public_url: str | None, forwarded_allow_ips: str | None,
          secret_file: Path | None, offline: bool | None, log_level: str, redis_url: str | None,
          redis_password_file: Path | None, role: str, shared_dir: Path | None,
          heartbeat_timeout: float, max_attempts: int, queue_timeout: float | None, deploy_domain: str | None,
          store: str | None, build_cache: bool | None, cache_scope: str | None, provenance_key: Path | None,
          **sandbox_opts: Any) -> None:
    """Run the flow cloud build server (Socket.IO + HTTP, one process)."""
    redis_opts = None
    if redis_url:
        from flow_kit_cloudbuild.server.backends.redis import connect
        from flow_kit_cloudbuild.server.backends.redis.roles import RedisOptions

        if secret_file is None:
            raise ServerConfigError(
                "Redis mode needs --secret-file: it signs the sessions and jobs every process reads from Redis",
                f"Make one with: {GENERATE_SECRET} > FILE (mode 0600), and pass the same --secret-file to every "
                "gateway and worker")
        _warn_password_on_argv(redis_url)
        redis_url = connect.with_password(redis_url, redis_password_file)
        problem = connect.problem(redis_url)
        if problem is not None:
            raise problem
        redis_opts = RedisOptions(redis_url, role, shared_dir, heartbeat_timeout, max_attempts)
    elif role != "all" or shared_dir is not None or redis_password_file is not None:
        raise ServerConfigError("--role, --shared-dir and --redis-password-file need --redis-url",
                                "Pass --redis-url redis://HOST:PORT/0 (or set FLOW_CLOUDBUILD_REDIS_URL)")
    cfg = ServerConfig(data_dir=default_data_dir())
    if config_file is not None:
        apply_file(cfg, load_file(config_file), config_file)
    for attr, value in (("host", host), ("port", port), ("concurrency", concurrency),
                        ("max_upload_bytes", max_upload_bytes), ("public_url", public_url),
                        ("forwarded_allow_ips", forwarded_allow_ips), ("deploy_domain", deploy_domain),
                        ("store", store), ("build_cache", build_cache), ("cache_scope", cache_scope),
                        ("provenance_key", provenance_key),
                        ("offline", offline), ("queue_timeout", queue_timeout)):
        if value is not None:
            setattr(cfg, attr, value)
    if data_dir is not None:
        cfg.data_dir = data_dir
    cfg.data_dir = cfg.data_dir.expanduser().resolve()
    if cfg.deploy_domain is not None:
        check_deploy_domain(cfg.deploy_domain)
    found = read_tokens(tokens, tokens_file)
    check_tokens(found, from_argv=bool(tokens))
    apply_access_options(cfg, sandbox_opts)
    generated = None
    if not found:
        generated = _server_token(cfg.data_dir)
        found = {generated}
    cfg.tokens = frozenset(found)
    cfg.token_names = token_names(found, tokens_file, token_labels)
    if secret_file is not None:
        cfg.secret = read_secret(secret_file)
        cfg.secret_given = True
    apply_sandbox_options(cfg, sandbox_opts, secrets=(cfg.data_dir, tokens_file, config_file, secret_file,
                                                      redis_password_file, cfg.provenance_key))

    try:
        # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says
        # TCP, and with Nagle on, every reply written in two parts (headers, body) on a kept-alive
        # connection waited ~40 ms for the client's delayed ACK
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
    except OSError as exc:
        raise ServerConfigError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}",
                                "Pick another --port or stop what uses it") from None
    cfg.port = sock.getsockname()[1]
    if redis_opts is not None:  # the shared-dir probe: refuse before listening
        from flow_kit_cloudbuild.server.backends.redis.roles import join

        join(cfg, redis_opts)

    import logging

    import uvicorn

    from flow_kit_cloudbuild.server.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = create_app(cfg, redis=redis_opts)
    click.echo(f"flow-cloudbuild-server listening on http://{cfg.host}:{cfg.port}", err=False)
    click.echo(f"data dir: {cfg.data_dir}")
    if generated:
        click.echo(f"token: {generated} (kept in {cfg.data_dir / 'server-token'})")
    if redis_opts is not None:
        from flow_kit_cloudbuild.server.backends.redis.connect import redact

        click.echo(f"redis: {redact(redis_opts.url)} (role {role})")
    sys.stdout.flush()
    # Whose X-Forwarded-For names the client: only the proxies the operator named. uvicorn's own
    # default trusts 127.0.0.1, where a build's install step can connect from, and would let it
    # pick the address its failed tokens count against (docs/cloud-build.md, "Tokens").
    trusted = [a.strip() for a in (cfg.forwarded_allow_ips or "").split(",") if a.strip()]
    if not trusted and os.environ.get("FORWARDED_ALLOW_IPS"):
        click.echo("flow-cloudbuild-server: warning: FORWARDED_ALLOW_IPS is ignored; name your proxy with "
                   "--forwarded-allow-ips", err=True)
    if not cfg.public_url and cfg.host in ("0.0.0.0", "::", ""):
        click.echo(f"flow-cloudbuild-server: warning: without --public-url the dashboard accepts sign-ins only "
                   f"from pages at {cfg.base_url}; pass the URL browsers use, e.g. --public-url "
                   f"http://build.example.com:{cfg.port}", err=True)
    uv_cfg = uvicorn.Config(server.asgi, log_level=log_level, lifespan="on", ws="auto",
                            timeout_graceful_shutdown=5, proxy_headers=bool(trusted),
                            forwarded_allow_ips=trusted)
    # Redis mode: a stopping worker's tasks are another worker's to retry, not failed here
    service = server.service
    _uvicorn_server(uv_cfg, service.drain if service.policy.drains_on_sigterm else None).run(sockets=[sock])


def _warn_password_on_argv(url: str) -> None:
    """A password written into --redis-url on the command line is visible to every user in ps."""
    from urllib.parse import urlsplit

    ctx = click.get_current_context()
    try:
        has_password = urlsplit(url).password is not None
    except ValueError:
        return
    if has_password and ctx.get_parameter_source("redis_url") == click.core.ParameterSource.COMMANDLINE:
        click.echo("flow-cloudbuild-server: warning: the password in --redis-url is visible to every user in ps; "
                   "set FLOW_CLOUDBUILD_REDIS_URL or use --redis-password-file instead", err=True)


def _uvicorn_server(uv_cfg: Any, drain: Callable[[], Awaitable[None]] | None) -> Any:
    """uvicorn's Server, which on SIGTERM runs ``drain`` before it closes the connections.

    uvicorn closes every connection first and runs the app's shutdown (TaskService.stop) after:
    the final message of a build the stop failed went to no one, and ``flow publish`` tried to
    reconnect for a minute. Draining first delivers it while the clients are still connected.
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if drain is not None and not self.force_exit:
                for listener in self.servers:  # no new connections meanwhile
                    listener.close()
                try:
                    await drain()
                except Exception:  # the shutdown goes on; TaskService.stop tries again
                    logging.getLogger("flow_kit_cloudbuild.server").exception("drain failed")
            await super().shutdown(sockets)

    return Server(uv_cfg)


def main() -> None:
    try:
        serve.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FlowError as exc:
        click.echo(f"flow-cloudbuild-server: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
