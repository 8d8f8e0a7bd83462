"""``flow create [NAME]``: a new project from a kit's template (or any copier/cookiecutter one).

The order is fixed (architecture notes, section 4): the build kit first (``-k``, else a list of
installed kits), then that kit runs in global mode wherever the user stands, so the kit and its
kit-bound plugins offer their templates; then the template (``-t``, else a list); then the
template's questions. See docs/create.md.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowcore._base.errors import UsageError
from flowcore.cli.completion_values import kit_names, template_names

if TYPE_CHECKING:
    from flowcore.cli.app import Flow
    from flowcore.create.templates import ResolvedTemplate, Template

#: PEP 508 distribution names.
_DIST_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
#: The question flow answers with NAME when a template asks it.
NAME_KEYS = ("project_name",)


def check_name(name: str) -> str:
    """``name`` if it is a valid distribution name whose module name is an identifier."""
    if not _DIST_NAME.match(name):
        raise UsageError(
            f"invalid project name '{name}': not a valid distribution name",
            "Use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
        )
    module = re.sub(r"[-.]+", "_", name).lower()
    if not module.isidentifier() or keyword.iskeyword(module):
        raise UsageError(
            f"invalid project name '{name}': its module name '{module}' is not a Python "
            "identifier", "Start it with a letter and avoid Python keywords",
        )
    return name


def parse_data(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--data {item!r} is not KEY=VALUE", "Write it as --data key=value")
        out[key.strip()] = value
    return out


def _ask_text(message: str, default: str = "") -> str:
    """Ask one free-text question; Ctrl-C is an interruption (exit 130), not an answer."""
    import questionary

    answer = questionary.text(message, default=default).unsafe_ask()
    if answer is None:
        raise KeyboardInterrupt
    return str(answer)


def choose_kit(flow: Flow, given: str | None, among: list[str] | None = None) -> str:
    """``given`` (checked to be installed), else the one installed kit, else a choice (from
    ``among``, default every installed kit)."""
    from flowcore._base.prompts import choose

    installed = flow.config.global_config.installed_kits
    if not installed:
        from flowcore.cli.hints import ANY_SOURCE

        raise UsageError("no build kit is installed",
                         f"Install one first: flow buildkit add {ANY_SOURCE}")
    if given:
        if given not in installed:
            from flowcore.cli.hints import install_kit_fix

            raise UsageError(f"unknown build kit '{given}'. Installed kits: "
                             f"{', '.join(installed)}", install_kit_fix(given))
        return given
    message = "Build kit for this project:" if among else "Build kit for the new project:"
    among = among or installed
    if len(among) == 1:
        return among[0]
    return str(choose(message, among, what="build kit",
                      fix=f"Pass one with -k NAME ({', '.join(among)})"))


def choose_template(templates: list[Template], kit: str, given: str | None) -> str:
    from flowcore._base.prompts import choose

    if given:
        return given
    names = [t.name for t in templates]
    if not names:
        raise UsageError(f"build kit {kit} offers no templates",
                         "Pass a template directory or git URL with -t")
    choices = [(t.name, f"{t.name:<20} {t.description}  [{t.origin}]") for t in templates]
    return str(choose("Template:", choices, what="template",
                      fix=f"Pass one with -t NAME ({', '.join(names)})"))


def missing_answers(template: ResolvedTemplate, data: dict[str, str], defaults: bool) -> list[str]:
    """Questions nobody answers when there is no terminal to ask them on."""
    from flowcore.create.templates import questions

    return [q.key for q in questions(template)
            if q.key not in data and not (defaults and q.has_default) and not q.conditional]


@click.command(name="create")
@click.argument("name", required=False)
@click.option("-k", "--build-kit", "kit", metavar="NAME", shell_complete=kit_names,
              help="Build kit of the new project (default: choose from the installed kits).")
@click.option("-t", "--template", metavar="NAME|PATH|URL", shell_complete=template_names,
              help="A template of the kit, a template directory, or a git URL.")
@click.option("--defaults", is_flag=True, help="Answer every question with its default.")
@click.option("-d", "--data", "data", multiple=True, metavar="KEY=VALUE",
              help="Answer one question (repeatable).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty directory (each replaced file is named).")
@click.option("-o", "--directory", type=click.Path(path_type=Path), metavar="DIR",
              help="Where to create the project (default: ./NAME).")
@click.option("--vcs-ref", metavar="REF", help="Git tag, branch or commit of a git template.")
@click.option("--trust", is_flag=True,
              help="Allow the template to run its own code (copier tasks and Jinja extensions; "
                   "cookiecutter hooks and _extensions, rendered by cookiecutter unsandboxed).")
@click.option("--list", "list_only", is_flag=True, help="List the kit's templates and exit.")
@click.option("--json", "as_json", is_flag=True, expose_value=False,
              callback=lambda ctx, _, value: ctx.meta.__setitem__("create.json", value),
              help="With --list: print the templates as JSON.")
@click.option("--git/--no-git", "git", default=None,
              help="Make the project a git repository with a first commit (default: create.git "
                   "in the config, else yes unless it is inside a git work tree).")
@click.pass_obj
def create(flow: Flow, name: str | None, kit: str | None, template: str | None, defaults: bool,
           data: tuple[str, ...], force: bool, directory: Path | None, vcs_ref: str | None,
           trust: bool, list_only: bool, git: bool | None) -> None:
    """Create a new project from a template of a build kit."""
    from flowcore._base.prompts import interactive
    from flowcore.cli.app import Flow
    from flowcore.config import RunOptions
    from flowcore.create.templates import collect_templates, resolve

    answers = parse_data(data)
    if name is not None:
        check_name(name)
    target = _target(flow, name, directory) if name or directory else None
    if target is not None and not force:
        _refuse_non_empty(target)

    kit = choose_kit(flow, kit or flow.options.build_kit)
    kit_flow = Flow(RunOptions(debug=flow.options.debug, global_scope=True, build_kit=kit,
                               check_latest=False, strict_plugins=flow.options.strict_plugins),
                    cwd=flow.cwd)
    templates = collect_templates(kit_flow, kit)
    as_json = click.get_current_context().meta.get("create.json", False)
    if list_only and as_json:
        import json

        click.echo(json.dumps({"kit": kit, "templates": [
            {"name": t.name, "description": t.description, "origin": t.origin}
            for t in templates]}, indent=2))
        return
    if list_only:
        from flowcore._base.printable import printable_line as cell  # plugins' text: no controls

        for t in templates:
            click.echo(f"{cell(t.name):<20} {cell(t.description)}  [{cell(t.origin)}]")
        return
    if as_json:
        raise UsageError("--json is for the list of templates", "Use it with --list")
    spec = choose_template(templates, kit, template)
    with resolve(spec, templates, kit, vcs_ref) as resolved:
        if name is None:
            if not interactive():
                raise UsageError("no NAME given and no terminal to ask for it",
                                 "Pass it: flow create NAME")
            name = check_name(_ask_text("Project name:").strip())
            target = _target(flow, name, directory)
            if not force:
                _refuse_non_empty(target)
        assert target is not None
        from flowcore.create.templates import questions

        keys = {q.key for q in questions(resolved)}
        if set(answers) - keys:
            from flowcore.cli.hints import warn_unasked_answers

            warn_unasked_answers(answers, keys, resolved.label)
        for key in NAME_KEYS:
            if key in keys:
                answers.setdefault(key, name)
        asking = interactive()
        if not asking:
            missing = missing_answers(resolved, answers, defaults)
            if missing:
                flags = " ".join(f"--data {k}=VALUE" for k in missing)
                raise UsageError(
                    f"the template asks for {', '.join(missing)} and there is no terminal to "
                    "ask on", f"Answer with {flags}" + ("" if defaults else ", or pass --defaults"),
                )
        _create(flow, kit, resolved, target, answers, defaults=defaults or not asking,
                asking=asking, force=force, trust=trust, vcs_ref=vcs_ref or resolved.vcs_ref,
                git=git)


def _target(flow: Flow, name: str | None, directory: Path | None) -> Path:
    base = directory if directory is not None else Path(str(name))
    return (flow.cwd / base.expanduser()).absolute()


def _refuse_non_empty(target: Path) -> None:
    if target.exists() and not (target.is_dir() and next(target.iterdir(), None) is None):
        raise UsageError(f"target directory {target} is not empty",
                         "Choose another name or --directory, or pass --force to write into it")


def _create(flow: Flow, kit: str, template: ResolvedTemplate, target: Path,
            answers: dict[str, Any], *, defaults: bool, asking: bool, force: bool, trust: bool,
            vcs_ref: str | None, git: bool | None = None) -> None:
    from flowcore.create import newrepo as _newrepo
    from flowcore.create import render as _render

    repo = _newrepo.plan(git, flow.config.global_config.data, target)

    click.echo(f"Creating {target}")
    click.echo(f"  build kit: {kit}")
    click.echo(f"  template:  {template.label} [{template.kind}]")
    with _render.staging_dir(target) as stage:
        project = _render.render(template, stage, answers, defaults=defaults,
                                 interactive=asking, trust=trust, vcs_ref=vcs_ref,
                                 debug=flow.options.debug)
        recorded = _render.record_kit(project, kit)
        actions = _render.plan(project, target)
        if not force and target.exists() and not _render.is_empty_dir(target):
            _refuse_non_empty(target)  # something appeared there while rendering
        for action, rel in actions:
            click.echo(f"  {action:<9} {rel}")
        if repo.init:
            _newrepo.make(project, repo, f"Created by flow create from {template.label} "
                                         f"(build kit {kit}).")
        _render.place(project, target, stage)
    where = target.relative_to(flow.cwd) if target.is_relative_to(flow.cwd) else target
    if repo.init:
        click.echo("Initialized a git repository" + (
            f" with a first commit ({_newrepo.FIRST_MESSAGE})." if repo.commit else
            " (no commit yet)."))
    click.echo(f"Created {where}: {len(actions)} files; build kit {kit} recorded in {recorded}.")
    click.echo(f"Next: cd {where} && flow --help")
