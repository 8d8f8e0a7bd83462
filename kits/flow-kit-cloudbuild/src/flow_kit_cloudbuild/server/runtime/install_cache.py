"""The install cache: a token's ``node_modules``, kept per lock file, so `npm ci` runs once.

Why: `npm ci` is most of a small site's build time, and it gives the same tree every time the
lock file, package.json, the toolchain and the server's install settings are the same. The
first build with a key runs `npm ci` and stores ``src/node_modules`` here before the build runs
(so nothing the build writes is stored); a later build of the same owner with the same key gets
a copy of it and skips `npm ci`.

Where: ``<data>/cache/installs/<owner key>/<install key>/node_modules`` (the owner key as
``sandbox.owner_dirs`` computes it: a token hash never shared between tenants, so no cross-tenant
hit). That is outside every directory a sandbox binds (it is not one of ``SandboxSpec.caches``):
a build can neither see nor write an entry, its own included, so it cannot poison its later builds.

The key (``install_key``): sha256 over a version tag, package-lock.json's and package.json's bytes,
the project's ``.npmrc`` (if any), node's and npm's versions (``runtime/toolchain.py``), the
platform, and ``extra`` (the server's build env, offline flag, registry hosts, kit version). No key,
so no cache, without a plain package-lock.json and package.json, with npm workspaces (their
packages get ``node_modules`` of their own), or when the project's own package.json has install
lifecycle scripts (``preinstall``, ``install``, ``postinstall``, ``prepare``...): `npm ci` runs
those against the project itself, and they may write outside ``node_modules``.

Stored atomically: copied into a temporary sibling ``.tmp-<pid>-<random>`` of the entry, then
renamed to its key. A killed server leaves at most a temporary; a lookup only ever opens
``<64 hex>/`` names, so a temporary is never read, and the next store of that owner (or
``entries``, after every build) deletes temporaries whose process is gone. A stored entry holds a
manifest (``entry.json``: entries and bytes); a restore that copies anything else (an entry being
evicted under it, a damaged one) is thrown away and `npm ci` runs instead.

Restored by copy, not hard links. Measured on this machine (ext4, 2 cores, root server, medians
of 9), a ``node_modules`` of 100 packages from a loopback registry (1,100 files and 200
directories, 3.8 MB): ``copy_tree`` 21 ms (``shutil.copytree`` 44 ms), hard links 14 ms, the chown
to the build uid afterwards 4.5 ms; `npm ci` of the same lock: 1.2 s with an empty npm cache,
0.8 s with a warm one. Both are small against `npm ci`; hard links would save ~7 ms per 100
packages but share the entry's inodes with the build, which is safe only while the
build cannot write them: on a root server with a build uid they are root's and read-only to it, but
without root (the build runs as the server's uid in a user namespace), with ``--no-sandbox``, or
once anything hands the work directory to the build uid again (``Sandbox.prepare_dir`` chowns every
inode it walks), the build could rewrite the entry. A copy is safe in every mode, and a build that
patches a file inside ``node_modules`` keeps working as after `npm ci` (with read-only links it
would fail with EACCES).

Entries count against the owner's cache quota (``cache-max-bytes``/``cache-max-files``) with the
npm, uv and pip caches: each entry is one ``cache_quota`` subtree with its ``<key>.used`` marker,
touched when it is stored or restored, and evicted whole, least recently used first. A store that
would not fit the quota on its own is skipped. Every function here walks or copies file trees:
call them in a thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.server.runtime import cache_quota
from flow_kit_cloudbuild.server.runtime.sandbox import owner_dirs

KIND = "installs"                      # <data>/cache/installs/<owner key>/
KEY_VERSION = "flow-install-cache-v1"  # change it when what an entry holds changes
TREE = "node_modules"
MANIFEST = "entry.json"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 24 * 3600         # a temporary this old is removed even if its pid is alive again
#: root package.json scripts that `npm ci` runs on the project itself
INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepublish", "preprepare", "prepare", "postprepare")
_KEY_NAME = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST = 4096


class StoreRefused(Exception):
    """The tree cannot be stored (too large for the quota, not a plain tree); the message says why."""


@dataclass(frozen=True)
class Copied:
    """What a copy wrote: entries (files, directories, symlinks) and the regular files' bytes
    (``st_size``: the same in every copy, unlike blocks and directory sizes)."""

    files: int
    bytes: int


def owner_root(cache_root: Path, owner: str) -> Path:
    """Where one owner's (token hash's) entries live: ``<cache root>/installs/<owner key>``."""
    return owner_dirs(cache_root, owner, (KIND,))[KIND]


def install_key(src: Path, toolchain: Mapping[str, str], extra: Mapping[str, Any]) -> str | None:
    """The key of the ``node_modules`` `npm ci` makes in ``src``, or None when this project's
    install is not cacheable (module docstring). ``extra``: JSON-able server settings the install
    depends on (build env, offline, registry hosts, kit version)."""
    files: dict[str, bytes] = {}
    for name in ("package-lock.json", "package.json", ".npmrc"):
        path = src / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            return None
        if path.is_file():
            files[name] = path.read_bytes()
    if "package-lock.json" not in files or "package.json" not in files:
        return None
    try:
        manifest = json.loads(files["package.json"])
    except ValueError:
        return None  # `npm ci` will say what is wrong with it
    if not isinstance(manifest, dict) or manifest.get("workspaces"):
        return None
    scripts = manifest.get("scripts")
    if isinstance(scripts, dict) and any(name in scripts for name in INSTALL_SCRIPTS):
        return None
    digest = hashlib.sha256(KEY_VERSION.encode() + b"\0")
    head = {"node": toolchain.get("node", ""), "npm": toolchain.get("npm", ""),
            "platform": f"{platform.system()}-{platform.machine()}", "extra": extra}
    for label, data in (("head", json.dumps(head, sort_keys=True, default=str).encode()),
                        *((name, files.get(name, b"")) for name in ("package-lock.json", "package.json"))):
        digest.update(f"{label}\0{len(data)}\0".encode() + data)
    npmrc = files.get(".npmrc")
    digest.update(b"npmrc\0-\0" if npmrc is None else f"npmrc\0{len(npmrc)}\0".encode() + npmrc)
    return digest.hexdigest()


def entries(root: Path) -> list[Path]:
    """The owner's complete entries (``cache_quota`` subtrees); also removes what is left of a
    killed store (temporaries whose process is gone) and markers whose entry was evicted."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    for child in root.iterdir():
        name = child.name
        if _KEY_NAME.fullmatch(name) and child.is_dir() and not child.is_symlink():
            found.append(child)
        elif name.startswith(TEMP_PREFIX) and _abandoned(child):
            _remove(child)
        elif name.endswith(cache_quota.MARKER_SUFFIX) and _KEY_NAME.fullmatch(name[:-len(cache_quota.MARKER_SUFFIX)]):
            if not (root / name[:-len(cache_quota.MARKER_SUFFIX)]).is_dir():
                child.unlink(missing_ok=True)
    return found


