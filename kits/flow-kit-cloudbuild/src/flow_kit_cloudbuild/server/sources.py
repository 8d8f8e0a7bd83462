"""Getting a task's source into its work directory: git (through a mirror cache) or an upload.

git runs with an empty configuration (no global or system config, no hooks, no credential
helpers, no prompts), only the allowed protocols, and never fetches submodules. Each repository
URL has one bare mirror under ``<data>/cache/git/<sha256(url)>.git``: the first task clones it,
later tasks only fetch into it and then clone locally from it, which is what makes a second
publish of the same repository fast.

Uploaded archives are unpacked member by member after checking each one: no absolute paths, no
``..``, no links that leave the tree, no devices, and bounded size and file count. Headers are
bounded before tarfile reads them: a GNU long name/link or a pax header declares its size in the
header block in front of it, and one over the bound is refused before its data is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from .errors import StepFailed
from .process import LineSink, LogBudget, run_command

GIT_SAFE_CONFIG = [
    "-c", "core.hooksPath=/dev/null",
    "-c", "credential.helper=",
    "-c", "core.askPass=",
    "-c", "core.fsmonitor=false",
    "-c", "submodule.recurse=false",
    "-c", "fetch.recurseSubmodules=false",
    "-c", "protocol.allow=never",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
    "-c", "gc.auto=0",
]


def git_env(base: dict[str, str], protocols: tuple[str, ...]) -> dict[str, str]:
    env = dict(base)
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               GIT_ASKPASS="", SSH_ASKPASS="", GIT_ALLOW_PROTOCOL=":".join(protocols),
               GIT_PROTOCOL_FROM_USER="0", GIT_CONFIG_COUNT="0",
               GIT_SSH_COMMAND="ssh -oBatchMode=yes -oStrictHostKeyChecking=accept-new")
    return env


def _git(*args: str, protocols: tuple[str, ...]) -> list[str]:
    allow: list[str] = []
    for p in protocols:
        allow += ["-c", f"protocol.{p}.allow=always"]
    return ["git", *GIT_SAFE_CONFIG, *allow, *args]


class GitSource:
    """Mirror cache + per-task checkout."""

    def __init__(self, cache_dir: Path, protocols: tuple[str, ...]) -> None:
        self.cache_dir = cache_dir
        self.protocols = tuple(p for p in protocols if p in ("https", "http", "git", "ssh"))
        self._locks: dict[str, asyncio.Lock] = {}

    def mirror_path(self, url: str) -> Path:
        return self.cache_dir / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:40] + ".git")

    async def checkout(self, url: str, ref: str, dest: Path, *, env: dict[str, str],
                       on_line: LineSink, budget: LogBudget) -> str:
        """Put ``ref`` of ``url`` into ``dest`` (which must not exist); return the commit."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        mirror = self.mirror_path(url)
        remote_env = git_env(env, self.protocols)

        async def run(argv: list[str], cwd: Path, what: str, e: dict[str, str] = remote_env) -> None:
            code = await run_command(argv, cwd=cwd, env=e, on_line=on_line, budget=budget)
            if code != 0:
                raise StepFailed(f"{what} failed (git exit status {code}); check the repository URL "
                                 "and ref and that the server can reach the repository")

        lock = self._locks.setdefault(str(mirror), asyncio.Lock())
        async with lock:
            if not (mirror / "HEAD").is_file():
                tmp = mirror.with_name(mirror.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                await on_line([f"cloning {url} into the mirror cache"], "stdout")
                await run(_git("clone", "--mirror", "--quiet", "--", url, str(tmp), protocols=self.protocols),
                          self.cache_dir, "git clone")
                os.replace(tmp, mirror)
            else:
                await on_line([f"fetching {url} into the cached mirror"], "stdout")
                await run(_git("--git-dir", str(mirror), "fetch", "--prune", "--quiet", "--no-recurse-submodules",
                               "origin", protocols=self.protocols), self.cache_dir, "git fetch")
            commit = await self._resolve(mirror, ref, env)
            # A local clone from the mirror (hard links, no network), then a detached checkout.
            local_env = git_env(env, ("file",))
            # Objects are hard-linked where possible; .git is removed after the checkout, so the
            # build can never write into the shared mirror's objects.
            await run(_git("clone", "--quiet", "--no-checkout", "--local",
                           "--", str(mirror), str(dest), protocols=("file",)),
                      dest.parent, "git clone from the mirror", local_env)
        await run(_git("-C", str(dest), "checkout", "--quiet", "--detach", commit, protocols=()),
                  dest, "git checkout", local_env)
        shutil.rmtree(dest / ".git", ignore_errors=True)  # the build gets files, not the repo's config
        return commit

    async def _resolve(self, mirror: Path, ref: str, env: dict[str, str]) -> str:
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            proc = await asyncio.create_subprocess_exec(
                *_git("--git-dir", str(mirror), "rev-parse", "--verify", "--quiet", "--end-of-options",
                      f"{candidate}^{{commit}}", protocols=()),
                env=git_env(env, ()), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
            out, _ = await proc.communicate()
            if proc.returncode == 0 and out.strip():
                return out.decode().strip()
        raise StepFailed(f"ref {ref!r} was not found in the repository; push it or give an existing "
                         "branch, tag or commit")


MAX_NAME_BYTES = 4096             # an archive path or link target
MAX_PAX_BYTES = 64 * 1024         # one pax extended header
MAX_HEADER_CHAIN = 8              # extended headers in front of one member
MAX_EXTENDED_TOTAL = 32 * 1024 * 1024  # all long-name and pax headers of one archive


def _short(text: str, limit: int = 100) -> str:
    """``text`` quoted for a message: at most ``limit`` characters of it."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extended headers are bounded before tarfile reads them.

    tarfile reads a GNU long name or a pax header whole (``fileobj.read(size)``, size taken from
    the header) before anyone sees the member; this refuses an oversized one from its header.
    """

    # Unannotated: tarfile's private TarInfo._proc_member is not in typeshed for mypy to check against.
    def _proc_member(self, tar):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            long_name = self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
            bound = MAX_NAME_BYTES + 1 if long_name else MAX_PAX_BYTES  # + 1: the NUL after a name
            chain = getattr(tar, "_flow_chain", 0) + 1
            spent = getattr(tar, "_flow_extended", 0) + max(self.size, 0)
            if self.size > bound:
                if long_name:
                    head = tar.fileobj.read(min(self.size, tarfile.BLOCKSIZE))
                    text = head.split(b"\0", 1)[0].decode("utf-8", "replace")
                    raise StepFailed(f"archive entry {_short(text, 60)} has a "
                                     f"{'path' if self.type == tarfile.GNUTYPE_LONGNAME else 'link target'} "
                                     f"of {self.size - 1} bytes, over the limit of {MAX_NAME_BYTES}; "
                                     "use shorter paths")
                raise StepFailed(f"the archive has a pax header of {self.size} bytes, over the limit of "
                                 f"{MAX_PAX_BYTES}; create the archive without large extended headers")
            if chain > MAX_HEADER_CHAIN:
                raise StepFailed(f"the archive has more than {MAX_HEADER_CHAIN} extended headers in front "
                                 "of one entry; create the archive with a standard tar")
            if spent > MAX_EXTENDED_TOTAL:
                raise StepFailed(f"the archive's long-name and pax headers add up to more than "
                                 f"{MAX_EXTENDED_TOTAL} bytes; upload fewer files or use shorter paths")
            tar._flow_chain, tar._flow_extended = chain, spent
        elif self.type == tarfile.GNUTYPE_SPARSE:
            raise StepFailed(f"archive entry {_short(self.name)} is a sparse file; archive it as a plain file")
        else:
            tar._flow_chain = 0
        member = super()._proc_member(tar)  # type: ignore[misc]  # tarfile private, not in typeshed
        for what, value in (("path", member.name), ("link target", member.linkname)):
            if len(value.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise StepFailed(f"archive entry {_short(member.name, 60)} has a {what} of more than "
                                 f"{MAX_NAME_BYTES} bytes; use shorter paths")
        member.pax_headers = {}  # applied already; 100,000 members must not each keep 64 KiB
        return member

    def _sparse_refused(self, member, *args):
        raise StepFailed(f"archive entry {_short(member.name)} is a sparse file; archive it as a plain file")

    # pax GNU sparse formats 0.0, 0.1 and 1.0 (1.0 reads its map from the member's data, unbounded)
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _sparse_refused


def unpack_archive(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> int:
    """Safely unpack a .tar.gz into ``dest``; return the number of files. Raises StepFailed."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    total = count = 0
    try:
        with tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo) as tar:
            members = []
            names: set[str] = set()
            for m in tar:
                count += 1
                if count > max_files:
                    raise StepFailed(f"the archive holds more than {max_files} entries; upload fewer files")
                name = _member_name(m.name)
                if m.isdir():
                    names.add(name)
                    members.append(m)
                    continue
                if m.issym():
                    _check_link(name, m.linkname)
                elif m.islnk():
                    target = _member_name(m.linkname)
                    if target not in names:
                        raise StepFailed(f"archive entry {_short(name)} is a hard link to "
                                         f"{_short(m.linkname)}, which is not an earlier file of the "
                                         "archive; remove it")
                elif not m.isreg():
                    raise StepFailed(f"archive entry {_short(name)} is not a file, directory or link; remove it")
                total += max(m.size, 0)
                if total > max_bytes:
                    raise StepFailed(f"the archive unpacks to more than {max_bytes} bytes; upload less")
                names.add(name)
                members.append(m)
            for m in members:
                _extract(tar, m, root)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise StepFailed(f"the uploaded archive cannot be unpacked ({type(exc).__name__}: "
                         f"{str(exc)[:100]}); "
                         "upload a .tar.gz of the project") from None
    return count


def _member_name(raw: str) -> str:
    p = PurePosixPath(raw)
    if raw.startswith("/") or p.is_absolute():
        raise StepFailed(f"archive entry {_short(raw)} has an absolute path; archive relative paths only")
    parts = [x for x in p.parts if x != "."]
    if not parts:
        return "."
    if ".." in parts:
        raise StepFailed(f"archive entry {_short(raw)} contains '..'; archive paths inside the project only")
    return "/".join(parts)


def _check_link(name: str, target: str) -> None:
    if not target or target.startswith("/") or ".." in PurePosixPath(target).parts:
        raise StepFailed(f"archive entry {_short(name)} is a link to {_short(target)}, outside the "
                         "project; remove it")


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, root: Path) -> None:
    name = _member_name(m.name)
    if name == ".":
        return
    dest = root.joinpath(*name.split("/"))
    parent = dest.parent.resolve()
    if parent != root and root not in parent.parents:
        raise StepFailed(f"archive entry {_short(m.name)} would be written outside the project "
                         "(through a link); remove the link")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        dest.unlink()
    if m.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    parent.mkdir(parents=True, exist_ok=True)
    if m.issym():
        os.symlink(m.linkname, dest)
    elif m.islnk():
        src = root.joinpath(*_member_name(m.linkname).split("/"))
        if src.is_symlink() or not src.is_file():
            raise StepFailed(f"archive entry {_short(m.name)} links to something that is not a file; "
                             "remove it")
        shutil.copyfile(src, dest)
    else:
        f = tar.extractfile(m)
        if f is None:
            raise StepFailed(f"archive entry {_short(m.name)} cannot be read")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with f, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out, 1024 * 1024)
        if m.mode & stat.S_IXUSR:
            os.chmod(dest, 0o755)
