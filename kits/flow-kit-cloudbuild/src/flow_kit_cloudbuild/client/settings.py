"""Where each ``flow publish`` setting comes from.

Precedence, highest first: the command line, the environment (``FLOW_CLOUDBUILD_TOKEN``,
``FLOW_CLOUDBUILD_SERVER``), the project's ``[tool.flow.cloudbuild]``, the global
``kitConfig.cloudbuild`` section, the global ``cloudbuild`` key (``flow config set
cloudbuild.server URL``), then the defaults.

The token is a secret and is never read from a project file (project files are committed): a
``token`` in ``[tool.flow.cloudbuild]`` is ignored with a warning.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from flow_kit_cloudbuild.client.errors import PublishUsageError
from flow_kit_cloudbuild.protocol import DEFAULT_TIMEOUT, DEFAULT_URL
from flowcore.api import warn

__all__ = ["TOKEN_ENV", "SERVER_ENV", "SHORT_NAME", "CONNECT_TIMEOUT", "CONFIG_SCHEMA", "Settings", "resolve",
           "split_build_cmd"]

TOKEN_ENV = "FLOW_CLOUDBUILD_TOKEN"
SERVER_ENV = "FLOW_CLOUDBUILD_SERVER"
SHORT_NAME = "cloudbuild"
#: Seconds connecting to the build server may take (``--connect-timeout``, ``connect-timeout``).
CONNECT_TIMEOUT = 5.0

#: The keys of ``[tool.flow.cloudbuild]`` (and of the global ``kitConfig.cloudbuild``) that
#: :func:`resolve` reads, declared here beside it; ``flow_kit_info`` hands them to flow, which
#: warns about any other key of the section, with the nearest of these.
CONFIG_SCHEMA = {
    "server": "build server URL (default http://127.0.0.1:7001; --server overrides)",
    "build-cmd": "build command run on the server, split like a shell would, e.g. "
                 "\"npm run build\" (must be on the server's allowlist; --build-cmd overrides)",
    "timeout": "task time limit in seconds (default 300; --timeout overrides)",
    "connect-timeout": "seconds connecting to the build server may take (default 5; "
                       "--connect-timeout overrides)",
    "source": "\"git\" (build the pushed branch) or \"upload\" (send the tracked files); "
              "default: git when the repository has a remote",
    "branch": "branch to build with source git (default: the current branch)",
    "spa": "true for a single-page app: the deployment answers index.html for paths without a "
           "file (default false: 404.html or a plain 404)",
    "token": "global config only (flow config set cloudbuild.token TOKEN); ignored with a "
             "warning in a project file",
}


class Settings:
    """The resolved settings of one publish (plain attributes, read by the other modules)."""

    def __init__(self, **values: Any) -> None:
        self.server: str = values["server"]
        self.token: str = values["token"]
        self.build_cmd: list[str] | None = values.get("build_cmd")
        self.timeout: int = values.get("timeout", DEFAULT_TIMEOUT)
        self.source: str | None = values.get("source")
        self.branch: str | None = values.get("branch")
        self.connect_timeout: float = values.get("connect_timeout", CONNECT_TIMEOUT)
        self.section: dict[str, Any] = values.get("section", {})
        self.spa: bool = values.get("spa", False)


def split_build_cmd(value: Any) -> list[str] | None:
    """``"npm run build"`` -> ``["npm", "run", "build"]`` (shlex, no shell); lists pass through."""
    if value is None or value == "":
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value) or None
    if not isinstance(value, str):
        raise PublishUsageError(f"build-cmd must be a string or a list of strings, got {value!r}",
                                "Fix [tool.flow.cloudbuild] build-cmd")
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise PublishUsageError(f"cannot split the build command {value!r}: {exc}",
                                "Check its quotes") from exc
    return argv or None


def _spa(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise PublishUsageError(f"spa {raw!r} in [tool.flow.cloudbuild] is not true or false",
                                "Set spa = true for a single-page app, or remove it")
    return raw


def _connect_timeout(raw: Any) -> float:
    """``connect-timeout`` from the config: seconds, a number > 0."""
    try:
        value = float(raw) if not isinstance(raw, bool) else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise PublishUsageError(f"connect-timeout {raw!r} in [tool.flow.cloudbuild] is not a "
                                "number of seconds > 0",
                                "Set it in seconds, e.g. connect-timeout = 10, or pass "
                                "--connect-timeout SECONDS")
    return value


def _config_layers(context: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(project section, global kitConfig section, global 'cloudbuild' key)``."""
    if context is None:
        return {}, {}, {}
    data = context.config.read()
    glob = data.get("global") or {}
    kit_section = (glob.get("kitConfig") or {}).get(SHORT_NAME) or {}
    loose = glob.get(SHORT_NAME) or {}
    project = data.get("project") or {}
    proj_section = project.get(SHORT_NAME) if isinstance(project, dict) else None
    return (
        proj_section if isinstance(proj_section, dict) else {},
        kit_section if isinstance(kit_section, dict) else {},
        loose if isinstance(loose, dict) else {},
    )


def resolve(context: Any, *, server: str | None, token: str | None, build_cmd: str | None,
            timeout: int | None, source: str | None, branch: str | None,
            need_token: bool = True, connect_timeout: float | None = None) -> Settings:
    """Merge flags, environment and config into :class:`Settings`."""
    project, kit_section, loose = _config_layers(context)
    if "token" in project:
        warn("ignoring 'token' in [tool.flow.cloudbuild]: a token must not be committed",
             f"Remove it and use --token, {TOKEN_ENV} or 'flow config set cloudbuild.token TOKEN'")
    merged: dict[str, Any] = {**loose, **kit_section, **project}
    merged.pop("token", None)

    token = (token or os.environ.get(TOKEN_ENV) or loose.get("token")
             or kit_section.get("token") or None)
    if need_token and not token:
        raise PublishUsageError(
            "no token for the build server",
            f"Pass --token, set {TOKEN_ENV}, or run: flow config set cloudbuild.token TOKEN",
        )
    server = (server or os.environ.get(SERVER_ENV) or merged.get("server") or DEFAULT_URL)
    server = str(server).rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise PublishUsageError(f"server URL {server!r} is not an http(s) URL",
                                "Pass --server http://HOST:PORT")
    if timeout is None:
        raw = merged.get("timeout", DEFAULT_TIMEOUT)
        try:
            timeout = int(raw)
        except (TypeError, ValueError):
            raise PublishUsageError(f"timeout {raw!r} in [tool.flow.cloudbuild] is not a number",
                                    "Set it in seconds, e.g. timeout = 300") from None
    if timeout <= 0:
        raise PublishUsageError(f"timeout must be positive, got {timeout}",
                                "Pass --timeout SECONDS")
    if connect_timeout is None:
        connect_timeout = _connect_timeout(merged.get("connect-timeout", CONNECT_TIMEOUT))
    source = source or merged.get("source") or None
    if source not in (None, "git", "upload"):
        raise PublishUsageError(f"source {source!r} is not 'git' or 'upload'",
                                "Fix [tool.flow.cloudbuild] source")
    return Settings(
        server=server,
        token=token or "",
        build_cmd=split_build_cmd(build_cmd if build_cmd is not None
                                  else merged.get("build-cmd")),
        timeout=timeout,
        connect_timeout=connect_timeout,
        source=source,
        branch=branch or merged.get("branch") or None,
        spa=_spa(merged.get("spa", False)),
        section=merged,
    )
