"""Server configuration: command-line options merged over an optional config file.

The config file (``--config``, TOML or JSON) holds what an operator sets once: the build
command allowlist, the repository policy, release gates (freeze windows, pre-build checks),
limits and extra build environment. Command-line options win over the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.errors import ServerConfigError
from flow_kit_cloudbuild.server.registry_hosts import DEFAULT_REGISTRY_HOSTS

#: Build command shapes allowed by default. ``<script>`` stands for the name of a script that
#: exists in the project's package.json (checked after download, before install).
DEFAULT_BUILD_COMMANDS: list[list[str]] = [
    ["npm", "run", "<script>"],
    ["npm", "ci"],
    ["python", "-m", "build"],
    ["uv", "build"],
]
DEFAULT_PROTOCOLS = ("https", "git")
#: The package registries the install step may reach (egress.py; --registry-host replaces them).
MIN_TOKEN_LENGTH = 16  # client tokens shorter than this are refused at start
MIN_SECRET_LENGTH = 32  # characters of a --secret-file (hex: 128 bits)
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_hex(32))"'


@dataclass(frozen=True)
class FreezeWindow:
    """No prod publish between ``start`` and ``end`` (aware datetimes)."""

    name: str
    start: datetime
    end: datetime

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class PreBuildCheck:
    """A server-configured command that must exit 0 in the source tree before the build."""

    name: str
    argv: list[str]


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_PORT
    public_url: str | None = None          # base of artifact URLs and the dashboard's origin; default http://host:port
    forwarded_allow_ips: str | None = None  # proxies whose X-Forwarded-For is believed; None: no peer
    # where deployments are served (deployments.py): "<deployment>.<deploy-domain>"; None: localhost:<port>
    deploy_domain: str | None = None
    # artifacts and uploads (storage/objects.py): None = the data dir, or "s3://bucket/prefix"
    store: str | None = None
    targets: list[Any] = field(default_factory=list)  # storage.targets.Target: prod releases copied there
    concurrency: int = 2
    tokens: frozenset[str] = frozenset()
    token_names: dict[str, str] = field(default_factory=dict)  # token hash -> who (the dashboard's "Who")
    build_commands: list[list[str]] = field(default_factory=lambda: [list(c) for c in DEFAULT_BUILD_COMMANDS])
    allowed_protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    allowed_hosts: tuple[str, ...] | None = None   # None: any host
    freeze_windows: list[FreezeWindow] = field(default_factory=list)
    checks: list[PreBuildCheck] = field(default_factory=list)
    build_env: dict[str, str] = field(default_factory=dict)
    offline: bool = False
    default_timeout: int = protocol.DEFAULT_TIMEOUT
    max_timeout: int = 3600
    max_upload_bytes: int = protocol.MAX_UPLOAD_BYTES
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_unpacked_files: int = 100_000
    max_log_line: int = protocol.MAX_LOG_LINE
    max_log_bytes: int = 20 * 1024 * 1024
    max_event_bytes: int = 64 * 1024
    keep_workdirs: bool = False
    queue_timeout: float = 600.0           # Redis mode: how long a task waits while no worker is up
    # The build sandbox (sandbox.py, docs/cloud-build.md "Threat model").
    sandbox: bool = True                   # False only with --no-sandbox: trusted setups
    build_user: str = "auto"               # root servers: "auto" = one uid per token
    build_network: bool = False            # the build step's network (install has the egress proxy)
    # The hosts the install step's egress proxy lets builds reach (egress.py; "host", "host:port",
    # an address, or "host:port=address"); loopback and private addresses only when named.
    registry_hosts: tuple[str, ...] = DEFAULT_REGISTRY_HOSTS
    build_memory: int = 4 * 1024 ** 3      # memory of a build's processes together (cgroup), /tmp included
    build_processes: int = 512             # processes of a build at once (cgroup pids.max)
    build_cgroups: bool = True             # False only with --no-cgroups: memory, CPU and IO unbounded
    build_file_size: int = 2 * 1024 ** 3   # largest file a build writes
    build_disk: int = 10 * 1024 ** 3       # the work directory's total size
    build_files: int = 200_000             # files and directories in the work directory (inodes)
    build_uid_range: tuple[int, int] = (1_000_000, 1_999_999)  # root servers: per-owner build uids
    # What comes out of a build (docs/cloud-build.md "Quotas and retention").
    artifact_max_bytes: int = 1024 ** 3    # a task's artifacts, apparent size in all
    artifact_max_files: int = 10_000       # a task's artifacts, files
    cache_max_bytes: int = 2 * 1024 ** 3   # one token's package caches (npm, uv, pip) in all
    cache_max_files: int = 200_000         # one token's package caches, files and directories
    sandbox_ro_paths: tuple[Path, ...] = ()      # more read-only paths for builds (toolchains)
    secret_paths: tuple[Path, ...] = ()          # server files builds must never see
    # Access and quotas (docs/cloud-build.md "Tokens" and "Quotas and retention").
    auth_timeout: float = 10.0             # seconds a connection may stay without a valid token
    auth_failures: int = 10                # failed token attempts an address gets per auth_window
    auth_window: float = 60.0              # seconds
    max_builds_per_token: int | None = None        # running builds per token; None: concurrency - 1
    max_pending_upload_bytes: int = 4 * protocol.MAX_UPLOAD_BYTES  # per token, not yet published
    max_pending_uploads: int = 16          # per token, not yet published
    upload_retention_hours: float = 1.0    # an upload no task used is deleted after this
    retention_days: float = 30.0           # finished tasks and their artifacts; 0: keep forever
    # What signs sessions and Redis records (signing.Signer): --secret-file, shared by every process
    # of a Redis deployment; an embedded server without one makes its own for each run (its
    # sessions live in memory and end with the process anyway).
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    secret_given: bool = False             # --secret-file was passed (the provenance key derives from it)
    # The build cache and provenance (docs/cloud-build.md "Build cache" and "Provenance").
    build_cache: bool = True               # reuse an earlier build of the same key (storage/build_cache.py)
    cache_scope: str = "token"             # "token": each token its own cache; "team": the server's tokens share one
    provenance_key: Path | None = None     # --provenance-key: the Ed25519 key signing provenance (PEM)

    @property
    def builds_per_token(self) -> int:
        """Running builds one token may have: by default all slots but one, so others get a turn."""
        if self.max_builds_per_token is not None:
            return self.max_builds_per_token
        return max(1, self.concurrency - 1)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def deploy_origin(self) -> tuple[str, str]:
        """(scheme, host[:port]) under which deployments get their own origins: ``--deploy-domain``
        (a bare domain takes the public URL's scheme), by default ``localhost:<port>``, which every
        browser resolves, with each subdomain, to loopback. Every process of a Redis deployment
        needs the same one (``--deploy-domain``, or ``--public-url``), as a worker writes the URLs."""
        given = (self.deploy_domain or "").strip().rstrip("/")
        scheme, sep, rest = given.partition("://")
        if not sep:
            scheme, rest = (self.public_url or "http://").partition("://")[0], given
        if not rest:  # the port clients use: the public URL's when it names one (a worker's is its own)
            port = urlsplit(self.public_url).port if self.public_url else None
            rest = f"localhost:{port or self.port}"
        return scheme.lower(), rest.lower()

    def deploy_url(self, label: str) -> str:
        """The URL of a deployment or alias label: ``http://<label>.localhost:<port>/``."""
        scheme, domain = self.deploy_origin
        return f"{scheme}://{label}.{domain}/"


_DEPLOY_DOMAIN_RE = re.compile(r"^(?:https?://)?[a-z0-9](?:[a-z0-9.-]{0,200}[a-z0-9])?(?::\d{1,5})?/?$")


def check_deploy_domain(value: str) -> None:
    """Refuse a ``--deploy-domain`` that is not a host name (with an optional scheme and port)."""
    if not _DEPLOY_DOMAIN_RE.match(value.lower()) or ".." in value:
        raise ServerConfigError(f"--deploy-domain {value[:100]!r} is not a domain name",
                                "Pass a wildcard domain such as preview.example.com (or https://preview.example.com)")


def parse_size(value: object) -> int:
    """``4G``, ``512M``, ``64k`` or a plain number of bytes (0: no limit)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}.get(text[-1:], 1)
    number = float(text[:-1] if scale > 1 else text)
    if number < 0:
        raise ValueError(value)
    return int(number * scale)


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("flow-cloudbuild-server", appauthor=False))


def read_tokens(tokens: tuple[str, ...] | list[str], tokens_file: Path | None) -> set[str]:
    """All tokens from --token, --tokens-file (one per line, # comments) and the environment."""
    found = {t.strip() for t in tokens if t.strip()}
    if tokens_file is not None:
        try:
            text = tokens_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServerConfigError(f"cannot read tokens file {tokens_file}: {exc.strerror}",
                                    "Pass an existing file to --tokens-file") from exc
        found |= {split_token_line(ln)[1] for ln in text.splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")}
    found |= {t.strip() for t in os.environ.get(protocol.TOKENS_ENV, "").split(",") if t.strip()}
    return found


#: A token's name: who published, as the dashboard shows it (never the token itself).
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}$")


def split_token_line(line: str) -> tuple[str | None, str]:
    """``name:token`` -> (name, token); a line without a valid name before a colon is all token."""
    name, colon, token = line.strip().partition(":")
    if colon and token.strip() and TOKEN_NAME_RE.match(name.strip()):
        return name.strip(), token.strip()
    return None, line.strip()


def token_names(tokens: frozenset[str] | set[str], tokens_file: Path | None,
                labels: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Token hash -> name, from ``name:token`` lines of the tokens file and ``--token-label
    HASH=NAME`` (HASH: at least 8 leading hex digits of the token's hash, what the dashboard
    showed before it had a name), so a name can be given to a token kept elsewhere."""
    names: dict[str, str] = {}
    if tokens_file is not None:
        for ln in tokens_file.read_text(encoding="utf-8").splitlines():
            if ln.strip() and not ln.lstrip().startswith("#"):
                name, token = split_token_line(ln)
                if name is not None:
                    names[protocol.token_hash(token)] = name
    hashes = [protocol.token_hash(t) for t in tokens]
    for label in labels:
        prefix, eq, name = label.partition("=")
        prefix, name = prefix.strip().lower(), name.strip()
        if not eq or not re.fullmatch(r"[0-9a-f]{8,64}", prefix) or not TOKEN_NAME_RE.match(name):
            raise ServerConfigError(f"--token-label {label[:80]!r} is not HASH=NAME",
                                    "Pass the first 8 hex digits the dashboard shows for the token, "
                                    "then = and a name of letters, digits, space . _ @ + -")
        matching = [h for h in hashes if h.startswith(prefix)]
        if len(matching) != 1:
            raise ServerConfigError(f"--token-label {prefix}: {'no' if not matching else 'more than one'} "
                                    "token's hash starts with it",
                                    "Use the hash prefix the dashboard shows as 'token XXXXXXXX' (longer if two match)")
        names[matching[0]] = name
    return names


def read_secret(path: Path) -> bytes:
    """The server secret from ``--secret-file``: one line of at least MIN_SECRET_LENGTH characters."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise ServerConfigError(f"cannot read secret file {path}: {why}",
                                f"Pass an existing file to --secret-file; make one with: {GENERATE_SECRET} > FILE"
                                ) from None
    if len(text) < MIN_SECRET_LENGTH:
        raise ServerConfigError(f"secret file {path} holds fewer than {MIN_SECRET_LENGTH} characters",
                                f"Make one with: {GENERATE_SECRET} > FILE")
    return text.encode("utf-8")


def load_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ServerConfigError(f"cannot read config file {path}: {exc.strerror}",
                                "Pass an existing file to --config") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ServerConfigError(f"config file {path} is not valid {kind}: {exc}", "Fix the syntax") from exc
    if not isinstance(data, dict):
        raise ServerConfigError(f"config file {path} must hold a table/object", "Fix the file")
    return data


def _when(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ServerConfigError(f"{where}: {value!r} is not an ISO 8601 time",
                                    "Write it like 2025-12-20T00:00:00Z") from exc
    else:
        raise ServerConfigError(f"{where} must be an ISO 8601 time", "Write it like 2025-12-20T00:00:00Z")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _argv(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value):
        raise ServerConfigError(f"{where} must be a non-empty list of strings (an argv list)",
                                'Write it like ["npm", "run", "lint"]')
    return list(value)


def apply_file(cfg: ServerConfig, data: dict[str, Any], source: Path) -> None:
    """Merge a config file's settings into ``cfg`` (validating each one)."""
    known = {"host", "port", "public-url", "forwarded-allow-ips", "concurrency", "data-dir", "build-commands",
             "deploy-domain", "allowed-protocols",
             "allowed-hosts", "freeze-windows", "checks", "build-env", "offline", "default-timeout",
             "max-timeout", "max-upload-bytes", "max-unpacked-bytes", "max-unpacked-files",
             "max-log-line", "max-log-bytes", "keep-workdirs", "queue-timeout", "sandbox", "cgroups", "build-user",
             "build-network", "build-memory", "build-processes", "build-file-size", "build-disk", "sandbox-ro-paths",
             "registry-hosts", "store", "targets", "build-cache", "cache-scope", "provenance-key"}
    known |= set(ACCESS_SETTINGS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ServerConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}",
                                f"Use only: {', '.join(sorted(known))}")

    def num(key: str, low: int = 1) -> int | None:
        if key not in data:
            return None
        v = data[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ServerConfigError(f"{source}: {key} must be an integer >= {low}", "Fix the value")
        return v

    for key, attr in (("port", "port"), ("concurrency", "concurrency"), ("default-timeout", "default_timeout"),
                      ("max-timeout", "max_timeout"), ("max-upload-bytes", "max_upload_bytes"),
                      ("max-unpacked-bytes", "max_unpacked_bytes"), ("max-unpacked-files", "max_unpacked_files"),
                      ("max-log-line", "max_log_line"), ("max-log-bytes", "max_log_bytes"),
                      ("queue-timeout", "queue_timeout")):
        v = num(key, 0 if key == "port" else 1)
        if v is not None:
            setattr(cfg, attr, v)
    for key, attr in (("host", "host"), ("public-url", "public_url"), ("forwarded-allow-ips", "forwarded_allow_ips"),
                      ("deploy-domain", "deploy_domain"), ("store", "store")):
        if key in data:
            if not isinstance(data[key], str):
                raise ServerConfigError(f"{source}: {key} must be a string", "Fix the value")
            setattr(cfg, attr, data[key])
    if "data-dir" in data:
        cfg.data_dir = Path(str(data["data-dir"])).expanduser()
    for key, attr in (("build-memory", "build_memory"), ("build-processes", "build_processes"),
                      ("build-file-size", "build_file_size"), ("build-disk", "build_disk")):
        if key in data:
            try:
                setattr(cfg, attr, parse_size(data[key]) if key != "build-processes" else int(data[key]))
            except (TypeError, ValueError):
                raise ServerConfigError(f"{source}: {key} must be a size like 4G, 512M or a number",
                                        "Fix the value") from None
    if "build-user" in data:
        if not isinstance(data["build-user"], (str, int)) or isinstance(data["build-user"], bool):
            raise ServerConfigError(f"{source}: build-user must be a user name, a uid or \"auto\"", "Fix the value")
        cfg.build_user = str(data["build-user"])
    if "sandbox-ro-paths" in data:
        v = data["sandbox-ro-paths"]
        if not isinstance(v, list) or not all(isinstance(x, str) and x.startswith("/") for x in v):
            raise ServerConfigError(f"{source}: sandbox-ro-paths must be a list of absolute paths", "Fix the value")
        cfg.sandbox_ro_paths = tuple(Path(x) for x in v)
    for key, attr in (("offline", "offline"), ("keep-workdirs", "keep_workdirs"), ("sandbox", "sandbox"),
                      ("cgroups", "build_cgroups"), ("build-network", "build_network"),
                      ("build-cache", "build_cache")):
        if key in data:
            if not isinstance(data[key], bool):
                raise ServerConfigError(f"{source}: {key} must be true or false", "Fix the value")
            setattr(cfg, attr, data[key])
    if "cache-scope" in data:
        if data["cache-scope"] not in ("token", "team"):
            raise ServerConfigError(f"{source}: cache-scope must be \"token\" or \"team\"",
                                    'Use "token" (each token its own build cache) or "team" (all tokens share one)')
        cfg.cache_scope = data["cache-scope"]
    if "provenance-key" in data:
        if not isinstance(data["provenance-key"], str) or not data["provenance-key"]:
            raise ServerConfigError(f"{source}: provenance-key must be the path of a PEM file", "Fix the value")
        cfg.provenance_key = Path(data["provenance-key"]).expanduser()
    if "registry-hosts" in data:
        from flow_kit_cloudbuild.server.registry_hosts import parse_registry_hosts

        v = data["registry-hosts"]
        try:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError("it must be a list of strings")
            parse_registry_hosts(v)
        except ValueError as exc:
            raise ServerConfigError(f"{source}: registry-hosts: {exc}",
                                    'Write it like ["registry.npmjs.org", "10.1.2.3:8081"]') from None
        cfg.registry_hosts = tuple(v)
    if "build-commands" in data:
        cmds = data["build-commands"]
        if not isinstance(cmds, list):
            raise ServerConfigError(f"{source}: build-commands must be a list of argv lists",
                                    'Write it like [["npm", "run", "<script>"]]')
        cfg.build_commands = [_argv(c, f"{source}: build-commands[{i}]") for i, c in enumerate(cmds)]
    for key in ("allowed-protocols", "allowed-hosts"):
        if key in data:
            v = data[key]
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise ServerConfigError(f"{source}: {key} must be a list of strings", "Fix the value")
            values = tuple(x.lower() for x in v)
            if key == "allowed-protocols":
                bad = [p for p in values if p not in ("https", "http", "git", "ssh")]
                if bad:
                    raise ServerConfigError(f"{source}: protocol(s) {', '.join(bad)} cannot be allowed",
                                            "Use https, http, git or ssh")
                cfg.allowed_protocols = values
            else:
                cfg.allowed_hosts = values
    if "freeze-windows" in data:
        wins = data["freeze-windows"]
        if not isinstance(wins, list):
            raise ServerConfigError(f"{source}: freeze-windows must be a list of tables",
                                    'Write [[freeze-windows]] name = "..." start = ... end = ...')
        cfg.freeze_windows = []
        for i, w in enumerate(wins):
            where = f"{source}: freeze-windows[{i}]"
            if not isinstance(w, dict) or not isinstance(w.get("name"), str) or not w.get("name"):
                raise ServerConfigError(f"{where} needs a name, start and end", "Add the missing keys")
            start, end = _when(w.get("start"), f"{where}.start"), _when(w.get("end"), f"{where}.end")
            if end <= start:
                raise ServerConfigError(f"{where} ends before it starts", "Swap start and end")
            cfg.freeze_windows.append(FreezeWindow(w["name"], start, end))
    if "checks" in data:
        checks = data["checks"]
        if not isinstance(checks, list):
            raise ServerConfigError(f"{source}: checks must be a list", 'Write [[checks]] name = "..." argv = [...]')
        cfg.checks = []
        for i, c in enumerate(checks):
            where = f"{source}: checks[{i}]"
            if isinstance(c, list):
                argv = _argv(c, where)
                cfg.checks.append(PreBuildCheck(" ".join(argv), argv))
            elif isinstance(c, dict):
                argv = _argv(c.get("argv"), f"{where}.argv")
                cfg.checks.append(PreBuildCheck(str(c.get("name") or " ".join(argv)), argv))
            else:
                raise ServerConfigError(f"{where} must be an argv list or a table with name and argv",
                                        "Fix the value")
    _apply_access(cfg, data, source)
    if "targets" in data:
        cfg.targets = parse_targets(data["targets"], source)
    if "build-env" in data:
        env = data["build-env"]
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ServerConfigError(f"{source}: build-env must be a table of strings", "Fix the value")
        cfg.build_env = dict(env)


#: A project name as a DNS label (a target's ``project``).
PROJECT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    url: str                      # s3://bucket/prefix
    project: str | None = None    # only this project's releases, at the prefix itself
    endpoint_url: str | None = None


def parse_targets(value: Any, source: object) -> list[Target]:
    """The ``[[targets]]`` tables of a config file, checked."""
    if not isinstance(value, list):
        raise ServerConfigError(f"{source}: targets must be a list of tables",
                                'Write [[targets]] url = "s3://bucket/prefix"')
    found = []
    for i, t in enumerate(value):
        where = f"{source}: targets[{i}]"
        if not isinstance(t, dict) or set(t) - {"url", "project", "endpoint-url"}:
            raise ServerConfigError(f"{where} must be a table of url, project and endpoint-url", "Fix the table")
        url, project, endpoint = t.get("url"), t.get("project"), t.get("endpoint-url")
        bucket, _, prefix = str(url).removeprefix("s3://").partition("/")
        if not str(url).startswith("s3://") or not bucket or "?" in str(url) or ".." in prefix.split("/"):
            raise ServerConfigError(f"{where}.url {str(url)[:100]!r} is not s3://BUCKET/PREFIX",
                                    'Write it like url = "s3://www-bucket/site"')
        if project is not None and not (isinstance(project, str) and PROJECT_RE.match(project)):
            raise ServerConfigError(f"{where}.project must be a project name (a DNS label)", "Fix the value")
        if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
            raise ServerConfigError(f"{where}.endpoint-url must be an http(s) URL", "Fix the value")
        found.append(Target(str(url), project, endpoint))
    return found



#: Config file keys of the access and quota settings -> (attribute, kind).
ACCESS_SETTINGS = {
    "auth-timeout": ("auth_timeout", "seconds"), "auth-failures": ("auth_failures", "count"),
    "auth-window": ("auth_window", "seconds"), "max-builds-per-token": ("max_builds_per_token", "count"),
    "max-pending-upload-bytes": ("max_pending_upload_bytes", "size"),
    "max-pending-uploads": ("max_pending_uploads", "count"),
    "upload-retention-hours": ("upload_retention_hours", "hours"), "retention-days": ("retention_days", "days"),
    "artifact-max-bytes": ("artifact_max_bytes", "size"), "artifact-max-files": ("artifact_max_files", "count"),
    "cache-max-bytes": ("cache_max_bytes", "size"), "cache-max-files": ("cache_max_files", "count"),
    "build-files": ("build_files", "count"), "build-uid-range": ("build_uid_range", "uid-range"),
}


def parse_uid_range(value: object) -> tuple[int, int]:
    """``START-END`` (inclusive) of build uids; both above 0, START <= END."""
    start, sep, end = str(value).strip().partition("-")
    if not sep or not start.isdigit() or not end.isdigit() or not 0 < int(start) <= int(end):
        raise ValueError(value)
    return int(start), int(end)


def _apply_access(cfg: ServerConfig, data: dict[str, Any], source: Path) -> None:
    for key, (attr, kind) in ACCESS_SETTINGS.items():
        if key not in data:
            continue
        v = data[key]
        if kind == "size":
            try:
                v = parse_size(v)
            except (TypeError, ValueError):
                v = -1
            ok = v >= 1
        elif kind == "uid-range":
            try:
                v, ok = parse_uid_range(v), True
            except ValueError:
                ok = False
        elif kind == "count":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        else:  # seconds and hours must be > 0; days may be 0 (keep forever)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= 0 if kind == "days" else v > 0)
        if not ok:
            want = {"size": "a size like 200M (>= 1 byte)", "count": "an integer >= 1",
                    "uid-range": "a uid range like 1000000-1999999",
                    "days": "a number of days >= 0 (0: keep forever)"}.get(kind, f"a number of {kind} > 0")
            raise ServerConfigError(f"{source}: {key} must be {want}", "Fix the value")
        setattr(cfg, attr, v)
