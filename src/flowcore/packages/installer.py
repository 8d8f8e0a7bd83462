"""The flow-managed environment and the two installers (uv, pip) that fill it.

Kits and plugins live in a virtual environment of their own (``$FLOW_HOME/env``, or
``<project>/.flow/env``), never in the interpreter that runs flow. That environment sees
flowcore's own packages (flowcore, click, pluggy, ...) through ``_flowcore_base.pth``, so a
plugin that requires ``flowcore`` and ``click`` installs offline and nothing of flowcore's is
installed twice. The installers are told to leave those base distributions alone (uv:
``--excludes``; pip: a dry run that is refused if it would replace one), and
``unsatisfied_base_requirements`` checks what the new distributions need from them.

This module knows *how* to install; ``flowcore.packages.manager`` decides *what* and keeps the config.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore._base.errors import InstallError
from flowcore.config import environment
from flowcore.config.environment import ENTRY_POINT_GROUPS, canonical_name

if TYPE_CHECKING:
    import subprocess
    from contextlib import AbstractContextManager

BASE_PTH = "_flowcore_base.pth"


@dataclass(frozen=True, slots=True)
class Dist:
    """One installed distribution: canonical name, version, and its flow entry points."""

    name: str
    version: str
    entry_points: tuple[tuple[str, str, str], ...]  # (group, name, value), flow's groups only
    requires: tuple[str, ...]

    @property
    def groups(self) -> set[str]:
        return {group for group, _, _ in self.entry_points}


def _read_dists(paths: Sequence[Path]) -> dict[str, Dist]:
    """The distributions on ``paths`` by canonical name (the first of a name wins, as for
    imports), read from their metadata folders (flowcore.plugins.distinfo), else importlib.metadata."""
    from flowcore.plugins import distinfo as _distinfo

    found = _distinfo.metadata_dirs([str(p) for p in paths])
    if found is not None and not any(d.endswith(".egg-info") for d in found):
        out: dict[str, Dist] = {}
        for meta_dir in found:
            headers = _distinfo.headers(meta_dir)
            raw_name = (headers or {}).get("name", [None])[0]
            if not raw_name:
                continue
            name = canonical_name(raw_name)
            if name in out:
                continue
            eps = tuple(ep for ep in _distinfo.entry_points(meta_dir)
                        if ep[0] in ENTRY_POINT_GROUPS)
            version = (headers or {}).get("version", [""])[0]
            out[name] = Dist(name, version, eps, tuple((headers or {}).get("requires-dist", ())))
        return out
    return _read_dists_with_metadata(paths)


def _read_dists_with_metadata(paths: Sequence[Path]) -> dict[str, Dist]:
    from importlib.metadata import distributions

    out: dict[str, Dist] = {}
    for dist in distributions(path=[str(p) for p in paths]):
        raw_name = dist.metadata["Name"]
        if not raw_name:
            continue
        name = canonical_name(raw_name)
        if name in out:  # first on the path wins, as for imports
            continue
        eps = tuple(
            (ep.group, ep.name, ep.value)
            for ep in dist.entry_points
            if ep.group in ENTRY_POINT_GROUPS
        )
        out[name] = Dist(name, dist.version, eps, tuple(dist.requires or ()))
    return out


# --------------------------------------------------------------------------------------------
# flowcore's own environment (the "base")
# --------------------------------------------------------------------------------------------


def base_site_dirs() -> list[Path]:
    """site-packages directories of the interpreter running flow (not any managed env)."""
    import site

    dirs = [Path(p) for p in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(Path(site.getusersitepackages()))
    return [d for d in dirs if d.is_dir()]


def base_distributions() -> dict[str, Dist]:
    """What flowcore's environment provides (name and version of each distribution); plugins
    use these and never install them again.

    Read from the ``.dist-info`` folder names (``name-version.dist-info``, as installers write
    them), not with ``importlib.metadata``: parsing every METADATA file of flowcore's
    environment (200 of them in a dev venv) cost ~30 ms of each ``flow plugin add``. A folder
    whose name does not have that form (an ``.egg-info``) is read from its metadata headers.
    Their entry points and requirements are not read: nothing asks for them.
    """
    out: dict[str, Dist] = {}
    for directory in base_site_dirs():
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            found = _name_and_version(directory, entry)
            if found is not None and found[0] not in out:  # first on the path wins
                out[found[0]] = Dist(found[0], found[1], (), ())
    return out


def _name_and_version(directory: Path, entry: str) -> tuple[str, str] | None:
    """Canonical name and version of the distribution whose metadata is ``directory/entry``."""
    if entry.endswith(".dist-info"):
        name, sep, version = entry[:-len(".dist-info")].partition("-")
        if sep and name and version and "-" not in version:
            return canonical_name(name), version
        metadata = directory / entry / "METADATA"
    elif entry.endswith(".egg-info"):
        metadata = directory / entry
        if metadata.is_dir():
            metadata = metadata / "PKG-INFO"
    else:
        return None
    headers: dict[str, str] = {}
    try:
        with open(metadata, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, sep, value = line.partition(":")
                if sep and key in ("Name", "Version"):
                    headers.setdefault(key, value.strip())
    except OSError:
        return None
    if not headers.get("Name"):
        return None
    return canonical_name(headers["Name"]), headers.get("Version", "")


def unsatisfied_base_requirements(
    new: Iterable[Dist], base: dict[str, Dist]
) -> list[str]:
    """Requirements of ``new`` on base distributions that the base versions do not satisfy.

    Returns sentences like ``flow-plugin-x needs click>=99 but flowcore's environment has
    click 8.1.7``.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    problems: list[str] = []
    for dist in new:
        for text in dist.requires:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = base.get(canonical_name(req.name))
            if have is None:
                continue
            if req.specifier and not req.specifier.contains(have.version, prereleases=True):
                problems.append(
                    f"{dist.name} needs {req.name}{req.specifier} but flowcore's environment "
                    f"has {req.name} {have.version}"
                )
    return problems


