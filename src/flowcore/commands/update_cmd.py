"""``flow update``: bring a project made from a copier template up to a newer template version.

copier's update does the work: it re-renders the old template version with the recorded answers,
diffs that against the project, and applies the diff on top of the new version, so the user's
own changes survive. It needs what copier records (``.copier-answers.yml`` with ``_src_path`` and
``_commit``), a template that is a git repository with version tags, and a project that is a git
repository with a clean working tree. See docs/create.md.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from flowcore._base.errors import FlowError, UsageError

if TYPE_CHECKING:
    from flowcore.cli.app import Flow

ANSWERS_FILE = ".copier-answers.yml"


def read_answers(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}",
                         "Restore the file from version control") from exc
    return data if isinstance(data, dict) else {}


def _changed_files(root: Path) -> list[str]:
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                          capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if line.strip()]


@click.command(name="update")
@click.option("--vcs-ref", metavar="REF",
              help="Template version to update to (default: its newest version tag).")
@click.option("--defaults", is_flag=True, help="Answer new questions with their defaults.")
@click.option("-d", "--data", "data", multiple=True, metavar="KEY=VALUE",
              help="Answer (or change the answer to) one question (repeatable).")
@click.option("--conflict", type=click.Choice(["inline", "rej"]), default="inline",
              show_default=True, help="How to leave changes that do not apply cleanly.")
@click.option("--trust", is_flag=True,
              help="Allow the template to run its own code (copier tasks, migrations).")
@click.option("--answers-file", default=ANSWERS_FILE, show_default=True, metavar="FILE",
              help="copier's answers file, relative to the project root.")
@click.pass_obj
def update(flow: Flow, vcs_ref: str | None, defaults: bool, data: tuple[str, ...],
           conflict: Literal["inline", "rej"], trust: bool, answers_file: str) -> None:
    """Update this project to a newer version of the copier template it was made from."""
    from flowcore._base.prompts import interactive
    from flowcore.commands.create_cmd import parse_data

    answers = parse_data(data)
    project = flow.config.project
    root = Path(project.root) if project is not None else flow.cwd
    path = root / answers_file
    if not path.is_file():
        raise UsageError(
            f"{root} was not made from a copier template (no {answers_file})",
            "flow update works for projects made from copier templates; cookiecutter keeps no "
            "record to update from",
        )
    before = read_answers(path)
    if not before.get("_commit") and _inside_flow_env(before.get("_src_path")):
        raise UsageError(
            f"{answers_file} records no template version (_commit): the project was made from "
            f"a kit's or plugin's template ({before['_src_path']}) by a flow that did not yet "
            "keep template versions",
            "Create the project again with this flow (flow create) and move your changes over; "
            "projects made now can be updated",
        )
    if not before.get("_commit"):
        raise UsageError(
            f"{answers_file} records no template version (_commit): the template "
            f"{before.get('_src_path', '?')} was not a git repository with version tags",
            "Publish the template in git, tag its versions, and create the project again",
        )
    from flowcore.create import template_store as _template_store

    label = str(before.get("_src_path"))
    store = _template_store.find_repo(label)
    if store is not None:
        # a kit's or plugin's template: put the installed version into the store first
        label, tag = _sync_store(flow, store, vcs_ref)
        vcs_ref = vcs_ref or tag
    import copier
    from copier.errors import CopierError, CopierWarning, ExtensionNotFoundError, UnsafeTemplateError

    from flowcore.create import render as _render
    from flowcore.create.templates import escaping_links

    asking = interactive()
    links_before = set(escaping_links(root, skip=(".git",)))
    try:
        recorded = {k: v for k, v in before.items() if not str(k).startswith("_")}
        _render.check_update(str(before["_src_path"]), label, {**recorded, **answers},
                             trust=trust, vcs_ref=vcs_ref)
        with warnings.catch_warnings():
            if not flow.options.debug:
                warnings.simplefilter("ignore", CopierWarning)
            copier.run_update(root, data=answers, answers_file=answers_file,
                              defaults=defaults or not asking, skip_answered=True, overwrite=True,
                              unsafe=trust, vcs_ref=vcs_ref, quiet=True, conflict=conflict)
    except KeyboardInterrupt:
        raise
    except UnsafeTemplateError as exc:
        raise FlowError(f"the template runs code while updating ({' '.join(str(exc).split())})",
                        "Pass --trust if you trust this template") from exc
    except ExtensionNotFoundError as exc:
        from flowcore.create.render import extension_missing, missing_module

        module = missing_module(exc)
        if module is None:
            raise FlowError(f"cannot update {root.name}: {' '.join(str(exc).split())[:300]}",
                            "Install the template's Jinja extensions where flow runs") from exc
        raise extension_missing(label, module) from exc
    except (CopierError, ValueError, OSError, subprocess.CalledProcessError) as exc:
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise FlowError(f"cannot update {root.name}: {detail}",
                        "Commit your changes first; the project must be a clean git "
                        "repository and the template a git repository with version tags") from exc
    _undo_new_links(root, links_before, label)
    after = read_answers(path)
    old, new = before.get("_commit"), after.get("_commit")
    changed = _changed_files(root)
    if old == new and not changed:
        click.echo(f"{root.name} is already at template version {new}")
        return
    click.echo(f"updated {root.name}: template {label} {old} -> {new}")
    for line in changed:
        click.echo(f"  {line}")
    conflicts = [ln for ln in changed if ln.endswith(".rej")]
    if conflicts or conflict == "inline":
        click.echo("Review the changes (git diff); resolve any conflict markers or .rej files, "
                   "then commit.")


def _inside_flow_env(src_path: object) -> bool:
    from flowcore._base.paths import flow_home

    if not isinstance(src_path, str) or not src_path:
        return False
    try:
        Path(src_path).resolve().relative_to((flow_home() / "env").resolve())
    except (ValueError, OSError):
        return False
    return True


def _sync_store(flow: Flow, store: Path, vcs_ref: str | None) -> tuple[str, str | None]:
    """Store the installed version of the template behind ``store``: its label and tag.

    Without the template installed, an update to a version given with ``--vcs-ref`` (one the
    store kept) still works; without ``--vcs-ref`` it is an error naming what to install.
    """
    from flowcore.cli.app import Flow as _Flow
    from flowcore.config import RunOptions
    from flowcore.create import template_store as _template_store
    from flowcore.create.templates import collect_templates, from_store

    meta = _template_store.read_meta(store)
    assert meta is not None
    kit, origin, name = meta["kit"], meta["origin"], meta["name"]
    label = f"{name} ({origin})"
    if kit not in flow.config.global_config.installed_kits:
        if vcs_ref:
            return label, None
        from flowcore.cli.hints import install_kit_fix

        raise UsageError(f"the project's template {label} belongs to build kit {kit}, which is "
                         "not installed", install_kit_fix(kit))
    kit_flow = _Flow(RunOptions(debug=flow.options.debug, global_scope=True, build_kit=kit,
                                check_latest=False, strict_plugins=flow.options.strict_plugins),
                     cwd=flow.cwd)
    template = next((t for t in collect_templates(kit_flow, kit)
                     if t.name == name and t.origin == origin), None)
    resolved = from_store(template) if template is not None else None
    if resolved is None or resolved.vcs_ref is None:
        if vcs_ref:
            return label, None
        from flowcore.cli.hints import ANY_SOURCE, add_command

        what = "flow buildkit add" if origin == kit else "flow plugin add"
        again = add_command(what, origin) or f"{what} {ANY_SOURCE}"
        raise UsageError(f"the project's template {label} is no longer offered for build kit "
                         f"{kit}", f"Install {origin} again with: {again}, or pass "
                         "--vcs-ref VERSION to update to a version flow has kept")
    return label, resolved.vcs_ref


def _undo_new_links(root: Path, before: set[tuple[str, str]], label: str) -> None:
    """Undo an update that made a symlink out of the project after all (an answer given on the
    terminal can render a link differently from the check before it): copier updates only a
    clean git work tree, so restoring the tracked files and removing the untracked ones puts
    the project back as it was."""
    from flowcore.create.templates import escaping_links

    new = sorted(set(escaping_links(root, skip=(".git",))) - before)
    if not new:
        return
    subprocess.run(["git", "checkout", "--quiet", "HEAD", "--", "."], cwd=root, check=False)
    subprocess.run(["git", "clean", "-fdq"], cwd=root, check=False)
    rel, target = new[0]
    raise FlowError(f"the template {label} makes a symlink {rel} -> {target}, which points "
                    "outside the project; the update was undone", "A template may link only to "
                    "the project's own files: use another version (--vcs-ref) or template")
