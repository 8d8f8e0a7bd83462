"""What the server builds: a pushed git branch, or an upload of the project's tracked files.

``--source git`` (the default when the repository has a remote) only publishes what the remote
holds, so the working tree must be committed and the branch pushed; every refusal names the git
command that fixes it. ``--source upload`` packs what the user sees: the project folder's files,
tracked or not, minus what the project's ``.gitignore`` files and a ``.flowignore`` exclude and
minus dependency, build and VCS folders. Whether the folder is a git repository, sits untracked
inside another one, or is in none does not matter: a parent repository's ignore rules are not
the project's.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from flow_kit_cloudbuild.client.errors import PublishError, PublishUsageError

__all__ = ["GitSource", "default_source", "git_source", "pack_upload", "git_remote", "upload_files"]

#: Folders never packed from a folder that is not a git repository.
SKIP_DIRS = {".git", ".hg", ".svn", ".flow", ".venv", "venv", "node_modules", "dist", "build",
             "__pycache__", ".pytest_cache", ".mypy_cache", ".tox"}
LS_REMOTE_TIMEOUT = 20


class GitSource:
    """A branch the server can fetch: ``repo`` (the remote's URL) and ``ref`` (the branch)."""

    def __init__(self, repo: str, ref: str, remote: str, commit: str) -> None:
        self.repo = repo
        self.ref = ref
        self.remote = remote
        self.commit = commit


def _git(root: Path, *args: str, check: bool = True,
         timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise PublishUsageError("git is not installed",
                                "Install git, or publish with --source upload") from None
    except subprocess.TimeoutExpired:
        raise PublishError(f"'git {' '.join(args)}' took longer than {timeout:.0f} s",
                           "Check your network connection to the git host") from None
    if check and result.returncode != 0:
        raise PublishError(f"'git {' '.join(args)}' failed: {_first_line(result.stderr)}",
                           "Fix the repository, or publish with --source upload")
    return result


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def in_git_repo(root: Path) -> bool:
    try:
        result = _git(root, "rev-parse", "--is-inside-work-tree", check=False)
    except PublishUsageError:
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"


def current_branch(root: Path) -> str | None:
    result = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


def git_remote(root: Path, branch: str | None = None) -> str | None:
    """The remote to publish from: the branch's upstream remote, else origin, else the first."""
    if not in_git_repo(root):
        return None
    if branch:
        configured = _git(root, "config", f"branch.{branch}.remote", check=False).stdout.strip()
        if configured and configured != ".":
            return configured
    remotes = _git(root, "remote", check=False).stdout.split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if remotes else None


def default_source(root: Path) -> str:
    """``git`` when the project's repository has a remote, else ``upload``."""
    return "git" if git_remote(root, current_branch(root) if in_git_repo(root) else None) \
        else "upload"


def git_source(root: Path, branch: str | None) -> GitSource:
    """Check that ``branch`` (default: the current one) is committed and pushed; describe it."""
    if not in_git_repo(root):
        raise PublishUsageError(f"{root} is not in a git repository",
                                "Publish with --source upload, or run: git init")
    head = current_branch(root)
    branch = branch or head
    if not branch:
        raise PublishUsageError("HEAD is detached, so there is no branch to publish",
                                "Check out a branch (git switch BRANCH) or pass --branch")
    remote = git_remote(root, branch)
    if remote is None:
        raise PublishUsageError("the repository has no remote to build from",
                                "Add one (git remote add origin URL) or use --source upload")
    if branch == head:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".").stdout
        if dirty.strip():
            count = len(dirty.strip().splitlines())
            raise PublishUsageError(
                f"uncommitted changes ({count} file{'s' if count != 1 else ''}) on branch "
                f"{branch}: commit them (git commit -am \"...\") and push them "
                f"(git push {remote} {branch})",
                "Or publish the working tree with --source upload",
            )
    url = _git(root, "remote", "get-url", remote).stdout.strip()
    local = _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}",
                 check=False).stdout.strip()
    listed = _git(root, "ls-remote", "--heads", remote, f"refs/heads/{branch}",
                  timeout=LS_REMOTE_TIMEOUT, check=False)
    if listed.returncode != 0:
        raise PublishError(f"cannot read branch {branch} from {remote} ({url}): "
                           f"{_first_line(listed.stderr)}",
                           "Check the remote (git ls-remote " + remote + "), or use --source upload")
    remote_sha = listed.stdout.split()[0] if listed.stdout.split() else ""
    if not remote_sha:
        if not local:
            raise PublishUsageError(f"branch {branch} exists neither here nor on {remote}",
                                    "Pass an existing branch with --branch")
        raise PublishUsageError(f"branch {branch} is not pushed: git push -u {remote} {branch}",
                                "Or publish the working tree with --source upload")
    if local and local != remote_sha:
        raise PublishUsageError(_divergence(root, branch, remote, local, remote_sha),
                                "Or publish the working tree with --source upload")
    return GitSource(url, branch, remote, remote_sha)


