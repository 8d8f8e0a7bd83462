"""The template store: a git repository per kit or plugin template, one tag per version.

copier updates a project from the template version it was made from (``_commit``) to a newer
one, and needs both versions in a git repository (``_src_path``). Kits and plugins ship their
templates as plain directories inside their packages, and an installed package holds only its
current version. So whenever ``flow create`` or ``flow update`` uses such a template, flow
commits the template's files into ``$FLOW_HOME/templates/<origin>/<kit>/<name>`` and tags the
commit with the version of the distribution that contributed it (``0.2.0``). A project made from
it records that repository and that tag, and ``flow update`` finds every version the machine
has used there.

A version whose files changed without a version bump (an editable install, a reinstall of the
same version) gets its own tag, ``<version>+flow<N>``, so a tag never changes what it names.

The repositories are caches of what was installed: deleting one loses only the versions that are
no longer installed (projects made from them can then not be updated from them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from flowcore._base.errors import FlowError

META_FILE = "flow-template.json"  # inside the repository's .git directory
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "flow", "GIT_AUTHOR_EMAIL": "flow@localhost",
    "GIT_COMMITTER_NAME": "flow", "GIT_COMMITTER_EMAIL": "flow@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}
# The user's git configuration must not change what lands in the store (signing, hooks).
_GIT_CONFIG = ("-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
               "-c", "core.hooksPath=/dev/null", "-c", "init.defaultBranch=main")


def _part(text: str) -> str:
    part = _UNSAFE.sub("_", text).strip(".") or "_"
    return part


def store_dir(origin: str, kit: str, name: str) -> Path:
    from flowcore._base.paths import template_store_dir

    return template_store_dir() / _part(origin) / _part(kit) / _part(name)


def git_available() -> bool:
    return shutil.which("git") is not None


def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         input: str | None = None) -> str:
    proc = subprocess.run(["git", *_GIT_CONFIG, *args], cwd=repo, capture_output=True, text=True,
                          input=input, env={**os.environ, **_GIT_ENV, **(env or {})}, check=False)
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split())[:300] or f"git exited with {proc.returncode}"
        raise FlowError(f"cannot keep the template in {repo}: git {args[0]} failed ({reason})",
                        "Check that git works and the directory is writable")
    return proc.stdout


def _init(repo: Path) -> None:
    """Make an empty repository at ``repo`` in one step (a sibling, then renamed into place)."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=repo.parent))
    try:
        _git(tmp, "init", "-q")
        os.rename(tmp, repo)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(repo: Path) -> dict[str, str] | None:
    """``{"origin", "kit", "name"}`` of a store repository, or None if ``repo`` is not one."""
    try:
        data = json.loads((repo / ".git" / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str)
                                             for k in ("origin", "kit", "name")):
        return None
    return {k: data[k] for k in ("origin", "kit", "name")}


def find_repo(src_path: str) -> Path | None:
    """The store repository ``src_path`` (a project's ``_src_path``) names, if it is one."""
    from flowcore._base.paths import template_store_dir

    try:
        path = Path(src_path).expanduser().resolve()
        path.relative_to(template_store_dir().resolve())
    except (ValueError, OSError, RuntimeError):
        return None
    return path if read_meta(path) is not None else None


def _tag_candidates(version: str, tags: list[str]) -> list[str]:
    sep = "." if "+" in version else "+"
    pattern = re.compile(re.escape(version) + r"(?:" + re.escape(sep) + r"flow(\d+))?")
    return [t for t in tags if pattern.fullmatch(t)]


def publish(source: Path, *, origin: str, kit: str, name: str, version: str) -> tuple[Path, str]:
    """Make sure the store holds ``source``'s files as a version of the template; the repository
    and the tag naming that version."""
    from flowcore._base.fileio import file_lock

    repo = store_dir(origin, kit, name)
    with file_lock(repo):
        if not (repo / ".git").is_dir():
            _init(repo)
        (repo / ".git" / META_FILE).write_text(
            json.dumps({"origin": origin, "kit": kit, "name": name}) + "\n", encoding="utf-8")
        index = repo / ".git" / "flow-import.index"
        index.unlink(missing_ok=True)
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            _git(repo, f"--work-tree={source}", "add", "--all", "--force", "--", ".",
                 ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.py[co]", env=env)
            tree = _git(repo, "write-tree", env=env).strip()
        finally:
            index.unlink(missing_ok=True)
        refs = _git(repo, "for-each-ref", "--format=%(refname:short) %(tree)", "refs/tags")
        trees = dict(line.split(" ", 1) for line in refs.splitlines() if " " in line)
        candidates = _tag_candidates(version, list(trees))
        for tag in candidates:
            if trees[tag] == tree:
                return repo, tag
        tag = version if version not in trees else _next_tag(version, candidates)
        head = _git(repo, "for-each-ref", "--format=%(objectname)", "refs/heads/main").strip()
        parent = ["-p", head] if head else []
        commit = _git(repo, "commit-tree", tree, *parent,
                      "-m", f"{name} {tag} (from {origin}, for {kit})").strip()
        _git(repo, "update-ref", "refs/heads/main", commit)
        _git(repo, "tag", tag, commit)
        _git(repo, "reset", "--hard", "-q")  # the work tree shows the newest version
        return repo, tag


def _next_tag(version: str, candidates: list[str]) -> str:
    sep = "." if "+" in version else "+"
    numbers = [int(m.group(1)) for t in candidates
               if (m := re.search(r"flow(\d+)$", t)) is not None]
    return f"{version}{sep}flow{max(numbers, default=0) + 1}"
