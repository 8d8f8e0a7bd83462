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

from flowcore._base.errors import FlowError, UsageError
from flowcore.create.templates import ResolvedTemplate

#: The directory in the staging directory holding cookiecutter's config, clones and replays.
COOKIECUTTER_OWN = "cookiecutter"
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
    from flowcore.config.environment import uv_binary

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

    from flowcore.create.templates import COPIER_FILES, load_copier_yaml

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
    """Render ``template`` under ``stage``; returns the rendered project directory.

    Whatever the engine and ``--trust``, the template may not link to files outside itself
    (checked before rendering) and the result may not reach outside the project (checked on
    what was written: no symlink out of it, nothing written beside it in ``stage``).
    """
    from flowcore.create.templates import check_template_links

    check_template_links(template)
    before = {p.name for p in stage.iterdir()}
    if template.kind == "copier":
        project = _render_copier(template, stage, data, defaults=defaults, trust=trust,
                                 vcs_ref=vcs_ref, debug=debug)
    else:
        project = _render_cookiecutter(template, stage, data, defaults=defaults,
                                       interactive=interactive, trust=trust)
    expected = before | {project.relative_to(stage).parts[0], COOKIECUTTER_OWN}
    check_written(template.label, project, stage, expected)
    return project


def check_written(label: str, project: Path, stage: Path, expected: set[str]) -> None:
    """Refuse a rendered ``project`` that reaches outside itself: a symlink pointing out of it
    (copier's ``_preserve_symlinks`` copies links as they are), or anything written into
    ``stage`` beside it (a ``..`` file name; the staging directory is fresh, so whatever else
    is in it was written by the template)."""
    from flowcore.create.templates import escaping_links

    links = escaping_links(project)
    if links:
        rel, target = links[0]
        raise FlowError(f"template {label} makes a symlink {rel} -> {target}, which points "
                        "outside the project", "A template may link only to the project's "
                        "own files: replace the link with the file (copier: drop "
                        "_preserve_symlinks), or use another template")
    stray = sorted({p.name for p in stage.iterdir()} - expected)
    if stray:
        raise _outside(label, stray[0])