def restore(root: Path, key: str, dest: Path) -> Copied | None:
    """Copy the entry ``key`` to ``dest`` (which must not exist); None when there is no complete
    entry or the copy does not match its manifest (then nothing is left at ``dest``)."""
    entry = root / key
    if not _KEY_NAME.fullmatch(key) or entry.is_symlink() or not entry.is_dir():
        return None
    try:
        with open(entry / MANIFEST, "rb") as fh:
            manifest = json.loads(fh.read(_MAX_MANIFEST))
        want = Copied(int(manifest["files"]), int(manifest["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cache_quota.touch([entry])  # before copying: an eviction meanwhile takes the others first
    try:
        got = copy_tree(entry / TREE, dest)
    except OSError:
        got = None
    if got != want:
        _remove(dest)
        return None
    return got


def store(root: Path, key: str, tree: Path, *, max_bytes: int = 0, max_files: int = 0) -> Copied | None:
    """Store ``tree`` (a ``node_modules`` no process writes any more) as the entry ``key``:
    copied into a temporary, then renamed. None when an entry with that key exists already.
    Raises StoreRefused or OSError; a temporary is never left behind by an error."""
    if not _KEY_NAME.fullmatch(key):
        raise ValueError(f"not an install key: {key!r}")
    if tree.is_symlink() or tree.parent.is_symlink() or not tree.is_dir():
        raise StoreRefused(f"{tree.name} is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    entries(root)  # the temporaries a killed server left
    final = root / key
    if final.exists():
        return None
    temp = root / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
    try:
        temp.mkdir(mode=0o700)
        got = copy_tree(tree, temp / TREE, max_bytes=max_bytes, max_files=max_files)
        (temp / MANIFEST).write_text(json.dumps({"files": got.files, "bytes": got.bytes, "key": key}))
        try:
            os.rename(temp, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another task stored it meanwhile
                return None
            raise
    finally:
        _remove(temp)
    cache_quota.touch([final])
    return got


def copy_tree(src: Path, dest: Path, *, max_bytes: int = 0, max_files: int = 0) -> Copied:
    """Copy directories, regular files (mode without setuid/setgid/sticky) and symlinks (as links)
    from ``src`` to the new ``dest``; nothing is followed, anything else is refused. Past
    ``max_bytes`` or ``max_files`` (0: no bound) raises StoreRefused."""
    files = total = data = 0  # total: as the quota counts it (cache_quota, disk_usage)
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreRefused(f"{src.name} is not a directory")
    os.mkdir(dest, 0o700)
    stack: list[tuple[str, str, int]] = [(str(src), str(dest), st.st_mode)]
    made: list[tuple[str, int]] = []
    while stack:
        here, there, mode = stack.pop()
        made.append((there, mode))
        with os.scandir(here) as listing:
            for e in listing:
                s = e.stat(follow_symlinks=False)
                target = os.path.join(there, e.name)
                files += 1
                total += max(s.st_size, s.st_blocks * 512)
                if (max_files and files > max_files) or (max_bytes and total > max_bytes):
                    raise StoreRefused(f"it is larger than the token's cache quota ({files:,} entries, "
                                       f"{total:,} bytes so far)")
                if stat.S_ISDIR(s.st_mode):
                    os.mkdir(target, 0o700)
                    stack.append((e.path, target, s.st_mode))
                elif stat.S_ISLNK(s.st_mode):
                    os.symlink(os.readlink(e.path), target)
                elif stat.S_ISREG(s.st_mode):
                    _copy_file(e.path, target, (s.st_mode & 0o777) | 0o600)
                    data += s.st_size
                else:
                    raise StoreRefused(f"{e.name} is not a file, directory or symlink")
    for path, mode in made:  # last: a directory without u+w could not have been filled
        os.chmod(path, (mode & 0o777) | 0o700)
    return Copied(files, data)


def _copy_file(src: str, dest: str, mode: int) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            offset = 0
            while offset < size:
                sent = os.sendfile(out, fd, offset, min(size - offset, 1 << 30))
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _abandoned(temp: Path) -> bool:
    """A temporary whose storing process is gone (or that is too old to be in progress)."""
    try:
        age = time.time() - temp.lstat().st_mtime
        pid = int(temp.name[len(TEMP_PREFIX):].split("-", 1)[0])
    except (OSError, ValueError):
        return True
    if age > STALE_TEMP_SECONDS:
        return True
    if pid == os.getpid():
        return False  # this process is storing it now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
