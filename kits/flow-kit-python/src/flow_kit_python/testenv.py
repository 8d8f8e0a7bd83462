"""The flow-managed test environment of a project without its own ``.venv``.

``<project>/.flow/test-env`` is a virtual environment made with uv (without system site-packages)
that holds the project (editable), its dependencies, its test dependencies and pytest, and
nothing of flow's own environment: tests see what they would see in the project's own CI.

Test dependencies come from the PEP 735 ``[dependency-groups]`` and Poetry groups named by
``test-groups`` (default ``["test", "dev"]``; each one the project has), and the ``test`` extra.
Poetry constraints (``^``, ``~``, ``*``, bare versions) are translated to PEP 440 here
(:func:`poetry_requirement`); ``||`` has no PEP 440 form and is an error.

Offline, the project's editable wheel is built with the backend of flow's environment (as
``flow build`` does), and wheels come from uv's cache and ``UV_FIND_LINKS``; what those lack is
taken, as a last resort, from the distributions installed in flow's environment, copied into a
throw-away wheelhouse (only the ones the project's requirements select are installed).

The environment is rebuilt when its inputs change (``pyproject.toml``, ``setup.py``,
``setup.cfg``, ``uv.lock``, ``poetry.lock``, ``requirements*.txt``, the groups, the offline mode,
flow's interpreter): their digest is stored in ``flow-test-env.json`` inside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from flowcore.api import FlowError, uv_binary

ENV_DIR = Path(".flow") / "test-env"
STAMP = "flow-test-env.json"
DEFAULT_GROUPS = ("test", "dev")
#: Variables of flow's process that would change what the test interpreter imports.
PYTHON_PATH_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP",
                    "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "__PYVENV_LAUNCHER__",
                    "VIRTUAL_ENV", "CONDA_PREFIX")
INPUT_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "uv.lock", "poetry.lock")


def clean_env(env_dir: Path) -> dict[str, str]:
    """flow's environment variables without the Python-path ones, for the env at ``env_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in PYTHON_PATH_VARS}
    env["VIRTUAL_ENV"] = str(env_dir)
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def visible_site_dirs() -> list[str]:
    """site-packages directories on flow's own import path, in order."""
    out: list[str] = []
    for entry in sys.path:
        path = Path(entry or ".")
        if path.name in ("site-packages", "dist-packages") and path.is_dir() and entry not in out:
            out.append(entry)
    return out


# --------------------------------------------------------------------------------------------
# what the project declares
# --------------------------------------------------------------------------------------------


def _pyproject(root: Path) -> dict[str, Any]:
    import tomllib

    path = root / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FlowError(f"cannot read {path}: {exc}", "Fix the file") from exc


