"""The build key: one sha256 naming everything a build's output depends on.

Why each part is in it (docs/cloud-build.md, "Build cache"):

* the source tree's content: every file's relative path, executable bit and bytes, every
  symlink's target, every directory (an empty one too), walked without following links; a git
  checkout's ``.git`` is left out (the commit is in the tree's content already);
* the build command and the pre-build checks the server runs before it;
* the lock files by name (already in the tree; named again so a reader of a key's parts sees them);
* the toolchain the build sees (``runtime/toolchain.py``: node, npm, python, uv);
* the build environment the operator allows (``--build-env``: names and values, hashed), whether
  installs are offline, the build network and the registry hosts the install step may reach;
* the kit's version (a new server may build differently).

A key is computed after the download step, from the unpacked tree; two publishes with the same
key build the same thing, so the second may reuse the first's artifacts (``storage/build_cache.py``).
The walk is bounded by the upload and checkout limits the tree already passed; run it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KEY_VERSION = 1
LOCK_FILES = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "uv.lock",
              "poetry.lock", "requirements.txt", "pylock.toml")
SKIPPED_TOP = (".git",)


def tree_digest(root: Path) -> str:
    """The sha256 of a tree's content (module docstring), independent of times and owners."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_TOP]
            filenames = [f for f in filenames if f not in SKIPPED_TOP]
        dirnames.sort()
        entries = sorted([*filenames, *(d for d in dirnames if (base / d).is_symlink())])
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        digest.update(f"d\0{rel_dir}\0".encode("utf-8", "surrogateescape"))
        for name in entries:
            path = base / name
            rel = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                digest.update(b"l\0" + rel + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
            elif stat.S_ISREG(st.st_mode):
                digest.update(b"f\0" + rel + b"\0" + (b"x" if st.st_mode & 0o111 else b"-") + b"\0"
                              + file_sha256(path).encode() + b"\0")
            else:  # fifos, sockets, devices: a tree that was checked never has them; name them anyway
                digest.update(b"o\0" + rel + b"\0")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def lock_digests(root: Path) -> dict[str, str]:
    """The lock files at the top of the tree, by name -> sha256 (plain files only)."""
    found = {}
    for name in LOCK_FILES:
        path = root / name
        if not path.is_symlink() and path.is_file():
            found[name] = file_sha256(path)
    return found


def build_key(*, tree: str, locks: Mapping[str, str], build_command: Sequence[str],
              checks: Sequence[Sequence[str]], toolchain: Mapping[str, str], build_env: Mapping[str, str],
              offline: bool, build_network: bool, registry_hosts: Sequence[str], kit_version: str) -> str:
    """The key of a build with these inputs (hex sha256 of their canonical JSON)."""
    parts: dict[str, Any] = {
        "v": KEY_VERSION, "tree": tree, "locks": dict(sorted(locks.items())),
        "buildCommand": list(build_command), "checks": [list(c) for c in checks],
        "toolchain": dict(sorted(toolchain.items())), "buildEnv": dict(sorted(build_env.items())),
        "offline": offline, "buildNetwork": build_network, "registryHosts": sorted(registry_hosts),
        "kit": kit_version,
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
