"""Render a template into a staging directory, then move the result into place.

Everything is rendered into a hidden staging directory next to the target (same file system, so
the final move is a rename). Only a fully rendered project is moved; on any failure or
interruption the staging directory is removed and the target is left exactly as it was. With
``--force`` into a non-empty directory, each file that is replaced is named, and the replaced
files are kept aside until every file is in place, so a failure half-way puts them back.

copier and cookiecutter are imported inside the functions that use them (``import copier``
costs ~500 ms; cookiecutter is an optional extra).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowcore._templates import ResolvedTemplate
from flowcore.errors import FlowError, UsageError

COOKIECUTTER_MISSING_FIX = (
    "Install flow's cookiecutter extra into flow's own environment: "
    "pip install 'flowcore[cookiecutter]' (or: uv tool install 'flowcore[cookiecutter]')"
)


#: Modules of well-known Jinja extensions, and the package that provides each.
EXTENSION_PACKAGES = {
    "copier_templates_extensions": "copier-templates-extensions",
    "jinja2_time": "jinja2-time",
    "jinja2_strcase": "jinja2-strcase",
    "jinja2_ansible_filters": "jinja2-ansible-filters",
    "jinja2_jsonschema": "jinja2-jsonschema",
}


def install_command(package: str) -> str:
    """The command that installs ``package`` where copier runs: flow's own environment."""
    import importlib.util
    import sys

    if importlib.util.find_spec("pip") is not None:
        return f"{sys.executable} -m pip install {package}"
    from flowcore.environment import uv_binary

    if uv_binary() is not None:
        return f"uv pip install --python {sys.executable} {package}"
    return f"{sys.executable} -m pip install {package}"


def extension_missing(label: str, module: str) -> FlowError:
    """The error for a template whose Jinja extension module cannot be imported."""
    import sys

    top = module.split(".")[0]
    package = EXTENSION_PACKAGES.get(top)
    what = f"package {package}" if package else f"package probably {top.replace('_', '-')}"
    package = package or top.replace("_", "-")
    return FlowError(
        f"template {label} needs the Jinja extension module {module} ({what}), which is not "
        f"installed in the environment flow and copier run in ({sys.prefix})",
        f"Install it there: {install_command(package)} (for flow installed with uv tool: "
        f"uv tool install flowcore --with {package})",
    )


def check_extensions(template: ResolvedTemplate) -> None:
    """Name a missing Jinja extension before rendering (``_jinja_extensions`` in copier.yml).

    Only top-level module names are looked up (finding a top-level module runs none of its
    code); ``file.py:Class`` entries are the template's own files (loaded by
    copier-templates-extensions) and are not checked here.
    """
    import importlib.util

    from flowcore._templates import COPIER_FILES, load_copier_yaml

    path = next((template.local / n for n in COPIER_FILES if (template.local / n).is_file()),
                None)
    if path is None:
        return
    try:
        docs = load_copier_yaml(path)
    except Exception:  # noqa: BLE001 - reading the questions reports a broken file already
        return
    for doc in docs:
        entries = doc.get("_jinja_extensions") if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, str) or ":" in entry or not entry.strip():
                continue
            top = entry.strip().split(".")[0]
            if top.isidentifier() and importlib.util.find_spec(top) is None:
                raise extension_missing(template.label, top)