def _outside(label: str, path: str) -> FlowError:
    return FlowError(f"template {label} writes {path} outside the new project",
                     "Fix the template (a file or directory name renders to a path with '..' "
                     "or an absolute path), or check the answers given with --data")


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
    """Render a cookiecutter template into ``stage/out``.

    Without ``--trust`` flow renders it itself, in Jinja's sandbox, from cookiecutter's public
    building blocks: cookiecutter offers no way to pass its own ``generate_files`` another
    environment, and its ``StrictEnvironment`` lets ``{{ cycler.__init__.__globals__.os }}``
    reach the whole interpreter. With ``--trust`` cookiecutter itself renders it, hooks,
    ``_extensions`` and nested templates included, as it would without flow.
    """
    try:
        from cookiecutter.main import cookiecutter
    except ImportError as exc:
        raise FlowError(f"template {template.label} is a cookiecutter template, and "
                        "cookiecutter is not installed", COOKIECUTTER_MISSING_FIX) from exc
    from flowcore.create.templates import check_cookiecutter_trust

    check_cookiecutter_trust(template, trust)
    answers = dict(data)
    if interactive and not defaults:
        answers = ask_cookiecutter(template, data, trust=trust)
    out = stage / "out"
    out.mkdir()
    try:
        if not trust:
            return _sandboxed_cookiecutter(template, answers, out)
        own = stage / COOKIECUTTER_OWN  # keep clones and replays out of $HOME
        own.mkdir()
        config = own / "config.yaml"
        config.write_text(f"cookiecutters_dir: {str(own / 'cache')!r}\n"
                          f"replay_dir: {str(own / 'replay')!r}\n", encoding="utf-8")
        cookiecutter(str(template.local), no_input=True, extra_context=answers,
                     output_dir=str(out), config_file=str(config), accept_hooks=True)
    except (KeyboardInterrupt, FlowError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise _cookiecutter_failed(template, exc) from exc
    children = [p for p in out.iterdir()]
    if len(children) != 1 or not children[0].is_dir():
        raise _failed(template, RuntimeError("it did not produce exactly one project directory"))
    return children[0]


def _cookiecutter_failed(template: ResolvedTemplate, exc: BaseException) -> FlowError:
    """A render failure; the sandbox's refusal says why and what ``--trust`` would do."""
    from jinja2.exceptions import SecurityError

    if isinstance(exc, SecurityError):
        return FlowError(f"template {template.label} reaches for Python internals from Jinja "
                         f"({' '.join(str(exc).split())[:200]}), which is unsafe: flow renders "
                         "cookiecutter templates in Jinja's sandbox",
                         "Pass --trust only if you trust this template to run code as you")
    return _failed(template, exc)


def sandboxed_environment(context: dict[str, Any]) -> Any:
    """cookiecutter's ``StrictEnvironment`` (its default extensions, strict undefined values),
    built on Jinja's ``SandboxedEnvironment``: no attribute starting with ``_``, no unsafe
    callables, so templates reach neither ``os`` nor ``os.environ``. A template's
    ``_extensions`` are never loaded here (without ``--trust`` they are refused before), and
    of its ``_jinja2_env_vars`` only delimiters and whitespace settings are used."""
    from cookiecutter.environment import ExtensionLoaderMixin
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class SandboxedCookiecutterEnvironment(ExtensionLoaderMixin, SandboxedEnvironment):
        """cookiecutter's environment, sandboxed."""

    from flowcore.create.templates import SAFE_JINJA_ENV_VARS

    env_vars = context["cookiecutter"].get("_jinja2_env_vars") or {}
    safe = {k: v for k, v in env_vars.items() if k in SAFE_JINJA_ENV_VARS}
    # an empty context: the mixin loads cookiecutter's default extensions, never _extensions
    return SandboxedCookiecutterEnvironment(context={"cookiecutter": {}},
                                            undefined=StrictUndefined,
                                            keep_trailing_newline=True, **safe)


def _sandboxed_cookiecutter(template: ResolvedTemplate, answers: dict[str, Any],
                            out: Path) -> Path:
    """cookiecutter's ``cookiecutter()`` without input, sandboxed: the context (each default
    rendered as ``prompt_for_config`` does), then the files (as ``generate_files`` does)."""
    from cookiecutter.generate import generate_context

    from flowcore.create.templates import COOKIECUTTER_FILE

    context = generate_context(str(template.local / COOKIECUTTER_FILE), None, answers)
    context["_cookiecutter"] = {k: v for k, v in context["cookiecutter"].items()
                                if not k.startswith("_")}
    env = sandboxed_environment(context)
    context["cookiecutter"].update(_rendered_context(env, context["cookiecutter"]))
    context["cookiecutter"].update(_template=str(template.local), _output_dir=str(out),
                                   _repo_dir=str(template.local), _checkout=None)
    return _generate(template, context, env, out)


def _rendered_context(env: Any, raw_context: dict[str, Any]) -> dict[str, Any]:
    """The answers without input, as cookiecutter's ``prompt_for_config(no_input=True)``: plain
    values and choices first (a choice takes its first option), then dictionaries."""
    from cookiecutter.prompt import render_variable

    done: dict[str, Any] = {}
    raw_context.pop("__prompts__", None)
    for key, raw in raw_context.items():
        if key.startswith("_") and not key.startswith("__"):
            done[key] = raw
        elif isinstance(raw, list):
            if not raw:
                raise ValueError(f"the list of choices of {key} is empty")
            done[key] = render_variable(env, raw[0], done)
        elif not isinstance(raw, dict):
            done[key] = render_variable(env, raw, done)
    for key, raw in raw_context.items():
        if isinstance(raw, dict) and not (key.startswith("_") and not key.startswith("__")):
            done[key] = render_variable(env, raw, done)
    return done


def _generate(template: ResolvedTemplate, context: dict[str, Any], env: Any, out: Path) -> Path:
    """cookiecutter's ``generate_files`` (no hooks), writing nothing outside the project: every
    rendered path is checked before anything is written to it."""
    from cookiecutter.find import find_template
    from jinja2 import FileSystemLoader

    source = Path(find_template(template.local, env))
    env.loader = FileSystemLoader([str(source), str(template.local / "templates")])
    project = _inside(template.label, out, _render_str(env, source.name, context))
    if project == out:
        raise _failed(template, RuntimeError("the project directory's name renders empty"))
    project.mkdir()
    for root, dirs, files in os.walk(source):
        rel_root = os.path.relpath(root, source)
        copied = [d for d in dirs if _copy_only(os.path.join(rel_root, d), context)]
        dirs[:] = sorted(d for d in dirs if d not in copied)
        for name in sorted(copied):
            rel = os.path.normpath(os.path.join(rel_root, name))
            dest = _inside(template.label, project, _render_str(env, rel, context))
            if dest == project:
                continue  # its name renders empty
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(Path(root) / name, dest)
        for name in dirs:
            rel = os.path.normpath(os.path.join(rel_root, name))
            _inside(template.label, project, _render_str(env, rel, context)).mkdir(
                parents=True, exist_ok=True)
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_root, name))
            _generate_file(template.label, Path(root) / name, rel, project, context, env)
    return project


