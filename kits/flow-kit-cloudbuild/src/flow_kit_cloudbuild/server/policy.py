"""What the server allows: request shapes, repository URLs, refs, build commands, release gates.

Every check here runs before any work is done for a task (at submit), except the one check that
needs the source: that a ``<script>`` named in an ``npm run`` command exists in package.json,
which runs right after download, before install.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.errors import RequestError, StepFailed, bad_request, refused

SCRIPT = "<script>"
_SCRIPT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,99}$")
_NAME_RE = re.compile(r"^(@[A-Za-z0-9][A-Za-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$")
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}$")
_ID_RE = re.compile(r"^[0-9a-f]{24}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+$")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+$")  # urlsplit gives a [bracketed] host without brackets
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@([A-Za-z0-9.-]+):(?!/)")

_PUBLISH_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "version": str, "source": str, "repo": str, "ref": str, "uploadId": str,
    "buildCmd": (list, type(None)), "prod": bool, "force": bool, "timeout": int, "branch": str, "spa": bool,
    "noCache": bool}
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,64}$")


def is_id(value: object) -> TypeGuard[str]:
    """Task and upload ids are server-made hex strings; anything else is not an id."""
    return isinstance(value, str) and bool(_ID_RE.match(value))


def check_publish(data: Any, cfg: ServerConfig) -> dict[str, Any]:
    """Validate a "publish" payload; return it normalised (defaults filled in).

    Raises RequestError "bad-request" for a malformed payload and "refused" for one the policy
    does not allow (repository, ref, build command, freeze window).
    """
    if not isinstance(data, dict):
        raise bad_request("publish needs an object payload; send name, version, source, ...")
    unknown = sorted(str(k)[:40] for k in data if k not in _PUBLISH_FIELDS)
    if unknown:
        raise bad_request(f"unknown field(s) {', '.join(unknown)}; send only {', '.join(_PUBLISH_FIELDS)}")
    for key, kind in _PUBLISH_FIELDS.items():
        if key in data and not isinstance(data[key], kind):
            raise bad_request(f"field {key} has the wrong type; see the protocol for its type")
        if kind is int and isinstance(data.get(key), bool):
            raise bad_request(f"field {key} must be an integer")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or len(name) > protocol.MAX_NAME or not _NAME_RE.match(name):
        raise bad_request("name must be a package name (letters, digits, . _ ~ -, optional @scope/)")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise bad_request("version must be a version string (letters, digits, . + _ -, at most 64)")
    source = data.get("source")
    req: dict[str, Any] = {"name": name, "version": version, "source": source,
                           "prod": bool(data.get("prod", False)), "force": bool(data.get("force", False))}
    timeout = data.get("timeout", cfg.default_timeout)
    if not 1 <= timeout <= cfg.max_timeout:
        raise bad_request(f"timeout must be between 1 and {cfg.max_timeout} seconds")
    req["timeout"] = timeout
    if source == "git":
        if "uploadId" in data:
            raise bad_request("uploadId is only for source=upload")
        req["repo"] = check_repo_url(data.get("repo"), cfg)
        req["ref"] = check_ref(data.get("ref"))
    elif source == "upload":
        if "repo" in data or "ref" in data:
            raise bad_request("repo and ref are only for source=git")
        if not is_id(data.get("uploadId")):
            raise bad_request("uploadId must be the id returned by POST /api/uploads")
        req["uploadId"] = data["uploadId"]
    else:
        raise bad_request('source must be "git" or "upload"')
    cmd = data.get("buildCmd")
    req["buildCmd"] = None if cmd is None else check_build_command(cmd, cfg)
    # the branch alias <project>--<branch> (deployments.py): sent, or a git source's ref unless a commit
    branch = data.get("branch")
    if branch is None and source == "git" and not _COMMIT_RE.match(req["ref"]):
        branch = req["ref"]
    if branch is not None and (not branch or not _REF_RE.match(branch) or ".." in branch):
        raise bad_request("branch must be a git branch name (letters, digits, . _ / + -, at most 200)")
    req["branch"] = branch
    req["spa"] = bool(data.get("spa", False))  # serve index.html for unknown paths (single-page apps)
    if data.get("noCache"):  # flow publish --no-cache: read neither the build nor the install cache
        req["noCache"] = True
    if req["prod"]:
        check_freeze(cfg)
    return req


def check_repo_url(url: Any, cfg: ServerConfig) -> str:
    """Allow only URLs of an allowed protocol and host; never local paths or git transports."""
    if not isinstance(url, str) or not url:
        raise bad_request("repo must be a git URL such as https://host/owner/repo.git")
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise refused("repository URL is too long or holds spaces/control characters; use a plain URL")
    if url.startswith("-"):
        raise refused("repository URL looks like a command-line option; use an https:// or git:// URL")
    if "::" in url.split("/", 1)[0] or url.lower().startswith("ext:"):
        raise refused("git remote helpers (such as ext::) are not allowed; use an https:// or git:// URL")
    scp = _SCP_RE.match(url)
    if scp and "://" not in url:
        scheme, host = "ssh", scp.group(1)
    else:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            _ = parts.port
        except ValueError:
            raise refused("repository URL cannot be parsed; use an https:// or git:// URL") from None
        if "[" in parts.netloc and not _ipv6(host):  # brackets hold an IPv6 address, nothing else
            raise refused("repository URL has a [bracketed] host that is not an IPv6 address; "
                          "write it like git://[::1]:9418/repo")
        scheme = parts.scheme.lower()
        if not scheme or "://" not in url:
            raise refused("local paths are not allowed as repositories; use an https:// or git:// URL")
        if parts.password is not None or (parts.username is not None and scheme != "ssh"):
            raise refused("credentials in the repository URL are not allowed; give the server access instead")
    allowed = cfg.allowed_protocols
    if scheme not in allowed:
        raise refused(f"repository protocol {scheme!r} is not allowed on this server; "
                      f"use one of: {', '.join(allowed)}")
    if not host or not (_HOST_RE.match(host) or _ipv6(host)) or host.startswith("-"):
        raise refused("repository URL has no valid host; use an https:// or git:// URL")
    if cfg.allowed_hosts is not None and not host_allowed(host.lower(), cfg.allowed_hosts):
        raise refused(f"repository host {host!r} is not allowed on this server; "
                      f"use one of: {', '.join(cfg.allowed_hosts)}")
    return url


def _ipv6(host: str) -> ipaddress.IPv6Address | None:
    """The address of an IPv6 host (as urlsplit gives it: no brackets, no zone), else None."""
    if ":" not in host or not _IPV6_RE.match(host):
        return None
    try:
        return ipaddress.IPv6Address(host)
    except ValueError:
        return None


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact names, or ``*.example.com`` for any subdomain of example.com.

    An IPv6 host matches the same address written with or without brackets, in any spelling
    (``[::1]``, ``::1``, ``0:0:0:0:0:0:0:1``).
    """
    address = _ipv6(host)
    for pattern in allowed:
        if address is not None:
            if address == _ipv6(pattern.strip().removeprefix("[").removesuffix("]")):
                return True
        elif pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def check_ref(ref: Any) -> str:
    if not isinstance(ref, str) or not ref:
        raise bad_request("ref must be a branch, tag or commit")
    if ref.startswith("-"):
        raise refused("ref looks like a command-line option; give a branch, tag or commit")
    if not _REF_RE.match(ref) or ".." in ref or "//" in ref or ref.endswith((".lock", "/", ".")):
        raise refused("ref is not a valid branch, tag or commit name")
    return ref