def missing_module(exc: BaseException) -> str | None:
    """The module copier could not import for a Jinja extension, if that is what ``exc`` is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def _failed(template: ResolvedTemplate, exc: BaseException) -> FlowError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if len(detail) > 300:
        detail = detail[:300] + "..."
    return FlowError(f"template {template.label} failed to render: {detail}",
                     "Fix the template, or check the answers given with --data")


# --------------------------------------------------------------------------------------------
# Staging
# --------------------------------------------------------------------------------------------


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary directory next to ``target``, removed afterwards whatever happens."""
    created: Path | None = None
    parent = target.parent
    if not parent.exists():
        created = next(p for p in [parent, *parent.parents] if p.parent.exists())
        parent.mkdir(parents=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.flow-create-", dir=parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created is not None and not target.exists():
            shutil.rmtree(created, ignore_errors=True)  # the parents made for it, if unused


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def files_under(root: Path) -> list[str]:
    """Relative paths of the files (and symlinks) under ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            out.append((base / name).relative_to(root).as_posix())
    return sorted(out)


def plan(project: Path, target: Path) -> list[tuple[str, str]]:
    """``(action, relative path)`` for each file: ``create`` or ``overwrite``."""
    out = []
    for rel in files_under(project):
        dest = target / rel
        if dest.is_dir() and not dest.is_symlink():
            raise UsageError(f"cannot write {dest}: a directory of that name exists",
                             "Remove it, or create the project somewhere else")
        out.append(("overwrite" if dest.exists() or dest.is_symlink() else "create", rel))
    return out


def place(project: Path, target: Path, stage: Path) -> None:
    """Move the rendered ``project`` to ``target``; all or nothing."""
    if not target.exists():
        os.rename(project, target)
        return
    if is_empty_dir(target):
        target.rmdir()
        try:
            os.rename(project, target)
        except BaseException:
            target.mkdir(exist_ok=True)
            raise
        return
    backup = stage / "replaced"
    moved: list[Path] = []
    saved: list[tuple[Path, Path]] = []
    made_dirs: list[Path] = []
    try:
        for rel in files_under(project):
            dest = target / rel
            missing = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
            for directory in reversed(missing):
                directory.mkdir()
                made_dirs.append(directory)
            if dest.exists() or dest.is_symlink():
                keep = backup / rel
                keep.parent.mkdir(parents=True, exist_ok=True)
                os.rename(dest, keep)
                saved.append((keep, dest))
            os.rename(project / rel, dest)
            moved.append(dest)
    except BaseException:
        for dest in reversed(moved):
            dest.unlink(missing_ok=True)
        for keep, dest in reversed(saved):
            os.rename(keep, dest)
        for directory in reversed(made_dirs):
            shutil.rmtree(directory, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def render(template: ResolvedTemplate, stage: Path, data: dict[str, Any], *, defaults: bool,
           interactive: bool, trust: bool, vcs_ref: str | None, debug: bool = False) -> Path:
    """Render ``template`` under ``stage``; returns the rendered project directory."""
    if template.kind == "copier":
        return _render_copier(template, stage, data, defaults=defaults, trust=trust,
                              vcs_ref=vcs_ref, debug=debug)
    return _render_cookiecutter(template, stage, data, defaults=defaults,
                                interactive=interactive, trust=trust)


def _render_copier(template: ResolvedTemplate, stage: Path, data: dict[str, Any], *,
                   defaults: bool, trust: bool, vcs_ref: str | None, debug: bool) -> Path:
    check_extensions(template)
    import copier
    from copier.errors import CopierWarning, ExtensionNotFoundError, UnsafeTemplateError

    project = stage / "project"
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore", CopierWarning)
            copier.run_copy(template.src, project, data=data, defaults=defaults, unsafe=trust,
                            vcs_ref=vcs_ref, quiet=True, overwrite=True)
    except KeyboardInterrupt:
        raise
    except UnsafeTemplateError as exc:
        raise FlowError(f"template {template.label} runs code while rendering "
                        f"({' '.join(str(exc).split())[:200]})",
                        "Pass --trust if you trust this template") from exc
    except ExtensionNotFoundError as exc:
        module = missing_module(exc)
        if module is None:
            raise _failed(template, exc) from exc
        raise extension_missing(template.label, module) from exc
    except Exception as exc:  # noqa: BLE001 - anything the template does wrong is its failure
        raise _failed(template, exc) from exc
    if not project.is_dir():
        raise _failed(template, RuntimeError("it produced no files"))
    return project


def _render_cookiecutter(template: ResolvedTemplate, stage: Path, data: dict[str, Any], *,
                         defaults: bool, interactive: bool, trust: bool) -> Path:
    try:
        from cookiecutter.main import cookiecutter
    except ImportError as exc:
        raise FlowError(f"template {template.label} is a cookiecutter template, and "
                        "cookiecutter is not installed", COOKIECUTTER_MISSING_FIX) from exc
    answers = dict(data)
    if interactive and not defaults:
        answers = ask_cookiecutter(template, data)
    out = stage / "out"
    out.mkdir()
    config = stage / "cookiecutter-config.yaml"  # keep clones and replays out of $HOME
    config.write_text(f"cookiecutters_dir: {str(stage / 'cc-cache')!r}\n"
                      f"replay_dir: {str(stage / 'cc-replay')!r}\n", encoding="utf-8")
    try:
        cookiecutter(str(template.local), no_input=True, extra_context=answers,
                     output_dir=str(out), config_file=str(config), accept_hooks=trust)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _failed(template, exc) from exc
    children = [p for p in out.iterdir()]
    if len(children) != 1 or not children[0].is_dir():
        raise _failed(template, RuntimeError("it did not produce exactly one project directory"))
    return children[0]


def ask_cookiecutter(template: ResolvedTemplate, data: dict[str, Any]) -> dict[str, Any]:
    """Ask a cookiecutter template's questions with questionary (cookiecutter's prompt is not)."""
    import questionary
    from cookiecutter.environment import StrictEnvironment
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import render_variable

    try:
        context = generate_context(str(template.local / "cookiecutter.json"), None, data)
        env = StrictEnvironment(context=context)
        rendered: dict[str, Any] = {}
        answers: dict[str, Any] = {}
        for key, raw in context["cookiecutter"].items():
            if key.startswith("_") or key in data or isinstance(raw, dict):
                rendered[key] = raw if key not in data else data[key]
                if key in data:
                    answers[key] = data[key]
                continue
            if isinstance(raw, bool):
                answer = questionary.confirm(key, default=raw).unsafe_ask()
            elif isinstance(raw, list):
                choices = [str(render_variable(env, c, rendered)) for c in raw]
                answer = questionary.select(key, choices=choices).unsafe_ask()
            else:
                default = render_variable(env, raw, rendered)
                answer = questionary.text(key, default=str(default)).unsafe_ask()
            rendered[key] = answers[key] = answer
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _failed(template, exc) from exc
    return answers


# --------------------------------------------------------------------------------------------
# Recording the kit
# --------------------------------------------------------------------------------------------


def record_kit(project: Path, kit: str) -> str:
    """Make the new project name its kit; returns the file that records it.

    ``[tool.flow] buildkit`` in ``pyproject.toml`` when there is one, else ``flow.toml``.
    """
    import tomlkit

    pyproject = project / "pyproject.toml"
    flow_toml = project / "flow.toml"
    path = pyproject if pyproject.is_file() else flow_toml
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # noqa: BLE001 - tomlkit raises several types
        raise FlowError(f"the rendered {path.name} is not valid TOML: {exc}",
                        "Fix the template") from exc
    if path is flow_toml and text and "tool" not in doc:
        table: Any = doc  # flow.toml may hold the table at its top level
    else:
        tool = doc.setdefault("tool", tomlkit.table(is_super_table=True))
        table = tool.setdefault("flow", tomlkit.table())
    if table.get("buildkit") != kit:
        table["buildkit"] = kit
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path.name