def _copy_only(rel: str, context: dict[str, Any]) -> bool:
    from cookiecutter.generate import is_copy_only_path

    return bool(is_copy_only_path(os.path.normpath(rel), context))


def _render_str(env: Any, text: str, context: dict[str, Any]) -> str:
    return str(env.from_string(text).render(**context))


def _inside(label: str, root: Path, rendered: str) -> Path:
    """``root / rendered`` if it stays inside ``root``: checked on the text alone, before
    anything is written to it (the sandboxed renderer copies files, never links)."""
    path = Path(os.path.normpath(root / rendered))
    if os.path.isabs(rendered) or not path.is_relative_to(root):
        raise _outside(label, repr(rendered))
    return path


def _generate_file(label: str, src: Path, rel: str, project: Path, context: dict[str, Any],
                   env: Any) -> None:
    """One file, as cookiecutter's ``generate_file``: its rendered name (an empty name skips
    it), its content rendered unless binary or ``_copy_without_render``, its mode kept."""
    from binaryornot.check import is_binary

    dest = _inside(label, project, _render_str(env, rel, context))
    if dest.is_dir():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _copy_only(rel, context) or is_binary(str(src)):
        shutil.copyfile(src, dest)
        shutil.copymode(src, dest)
        return
    text = env.get_template(rel.replace(os.sep, "/")).render(**context)
    newline = context["cookiecutter"].get("_new_lines") or None
    if newline is None:
        with open(src, encoding="utf-8") as fh:
            fh.readline()
            newline = fh.newlines[0] if isinstance(fh.newlines, tuple) else fh.newlines
    with open(dest, "w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
    shutil.copymode(src, dest)


def ask_cookiecutter(template: ResolvedTemplate, data: dict[str, Any], *,
                     trust: bool = False) -> dict[str, Any]:
    """Ask a cookiecutter template's questions with questionary (cookiecutter's prompt is not).

    The defaults are rendered in the sandbox unless ``trust``, as the files are.
    """
    import questionary
    from cookiecutter.environment import StrictEnvironment
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import render_variable

    try:
        context = generate_context(str(template.local / "cookiecutter.json"), None, data)
        env = StrictEnvironment(context=context) if trust else sandboxed_environment(context)
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
        raise _cookiecutter_failed(template, exc) from exc
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



# --------------------------------------------------------------------------------------------
# Updating: the new version is checked before it touches the project
# --------------------------------------------------------------------------------------------


def check_update(src: str, label: str, answers: dict[str, Any], *, trust: bool,
                 vcs_ref: str | None) -> None:
    """Render the version ``flow update`` is about to apply into a temporary directory first,
    with the project's answers, and refuse it if it reaches outside the project (copier's
    ``_preserve_symlinks`` with a link to ``~/.ssh/id_rsa``, say): copier's update writes the
    new version straight into the project. Tasks are skipped here (they run in the update);
    copier's own errors propagate for the caller to word.
    """
    import copier

    tmp = Path(tempfile.mkdtemp(prefix="flow-update-check-"))
    try:
        project = tmp / "project"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            copier.run_copy(src, project, data=answers, defaults=True, unsafe=trust,
                            vcs_ref=vcs_ref, quiet=True, overwrite=True, skip_tasks=True)
        check_written(label, project, tmp, {"project"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