# --------------------------------------------------------------------------------------------
# The managed environment
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ManagedEnv:
    """A flow-managed virtual environment at ``root``.

    ``in_user_tree``: the environment lives in a folder of the user's tree (a project's
    ``.flow/``): create that folder git-ignored.
    """

    root: Path
    in_user_tree: bool = False

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return environment.site_packages_dir(self.root)

    @property
    def record_path(self) -> Path:
        """``installed.json``: what was installed from where, so ``doctor --fix`` can rebuild."""
        return self.root.parent / "installed.json"

    def exists(self) -> bool:
        return self.python.exists() and self.site_packages.is_dir()

    def lock(self) -> AbstractContextManager[None]:
        """Serialise installs and removals in this environment between processes."""
        from flowcore._base.fileio import file_lock, make_state_dir

        if self.in_user_tree:
            make_state_dir(self.root.parent)
        return file_lock(self.root)

    def base_pth_text(self) -> str:
        lines = [f"import site; site.addsitedir({str(d)!r})" for d in base_site_dirs()]
        return "# flowcore's own packages (written by flow; rewritten on every install)\n" + (
            "\n".join(lines) + "\n"
        )

    def base_pth_current(self) -> bool:
        try:
            return (self.site_packages / BASE_PTH).read_text() == self.base_pth_text()
        except OSError:
            return False

    def ensure(self) -> None:
        """Create the environment if needed and point it at flowcore's packages."""
        if not self.exists():
            self.create()
        if not self.base_pth_current():
            from flowcore._base.fileio import atomic_write_bytes

            atomic_write_bytes(self.site_packages / BASE_PTH, self.base_pth_text().encode())

    def create(self) -> None:
        import shutil

        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        uv = find_uv()
        if uv:
            cmd = [uv, "venv", "--quiet", "--python", sys.executable, str(self.root)]
        else:
            cmd = [sys.executable, "-m", "venv", "--without-pip", str(self.root)]
        run_tool(cmd, f"cannot create the flow environment at {self.root}")
        if not self.site_packages.is_dir():
            raise InstallError(
                f"the flow environment at {self.root} has no {self.site_packages.name} "
                f"for Python {sys.version_info[0]}.{sys.version_info[1]}",
                "Run: flow doctor --fix",
            )

    def distributions(self) -> dict[str, Dist]:
        """Distributions installed in this environment (not the base ones it can see)."""
        if not self.site_packages.is_dir():
            return {}
        return _read_dists([self.site_packages])

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """``{name: (inode, mtime)}`` of each distribution's ``RECORD``: any reinstall, even of
        the same version, writes a new one, so a changed fingerprint means changed files."""
        out: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.site_packages))
        except OSError:
            return out
        for entry in entries:
            if not entry.name.endswith(".dist-info"):
                continue
            try:
                st = os.stat(os.path.join(entry.path, "RECORD"))
            except OSError:
                continue
            out[_dist_info_name(entry.name)] = (st.st_ino, st.st_mtime_ns)
        return out

    def records(self) -> dict[str, list[str]]:
        """``{name: [paths of RECORD files]}`` of every ``*.dist-info`` in site-packages, named
        as ``fingerprints`` names them (two folders of one name are one owner)."""
        out: dict[str, list[str]] = {}
        try:
            entries = list(os.scandir(self.site_packages))
        except OSError:
            return out
        for entry in entries:
            if entry.name.endswith(".dist-info"):
                out.setdefault(_dist_info_name(entry.name), []).append(
                    os.path.join(entry.path, "RECORD"))
        return out