def check_build_command(cmd: Any, cfg: ServerConfig) -> list[str]:
    """The command must have the shape of one allowlisted command (argv list, never a shell)."""
    if not isinstance(cmd, list) or not cmd or len(cmd) > protocol.MAX_ARGV:
        raise bad_request("buildCmd must be a non-empty list of strings (an argv list) or null")
    if not all(isinstance(w, str) and 0 < len(w) <= protocol.MAX_ARG for w in cmd):
        raise bad_request("buildCmd must be a list of non-empty strings")
    if match_allowlist(cmd, cfg.build_commands) is None:
        shapes = "; ".join(" ".join(p) for p in cfg.build_commands)
        shown = " ".join(cmd)[:200]
        raise refused(f"build command {shown!r} is not allowed on this server; allowed: {shapes}")
    return list(cmd)


def match_allowlist(cmd: list[str], patterns: list[list[str]]) -> list[str] | None:
    for pattern in patterns:
        if len(pattern) == len(cmd) and all(
            (p == SCRIPT and bool(_SCRIPT_RE.match(w))) or p == w for p, w in zip(pattern, cmd, strict=True)
        ):
            return pattern
    return None


def check_scripts_exist(cmd: list[str], cfg: ServerConfig, src: Path) -> None:
    """After download: every ``<script>`` word of the command names a script in package.json."""
    pattern = match_allowlist(cmd, cfg.build_commands)
    if pattern is None:  # checked at submit already; keep the invariant
        raise StepFailed("build command is not allowed on this server")
    names = [w for p, w in zip(pattern, cmd, strict=True) if p == SCRIPT]  # a match has cmd's length
    if not names:
        return
    scripts = read_scripts(src)
    for name in names:
        if name not in scripts:
            raise StepFailed(f"refused: build command {' '.join(cmd)!r} runs script {name!r}, "
                             "which package.json does not define; add it to \"scripts\" or pick another")


def read_scripts(src: Path) -> dict[str, str]:
    pj = src / "package.json"
    if pj.is_symlink() or not pj.is_file():
        return {}
    try:
        data = json.loads(pj.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StepFailed("package.json cannot be read as JSON; fix it and publish again") from None
    scripts = data.get("scripts") if isinstance(data, dict) else None
    return {k: v for k, v in scripts.items() if isinstance(k, str)} if isinstance(scripts, dict) else {}


def check_freeze(cfg: ServerConfig, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    for window in cfg.freeze_windows:
        if window.active(now):
            raise RequestError(protocol.ERROR_REFUSED,
                               f"prod is frozen during freeze window {window.name!r} (until "
                               f"{window.end.isoformat()}); publish after it ends or not to prod")


def default_build_command(src: Path) -> list[str]:
    """The build command when the client sends null: package.json's build script, else uv build."""
    if (src / "package.json").is_file() and "build" in read_scripts(src):
        return ["npm", "run", "build"]
    if (src / "pyproject.toml").is_file():
        return ["uv", "build"]
    raise StepFailed("no build command given and none detected (no package.json \"build\" script, "
                     "no pyproject.toml); pass a build command")
