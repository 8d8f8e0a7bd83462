"""The flow-managed environment and the two installers (uv, pip) that fill it.

Kits and plugins live in a virtual environment of their own (``$FLOW_HOME/env``, or
``<project>/.flow/env``), never in the interpreter that runs flow. That environment sees
flowcore's own packages (flowcore, click, pluggy, ...) through ``_flowcore_base.pth``, so a
plugin that requires ``flowcore`` and ``click`` installs offline and nothing of flowcore's is
installed twice. The installers are told to leave those base distributions alone (uv:
``--excludes``; pip: a dry run that is refused if it would replace one), and
``unsatisfied_base_requirements`` checks what the new distributions need from them.

This module knows *how* to install; ``flowcore.packages`` decides *what* and keeps the config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcore import environment
from flowcore.environment import ENTRY_POINT_GROUPS, canonical_name
from flowcore.errors import InstallError

BASE_PTH = "_flowcore_base.pth"


@dataclass(frozen=True)
class Dist:
    """One installed distribution: canonical name, version, and its flow entry points."""

    name: str
    version: str
    entry_points: tuple[tuple[str, str, str], ...]  # (group, name, value), flow groups only
    requires: tuple[str, ...]

    @property
    def groups(self) -> set[str]:
        return {group for group, _, _ in self.entry_points}


def _read_dists(paths: Sequence[Path]) -> dict[str, Dist]:
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


@dataclass
class ManagedEnv:
    """A flow-managed virtual environment at ``root``."""

    root: Path
    #: The environment lives in a folder of the user's tree (a project's ``.flow/``): create that
    #: folder git-ignored.
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

    def lock(self):  # noqa: ANN201 - a context manager
        """Serialise installs and removals in this environment between processes."""
        from flowcore._fileio import file_lock, make_state_dir

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
            from flowcore._fileio import atomic_write_bytes

            atomic_write_bytes(self.site_packages / BASE_PTH, self.base_pth_text().encode())

    def create(self) -> None:
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
            out[canonical_name(entry.name[:-len(".dist-info")].rsplit("-", 1)[0])] = (
                st.st_ino, st.st_mtime_ns)
        return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        shutil.rmtree(self.path, ignore_errors=True)  # left by a run that was killed
        try:
            shutil.copytree(env.root, self.path, symlinks=True, copy_function=_link_or_copy)
        except OSError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
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
        shutil.rmtree(aside, ignore_errors=True)
        if self.env.root.exists():
            os.rename(self.env.root, aside)
        os.rename(self.path, self.env.root)
        shutil.rmtree(aside, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Running the installers
# --------------------------------------------------------------------------------------------


def find_uv() -> str | None:
    """The uv binary, unless ``FLOW_INSTALLER=pip`` asks for pip."""
    if os.environ.get("FLOW_INSTALLER", "").lower() == "pip":
        return None
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


def run_tool(cmd: Sequence[str], what: str, fix: str = "") -> subprocess.CompletedProcess[str]:
    """Run an installer; its full output goes to the debug log, its error into one line."""
    import logging

    log = logging.getLogger("flow")
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InstallError(f"{what}: cannot run {cmd[0]}: {exc.strerror}", fix) from exc
    log.debug("%s", (proc.stdout + proc.stderr).rstrip())
    if proc.returncode != 0:
        raise InstallError(f"{what}: {summarise(proc.stderr + proc.stdout)}", fix)
    return proc


@dataclass
class InstallOptions:
    """Where distributions may come from. Recorded with each install for ``doctor --fix``."""

    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    build_isolation: bool = True
    #: The configured package source (flowcore._package_source), ignored under ``no_index``.
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
                base: dict[str, Dist], what: str) -> None:
        """Install ``specs`` into ``env`` without touching any base distribution."""
        if self.uv:
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
                fh.write("\n".join(sorted(base)) + "\n")
            try:
                run_tool([self.uv, "pip", "install", "--python", str(env.python),
                          "--excludes", fh.name, *options.args(), *specs], what)
            finally:
                os.unlink(fh.name)
            return
        self._refuse_base_changes(env, specs, options, base, what)
        run_tool(self._pip(env, "install", "--quiet", *options.args(), *specs), what)

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
    from flowcore._fileio import atomic_write_bytes

    text = json.dumps({"schemaVersion": 1, "packages": packages}, indent=2, sort_keys=True)
    atomic_write_bytes(env.record_path, (text + "\n").encode("utf-8"))


def forget_record(env: ManagedEnv, names: Iterable[str]) -> None:
    record = read_record(env)
    if any(n in record for n in names):
        write_record(env, {k: v for k, v in record.items() if k not in set(names)})