def _caret_tilde(op: str, version: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(f"{op}{version}")
    parts = [int(p) for p in version.split(".")]
    if op == "^":  # up to the first non-zero part: ^1.2.3 <2, ^0.2.3 <0.3, ^0.0.3 <0.0.4
        first = next((i for i, p in enumerate(parts) if p != 0), len(parts) - 1)
        upper = parts[:first] + [parts[first] + 1]
    else:  # ~1.2.3 and ~1.2: <1.3; ~1: <2
        upper = [parts[0] + 1] if len(parts) == 1 else [parts[0], parts[1] + 1]
    return f">={version},<{'.'.join(map(str, upper))}"


def poetry_constraint(text: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier (``""`` for any version)."""
    from packaging.specifiers import SpecifierSet

    if "||" in text:
        raise ValueError(text)
    out: list[str] = []
    for part in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", text.strip()):
        part = part.strip()
        if part in ("", "*"):
            continue
        if part[0] in "^" or (part[0] == "~" and not part.startswith("~=")):
            out.append(_caret_tilde(part[0], part[1:].strip()))
        elif part[0].isdigit():
            out.append(f"=={part}")
        else:
            out.append(part)
    spec = ",".join(out)
    SpecifierSet(spec)  # raises InvalidSpecifier for what PEP 440 cannot say
    return spec


def poetry_requirement(name: str, value: Any, root: Path) -> str | None:
    """One entry of a Poetry dependency table as a PEP 508 requirement (None: python itself)."""
    if name.lower() == "python":
        return None
    if isinstance(value, str):
        return name + poetry_constraint(value)
    if not isinstance(value, dict):
        raise ValueError(repr(value))  # a list of constraints per Python version
    extras = f"[{','.join(value['extras'])}]" if value.get("extras") else ""
    markers = [value["markers"]] if value.get("markers") else []
    if value.get("python"):
        from packaging.specifiers import SpecifierSet

        markers += [f'python_version {s.operator} "{s.version}"'
                    for s in SpecifierSet(poetry_constraint(str(value["python"])))]
    suffix = f" ; {' and '.join(markers)}" if markers else ""
    if value.get("path"):
        return f"{name}{extras} @ {(root / value['path']).resolve().as_uri()}{suffix}"
    if value.get("git"):
        rev = value.get("rev") or value.get("tag") or value.get("branch")
        return f"{name}{extras} @ git+{value['git']}{'@' + rev if rev else ''}{suffix}"
    if value.get("url"):
        return f"{name}{extras} @ {value['url']}{suffix}"
    return f"{name}{extras}{poetry_constraint(str(value.get('version', '*')))}{suffix}"


def _pep735(groups: dict[str, Any], name: str, seen: tuple[str, ...] = ()) -> list[str]:
    out: list[str] = []
    for item in groups.get(name, []):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and "include-group" in item and item["include-group"] not in seen:
            out += _pep735(groups, item["include-group"], (*seen, name))
    return out


def test_requirements(root: Path, groups: list[str] | None) -> tuple[list[str], list[str]]:
    """(requirements of the chosen test groups, the extras to install the project with)."""
    data = _pyproject(root)
    pep735 = data.get("dependency-groups", {})
    poetry = data.get("tool", {}).get("poetry", {})
    poetry_groups = {k: v.get("dependencies", {}) for k, v in poetry.get("group", {}).items()
                     if isinstance(v, dict)}
    if "dev" not in poetry_groups and isinstance(poetry.get("dev-dependencies"), dict):
        poetry_groups["dev"] = poetry["dev-dependencies"]
    extras = data.get("project", {}).get("optional-dependencies", {})
    reqs: list[str] = []
    for group in groups if groups is not None else DEFAULT_GROUPS:
        found = False
        if group in pep735:
            reqs += _pep735(pep735, group)
            found = True
        if group in poetry_groups:
            for name, value in poetry_groups[group].items():
                try:
                    req = poetry_requirement(name, value, root)
                except (ValueError, KeyError, TypeError) as exc:
                    raise FlowError(
                        f"cannot translate the Poetry dependency {name} = {value!r} of group "
                        f"{group} to a PEP 508 requirement ({exc})",
                        "Write it as a plain constraint (^, ~, >=, ==), or move the group to "
                        "[dependency-groups]") from None
                if req:
                    reqs.append(req)
            found = True
        if not found and groups is not None and group not in extras:
            raise FlowError(f"[tool.flow.python] test-groups names {group!r}, which "
                            f"{root / 'pyproject.toml'} does not define",
                            "Add it to [dependency-groups], or fix test-groups")
    return reqs, ["test"] if "test" in extras else []


def _input_files(root: Path) -> list[Path]:
    return [root / n for n in (*INPUT_FILES, *sorted(p.name for p in root.glob("requirements*.txt")))]


def inputs_signature(root: Path) -> list[list[Any]]:
    """Name, size and mtime of each input file: when they match the stamp's, the digest is not
    computed (the quick check of a second run)."""
    out: list[list[Any]] = []
    for path in _input_files(root):
        try:
            st = path.stat()
            out.append([path.name, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([path.name, None, None])
    return out


def inputs_digest(root: Path) -> str:
    """A digest of the files that declare the project's (test) dependencies."""
    import hashlib

    digest = hashlib.sha256()
    for path in _input_files(root):
        digest.update(path.name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# offline: the editable wheel and the last-resort wheelhouse
# --------------------------------------------------------------------------------------------

_BUILD_EDITABLE = """\
import importlib, os, sys, tomllib
try:
    bs = tomllib.load(open("pyproject.toml", "rb")).get("build-system", {})
except FileNotFoundError:
    bs = {}
name = bs.get("build-backend", "setuptools.build_meta:__legacy__")
sys.path[:0] = [os.path.abspath(p) for p in bs.get("backend-path", [])]
mod, _, attr = name.partition(":")
try:
    backend = importlib.import_module(mod)
except ImportError as exc:
    sys.exit(f"the build backend {name} is not in flow's environment ({exc})")
for part in filter(None, attr.split(".")):
    backend = getattr(backend, part)
print(backend.build_editable(sys.argv[1]))
"""


def _editable_wheel(root: Path, python: str, dest: Path) -> Path:
    proc = subprocess.run([python, "-c", _BUILD_EDITABLE, str(dest)], cwd=root,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise FlowError(f"cannot build {root.name} (editable) offline: {' '.join(lines[-3:])[:400]}",
                        "Offline, the build backend comes from flow's environment; "
                        "build online once, or give the project its own .venv")
    return dest / proc.stdout.strip().splitlines()[-1]


def _record_line(name: str, data: bytes) -> str:
    import base64
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def copy_installed_wheels(dest: Path, dirs: list[str], names: set[str] | None = None) -> None:
    """The distributions installed in ``dirs`` (those of ``names``, normalised, if given), each
    written back as a wheel into ``dest``.

    Files outside site-packages (scripts: the installer writes them again from the entry points)
    and byte-code are left out; the WHEEL file keeps the distribution's own tags.
    """
    import zipfile
    from importlib.metadata import distributions

    done: set[str] = set()
    for dist in distributions(path=dirs):
        name, version = dist.metadata["Name"], dist.version
        # the dist-info folder, found through the public API: the folder of its METADATA file
        meta = next((f for f in dist.files or () if f.name == "METADATA"
                     and f.parent.suffix == ".dist-info"), None)
        if not name or meta is None:
            continue
        info = Path(str(dist.locate_file(meta.parent)))
        norm = re.sub(r"[-_.]+", "_", name).lower()
        if norm in done or (names is not None and norm not in names):
            continue
        if not (info / "WHEEL").is_file() or dist.files is None:
            continue
        done.add(norm)
        tags = [ln.split(":", 1)[1].strip() for ln in (info / "WHEEL").read_text().splitlines()
                if ln.startswith("Tag:")] or ["py3-none-any"]
        base = info.parent
        record: list[str] = []
        out = dest / f"{norm}-{version}-{tags[0]}.whl"
        # stored, not deflated: these wheels live only until the installer has read them, and
        # compressing flow's whole environment cost ~9 s of CPU per fresh test environment
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for file in dist.files:
                arc = file.as_posix()
                path = base / file
                if (arc.startswith("..") or "__pycache__" in arc or arc.endswith((".pyc", "RECORD"))
                        or not path.is_file() or arc.endswith("/direct_url.json")):
                    continue
                data = path.read_bytes()
                zf.writestr(arc, data)
                record.append(_record_line(arc, data))
            record.append(f"{info.name}/RECORD,,")
            zf.writestr(f"{info.name}/RECORD", "\n".join(record) + "\n")


# --------------------------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], what: str, fix: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k not in PYTHON_PATH_VARS})
    if proc.returncode != 0 and what:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        detail = " ".join(lines[-4:])[:400] or f"exit code {proc.returncode}"
        raise FlowError(f"{what}: {detail}", fix)
    return proc


def ensure_test_env(root: Path, offline: bool, groups: list[str] | None = None,
                    build_python: str | None = None) -> str:
    """Create or refresh ``<root>/.flow/test-env``; returns its interpreter."""
    env = root / ENV_DIR
    python = env / "bin" / "python"
    stamp: dict[str, Any] = {"groups": groups, "offline": offline, "python": sys.executable}
    signature = inputs_signature(root)
    try:
        old = json.loads((env / STAMP).read_text()) if python.exists() else None
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and {k: old.get(k) for k in stamp} == stamp:
        if old.get("signature") == signature:
            return str(python)
        if old.get("inputs") == inputs_digest(root):  # touched, not changed
            (env / STAMP).write_text(json.dumps({**old, "signature": signature}), encoding="utf-8")
            return str(python)
    import shutil
    import tempfile

    reqs, extras = test_requirements(root, groups)
    uv = uv_binary()
    if uv is None:
        raise FlowError("flow test needs uv to make the test environment", "Install uv (pip install uv)")
    click.echo(f"preparing the test environment {ENV_DIR}", err=True)
    shutil.rmtree(env, ignore_errors=True)
    fix = ("Check the project's test dependencies (offline, they must be in uv's cache or in "
           "UV_FIND_LINKS), or give the project its own .venv")
    try:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(env)],
             "cannot create the test environment", fix)
        with tempfile.TemporaryDirectory(prefix="flow-test-env-") as tmp:
            if offline:
                wheel = _editable_wheel(root, build_python or sys.executable, Path(tmp))
                project = [f"{_dist_name(wheel)}[{','.join(extras)}] @ {wheel.as_uri()}"
                           if extras else str(wheel)]
            else:
                project = ["-e", f"{root}[{','.join(extras)}]" if extras else str(root)]
            need_pytest = not any(re.match(r"pytest\s*($|[\[<>=!~;@ ])", r, re.I) for r in reqs)
            cmd = [uv, "pip", "install", "--quiet", "--python", str(python), *project, *reqs,
                   *(["pytest"] if need_pytest else [])]
            what = f"cannot install {root.name} and its test dependencies into the test environment"
            if not offline:
                _run(cmd, what, fix)
            elif _run(cmd, "", fix).returncode != 0:  # last resort: flow's installed distributions
                house = Path(tmp) / "flow-wheels"
                house.mkdir()
                copy_installed_wheels(house, visible_site_dirs())
                _run([*cmd, "--find-links", str(house)], what, fix)
        stamp.update(inputs=inputs_digest(root), signature=signature)
        (env / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
    except BaseException:
        shutil.rmtree(env, ignore_errors=True)
        raise
    return str(python)


def _dist_name(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0]