def _divergence(root: Path, branch: str, remote: str, local: str, remote_sha: str) -> str:
    def ancestor(a: str, b: str) -> bool:
        return _git(root, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    known = _git(root, "cat-file", "-e", f"{remote_sha}^{{commit}}", check=False).returncode == 0
    if known and ancestor(remote_sha, local):
        ahead = _git(root, "rev-list", "--count", f"{remote_sha}..{local}").stdout.strip()
        return (f"branch {branch} is not pushed ({ahead} commit{'s' if ahead != '1' else ''} "
                f"ahead of {remote}): git push {remote} {branch}")
    if known and ancestor(local, remote_sha):
        return f"branch {branch} is behind {remote}/{branch}: git pull {remote} {branch}"
    return (f"branch {branch} differs from {remote}/{branch}: "
            f"git pull --rebase {remote} {branch} && git push {remote} {branch}")


IGNORE_FILES = (".gitignore", ".flowignore")


def upload_files(root: Path) -> list[str]:
    """The files ``--source upload`` sends: the folder minus ignored files (paths relative to root).

    Each directory's ``.gitignore`` and ``.flowignore`` apply below it, as git applies them;
    ``SKIP_DIRS`` are never sent (the server installs dependencies and builds itself).
    """
    import pathspec

    def rules(folder: Path) -> pathspec.GitIgnoreSpec | None:
        lines: list[str] = []
        for name in IGNORE_FILES:
            f = folder / name
            if f.is_file():
                lines += f.read_text(encoding="utf-8", errors="replace").splitlines()
        return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None

    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []  # (dir relative to root, its rules)

    def ignored(rel: str, is_dir: bool) -> bool:
        for base, spec in specs:
            if base and not (rel + "/").startswith(base + "/"):
                continue
            sub = rel[len(base) + 1:] if base else rel
            if spec.match_file(sub + "/" if is_dir else sub):
                return True
        return False

    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel_dir = "" if here == root else here.relative_to(root).as_posix()
        spec = rules(here)
        if spec is not None:
            specs.append((rel_dir, spec))
        keep = []
        for d in sorted(dirs):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d not in SKIP_DIRS and not ignored(rel, True) and not (here / d).is_symlink():
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not name.endswith((".pyc", ".pyo")) and not ignored(rel, False):
                files.append(rel)
    return files


def pack_upload(root: Path, max_bytes: int, files: list[str] | None = None) -> tuple[bytes, int]:
    """A .tar.gz of ``files`` (default: :func:`upload_files`; ``flow publish`` passes the list
    its plugins agreed on) and their count."""
    files = upload_files(root) if files is None else files
    buffer = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel in files:
            path = root / rel
            if not (path.is_file() or path.is_symlink()) or path.is_dir():
                continue  # deleted in the working tree, or a submodule
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
            count += 1
    data = buffer.getvalue()
    if count == 0:
        raise PublishUsageError(f"no files to upload in {root}: every file is ignored or the folder is empty",
                                "Check the project's .gitignore and .flowignore")
    if len(data) > max_bytes:
        raise PublishUsageError(
            f"the upload is {len(data) // 1024} KiB, more than the server's limit of "
            f"{max_bytes // 1024} KiB",
            "Publish from git (--source git), or add large files to .flowignore",
        )
    return data, count
