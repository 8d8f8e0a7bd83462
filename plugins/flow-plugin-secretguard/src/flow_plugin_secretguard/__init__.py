"""flow-plugin-secretguard: ``flow publish --source upload`` refuses files that look like secrets.

Kit-bound to ``flow-kit-cloudbuild``: it implements the kit's ``flow_cloudbuild_before_upload``
hook, which the kit calls with the files it is about to pack, before it contacts the server. A
refusal is a ``FlowError`` naming the file and the override, so nothing leaves the machine and
the user knows how to send the file anyway (``[tool.flow.secretguard] allow``).

Why by name and by content: a ``.env`` or ``id_rsa`` is a secret whatever it holds, while a
``*.pem`` may be a public certificate and a ``.npmrc`` may only set a registry, so those are
refused only when their first 64 KiB hold the secret itself. Reads are bounded because the files
are the user's, of any size; a symbolic link is judged by its name only, since the upload sends
the link, not what it points to.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from flowcore.api import FlowError, UsageError, hookimpl

if TYPE_CHECKING:
    from flow_kit_cloudbuild.hookspecs import UploadFile
    from flowcore.api import KitContext

FLOW_BUILD_KITS = ["flow-kit-cloudbuild"]
FLOW_API = ">=1"

__all__ = ["READ_LIMIT", "secret_reason", "allowed", "flow_cloudbuild_before_upload"]

#: Bytes of a file read to judge its content: secrets sit at the top of these files.
READ_LIMIT = 64 * 1024
#: Names of SSH private keys (their ``.pub`` halves are public).
SSH_KEYS = {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"}
#: Environment files that are examples, committed on purpose.
ENV_EXAMPLES = {".env.example"}

_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_SERVICE_ACCOUNT_KEY = re.compile(rb'"private_key"\s*:\s*"')
_NPM_TOKEN = re.compile(rb"_authToken\s*=")
_PYPIRC_PASSWORD = re.compile(rb"^\s*password\s*[=:]\s*\S", re.MULTILINE)


def _head(path: Path) -> bytes:
    """The first :data:`READ_LIMIT` bytes of a regular file; ``b""`` for a link or an error."""
    if path.is_symlink() or not path.is_file():
        return b""
    try:
        with path.open("rb") as handle:
            return handle.read(READ_LIMIT)
    except OSError:
        return b""


def secret_reason(project: Path, rel: str) -> str | None:
    """Why the file ``rel`` (relative to ``project``, ``/``-separated) looks like a secret, in a
    few words; ``None`` when it does not."""
    name = PurePosixPath(rel).name
    parent = PurePosixPath(rel).parent.name
    if name == ".env" or (name.startswith(".env.") and name not in ENV_EXAMPLES):
        return "an environment file"
    if name in SSH_KEYS:
        return "an SSH private key"
    if parent == ".aws" and name in ("credentials", "config"):
        if name == "credentials" or b"aws_secret_access_key" in _head(project / rel):
            return "AWS credentials"
        return None
    if name.endswith((".pem", ".key")) and _PRIVATE_KEY.search(_head(project / rel)):
        return "a private key block"
    if name.endswith(".json") and _SERVICE_ACCOUNT_KEY.search(_head(project / rel)):
        return 'a service-account key ("private_key")'
    if name == ".npmrc" and _NPM_TOKEN.search(_head(project / rel)):
        return "an npm token (_authToken)"
    if name == ".pypirc" and _PYPIRC_PASSWORD.search(_head(project / rel)):
        return "a PyPI password"
    return None


def allowed(rel: str, patterns: list[str]) -> bool:
    """Whether ``[tool.flow.secretguard] allow`` lets ``rel`` through: a pattern is a path
    relative to the project root or a glob of one (``*``, ``?``, ``[...]``; ``*`` also crosses
    ``/``)."""
    return any(rel == p or fnmatch.fnmatchcase(rel, p) for p in patterns)


def _allow_patterns(context: KitContext) -> list[str]:
    value = context.config.section.get("allow", [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise UsageError("[tool.flow.secretguard] allow must be a list of paths or globs",
                         'Write it as allow = ["path/or/glob", ...]')
    return [p.removeprefix("./") for p in value]


def _quoted(paths: list[str]) -> str:
    return ", ".join(f'"{p}"' for p in paths)


@hookimpl
def flow_cloudbuild_before_upload(context: KitContext, project: Path,
                                  files: list[UploadFile]) -> None:
    """Refuse the upload when any file looks like a secret and is not allowed."""
    patterns = _allow_patterns(context)
    found = [(f["path"], reason) for f in files
             if not allowed(f["path"], patterns)
             and (reason := secret_reason(project, f["path"])) is not None]
    if not found:
        return
    first, reason = found[0]
    paths = [path for path, _ in found]
    others = (f" (and {len(found) - 1} more: {', '.join(paths[1:4])}"
              f"{', ...' if len(found) > 4 else ''})") if len(found) > 1 else ""
    raise FlowError(
        f"refusing to upload {first}: it looks like a secret ({reason}){others}",
        f"Leave it out of the upload (add it to .flowignore), or allow it with "
        f"[tool.flow.secretguard] allow = [{_quoted(paths)}]",
    )