def _dist_info_name(folder: str) -> str:
    """The canonical distribution name of a ``name-version.dist-info`` folder."""
    return canonical_name(folder[:-len(".dist-info")].rsplit("-", 1)[0])


def record_files(record: str) -> set[str]:
    """The files a ``RECORD`` lists, relative to site-packages and normalised (a script is
    ``../../../bin/NAME``), read as the CSV file it is (PEP 376/627).

    Bytecode (``.pyc``, ``__pycache__/``) is left out: it is compiled from a listed source file,
    and some installers list it while others do not. A missing or unreadable RECORD lists
    nothing: a distribution without one cannot be told apart from its neighbours anyway.
    """
    import csv
    import posixpath

    out: set[str] = set()
    try:
        with open(record, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return out
    for row in rows:
        if not row or not row[0].strip():
            continue
        path = row[0]
        if "./" in path or "//" in path or "\\" in path or path.endswith("."):
            # ../ (a script: ../../../bin/NAME), ./, a doubled or Windows separator; the rest
            # (nearly every line) is normal already, and normpath is half the time of this
            path = posixpath.normpath(path.replace("\\", "/"))
        if path.endswith(".pyc") or "__pycache__/" in path:
            continue
        out.add(path)
    return out


def files_owned_twice(env: ManagedEnv, new: set[str]) -> list[tuple[str, str, str]]:
    """``(new distribution, other distribution, file)`` for every file (relative to
    site-packages) that a distribution of ``new`` and another distribution of ``env`` both list
    in their ``RECORD``, sorted by file. Clashes between two distributions outside ``new`` are
    not this install's doing and are left alone.

    Installers do not check this: the second distribution overwrites the first one's file
    silently, and uninstalling either later deletes it for both. An upgrade is not a clash:
    the installer removed the old version's ``.dist-info``, and two of one name are one owner.
    """
    if not new:  # the installer left every distribution as it was
        return []
    owners: dict[str, set[str]] = {}
    for name, records in env.records().items():
        for record in records:
            for path in record_files(record):
                owners.setdefault(path, set()).add(name)
    clashes: list[tuple[str, str, str]] = []
    for path, names in sorted(owners.items()):
        if len(names) < 2:
            continue
        mine = sorted(names & new)
        if mine:
            others = sorted(names - set(mine)) or mine[1:]
            clashes.append((mine[0], others[0], path))
    return clashes


def refuse_files_owned_twice(env: ManagedEnv, before: dict[str, tuple[int, int]],
                             what: str) -> None:
    """Raise InstallError when a distribution the install added or rewrote (its ``RECORD``
    differs from ``before``, ``ManagedEnv.fingerprints`` taken before the installer ran) shares
    a file with another one: a plugin that ships another plugin's module would replace it
    silently, and deleting it later would delete the other plugin's file too."""
    now = env.fingerprints()
    clashes = files_owned_twice(env, {n for n, fp in now.items() if before.get(n) != fp})
    if not clashes:
        return
    mine, other, path = clashes[0]
    if path.startswith("../"):  # a script or data file outside site-packages: from the env root
        import posixpath

        site = os.path.relpath(env.site_packages, env.root).replace(os.sep, "/")
        path = posixpath.normpath(posixpath.join(site, path))
    more = f" (and {len(clashes) - 1} more files)" if len(clashes) > 1 else ""
    raise InstallError(
        f"{what}: {mine} ships {path}, which {other} also ships{more}",
        f"Use {mine} or {other}, not both: files owned by two distributions overwrite each "
        "other and are deleted with either. The config and the flow environment are unchanged")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def _remove_tree(path: str | Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class EnvSnapshot:
    """The managed environment as it was before an install, kept so a refused install can be
    undone *exactly*: the same files, whatever their versions, from wherever they came.

    The copy is a tree of hard links next to the environment (``.env.before``): one link per
    file, no data copied. Installers never write into an installed file (they unlink or rename
    over it), so the linked files keep their old contents. ``restore`` swaps the copy in;
    ``discard`` drops it once the change is committed.
    """

    def __init__(self, env: ManagedEnv) -> None:
        self.env = env
        self.path = env.root.with_name(f".{env.root.name}.before")
        self.fingerprints = env.fingerprints()
        _remove_tree(self.path)  # left by a run that was killed
        try:
            import shutil

            shutil.copytree(env.root, self.path, symlinks=True, copy_function=_link_or_copy)
        except OSError as exc:
            _remove_tree(self.path)
            raise InstallError(f"cannot keep a copy of the flow environment at {env.root} "
                               f"before changing it: {exc}",
                               "Check the free space and permissions there") from exc

    def changed(self) -> set[str]:
        """Distributions added, removed or rewritten (even at the same version) since then."""
        now = self.env.fingerprints()
        return {n for n in now.keys() | self.fingerprints.keys()
                if now.get(n) != self.fingerprints.get(n)}

    def restore(self) -> None:
        """Put the environment back exactly as it was when the snapshot was taken."""
        aside = self.env.root.with_name(f".{self.env.root.name}.failed")
        _remove_tree(aside)
        if self.env.root.exists():
            os.rename(self.env.root, aside)
        os.rename(self.path, self.env.root)
        _remove_tree(aside)

    def discard(self) -> None:
        _remove_tree(self.path)


# --------------------------------------------------------------------------------------------
# Running the installers
# --------------------------------------------------------------------------------------------


def find_uv() -> str | None:
    """The uv binary, unless ``FLOW_INSTALLER=pip`` asks for pip."""
    if os.environ.get("FLOW_INSTALLER", "").lower() == "pip":
        return None
    if os.name == "posix" and sys.prefix != sys.base_prefix:
        # In a virtual environment, where uv.find_uv_bin (environment.uv_binary) looks first:
        # <prefix>/bin, the scripts directory of the "venv" scheme (where installing flowcore
        # put its uv). Without its sysconfig work.
        candidate = os.path.join(sys.prefix, "bin", "uv")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return environment.uv_binary()


def summarise(output: str) -> str:
    """The installer's error output, reduced to one line for ``flow: error: ...``."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith(("error:", "ERROR:", "×"))]
    if errors:
        picked = []
        for ln in lines[errors[0]:]:
            if ln.startswith(("hint:", "help:", "note:", "[notice]")):
                break
            picked.append(ln)
    else:
        picked = lines[-3:]
    text = " ".join(picked).replace(" cause: ", ": ").replace(" ╰─▶ ", ": ")
    for prefix in ("error:", "ERROR:", "×", "╰─▶", "│", "cause:"):
        text = text.replace(prefix, " ")
    text = re.sub(r"\s*\(from versions: [^)]*\)", "", " ".join(text.split())).rstrip(".")
    return text[:400] + ("..." if len(text) > 400 else "") or "no output"


def run_tool(cmd: Sequence[str], what: str, fix: str = "",
             meanwhile: Callable[[], object] | None = None) -> subprocess.CompletedProcess[str]:
    """Run an installer; its full output goes to the debug log, its error into one line.

    ``meanwhile`` is called while the installer runs (work that would otherwise wait for it).
    """
    # No logging import just for this: with logging not imported, no debug log is set up.
    logging = sys.modules.get("logging")
    log = logging.getLogger("flow") if logging is not None else None
    if log is not None:
        log.debug("running %s", " ".join(cmd))
    try:
        code, out, err = _run(list(cmd), meanwhile)
    except OSError as exc:
        raise InstallError(f"{what}: cannot run {cmd[0]}: {exc.strerror}", fix) from exc
    import subprocess

    proc = subprocess.CompletedProcess(list(cmd), code, _text(out), _text(err))
    if log is not None:
        log.debug("%s", (proc.stdout + proc.stderr).rstrip())
    if proc.returncode != 0:
        cache = _unwritable_uv_cache(cmd, proc.stderr + proc.stdout)
        if cache is not None:
            from flowcore._base.errors import ConfigError

            raise ConfigError(f"{what}: uv cannot write its cache {cache}",
                              "Make it writable, or move it: set UV_CACHE_DIR to a writable "
                              "directory")
        raise InstallError(f"{what}: {summarise(proc.stderr + proc.stdout)}", fix)
    return proc


_CANNOT_WRITE = ("Read-only file system", "Permission denied", "Not a directory",
                 "os error 30", "os error 13", "os error 20")


def _unwritable_uv_cache(cmd: Sequence[str], output: str) -> str | None:
    """uv's cache directory when ``output`` (of a failed uv ``cmd``) says uv could not write
    there, else ``None``. The directory is ``UV_CACHE_DIR``, else what ``uv cache dir`` says."""
    if not os.path.basename(cmd[0]).startswith("uv") or not any(
            m in output for m in _CANNOT_WRITE):
        return None
    cache = os.environ.get("UV_CACHE_DIR")
    if cache:
        cache = os.path.abspath(os.path.expanduser(cache))
    else:
        import subprocess

        try:
            cache = subprocess.run([cmd[0], "cache", "dir"], capture_output=True, text=True,
                                   timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return cache if cache and cache in output else None


def _text(data: bytes) -> str:
    """Captured output as text (subprocess's ``text=True``: universal newlines)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def _run(cmd: list[str], meanwhile: Callable[[], object] | None) -> tuple[int, bytes, bytes]:
    """Exit code, stdout and stderr of ``cmd``, with ``meanwhile()`` called while it runs."""
    import subprocess

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as popen:
        try:
            if meanwhile is not None:
                meanwhile()
            out, err = popen.communicate()
        except BaseException:
            popen.kill()
            raise
    return popen.returncode, out, err


@dataclass(slots=True)
class InstallOptions:
    """Where distributions may come from. Recorded with each install for ``doctor --fix``.

    ``index_url``/``extra_index_urls``: the configured package source
    (flowcore.config.package_source), ignored under ``no_index``.
    """

    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    build_isolation: bool = True
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        out: list[str] = []
        for link in self.find_links:
            out += ["--find-links", link]
        if self.no_index:
            out.append("--no-index")
        else:
            if self.index_url:
                out += ["--index-url", self.index_url]
            for url in self.extra_index_urls:
                out += ["--extra-index-url", url]
        if not self.build_isolation:
            out.append("--no-build-isolation")
        return out


class Installer:
    """uv when it is available, else ``python -m pip``; both target the managed env."""

    def __init__(self) -> None:
        self.uv = find_uv()
        self.name = "uv" if self.uv else "pip"

    def _pip(self, env: ManagedEnv, *args: str) -> list[str]:
        return [sys.executable, "-m", "pip", "--python", str(env.python),
                "--disable-pip-version-check", "--no-input", *args]

    def install(self, env: ManagedEnv, specs: Sequence[str], options: InstallOptions,
                base: dict[str, Dist], what: str,
                meanwhile: Callable[[], object] | None = None) -> None:
        """Install ``specs`` into ``env`` without touching any base distribution (``meanwhile``:
        see ``run_tool``).

        Raises InstallError when the result has a file owned by two distributions
        (``refuse_files_owned_twice``); the caller rolls the environment back.
        """
        before = env.fingerprints()
        if self.uv:
            # Next to the environment (the caller holds its lock), not a tempfile: that module
            # is imported (by _warm_up) while uv runs, instead of before.
            excludes = os.path.join(env.root.parent, f".uv-excludes-{os.getpid()}.txt")
            with open(excludes, "w", encoding="utf-8") as fh:
                fh.write("\n".join(sorted(base)) + "\n")
            try:
                run_tool([self.uv, "pip", "install", "--python", str(env.python),
                          "--excludes", excludes, *options.args(), *specs], what,
                         meanwhile=meanwhile)
            finally:
                os.unlink(excludes)
        else:
            self._refuse_base_changes(env, specs, options, base, what)
            run_tool(self._pip(env, "install", "--quiet", *options.args(), *specs), what,
                     meanwhile=meanwhile)
        refuse_files_owned_twice(env, before, what)

    def _refuse_base_changes(self, env: ManagedEnv, specs: Sequence[str],
                             options: InstallOptions, base: dict[str, Dist], what: str) -> None:
        """pip counts base packages as installed; refuse a plan that would replace one."""
        try:
            report = self._pip_report(env, specs, options, what)
        except InstallError:
            # Explain a conflict with flowcore's packages better than pip's resolver does.
            try:
                requested = self._pip_report(env, specs, options, what, "--no-deps")
            except InstallError:
                requested = {}
            problems = unsatisfied_base_requirements(
                [Dist(canonical_name(i["metadata"]["name"]), i["metadata"]["version"], (),
                      tuple(i["metadata"].get("requires_dist") or ()))
                 for i in requested.get("install", [])], base)
            if problems:
                raise InstallError("; ".join(problems)) from None
            raise
        clashes = []
        for item in report.get("install", []):
            meta = item.get("metadata", {})
            name = canonical_name(meta.get("name", ""))
            if name in base:
                clashes.append(f"{name} {base[name].version} with {meta.get('version')}")
        if clashes:
            raise InstallError(
                f"{what}: it would replace flowcore's own " + ", ".join(clashes),
                "Use a version of the package that works with this flowcore",
            )

    def _pip_report(self, env: ManagedEnv, specs: Sequence[str], options: InstallOptions,
                    what: str, *extra: str) -> dict:
        proc = run_tool(self._pip(env, "install", "--dry-run", "--quiet", "--report", "-",
                                  *extra, *options.args(), *specs), what)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return {}
        return report if isinstance(report, dict) else {}

    def uninstall(self, env: ManagedEnv, names: Sequence[str]) -> None:
        present = env.distributions()
        names = [n for n in names if canonical_name(n) in present]
        if not names:
            return
        what = f"cannot uninstall {', '.join(names)}"
        if self.uv:
            run_tool([self.uv, "pip", "uninstall", "--python", str(env.python), *names], what)
        else:
            run_tool(self._pip(env, "uninstall", "--yes", "--quiet", *names), what)


# --------------------------------------------------------------------------------------------
# The install record (installed.json next to the environment)
# --------------------------------------------------------------------------------------------


def read_record(env: ManagedEnv) -> dict[str, Any]:
    try:
        data = json.loads(env.record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    packages = data.get("packages") if isinstance(data, dict) else None
    return packages if isinstance(packages, dict) else {}


def write_record(env: ManagedEnv, packages: dict[str, Any]) -> None:
    from flowcore._base.fileio import atomic_write_bytes

    text = json.dumps({"schemaVersion": 1, "packages": packages}, indent=2, sort_keys=True)
    atomic_write_bytes(env.record_path, (text + "\n").encode("utf-8"))


def forget_record(env: ManagedEnv, names: Iterable[str]) -> None:
    record = read_record(env)
    if any(n in record for n in names):
        write_record(env, {k: v for k, v in record.items() if k not in set(names)})
