"""The flow plugin API: every hook a build kit or plugin can implement.

This module is the one reference for plugin authors (``docs/hooks.md`` is generated from it and a
test keeps the two in step). Hooks are grouped by the phase in which flow calls them.

How flow calls hooks
--------------------

* Implement a hook with a module-level function of the same name, marked ``@hookimpl``
  (``from flowcore.api import hookimpl``). An implementation may accept any subset of the hook's
  arguments, in any order; flow passes them by name.
* Every hook but ``flow_addhooks`` receives ``context``: a ``flowcore.api.KitContext`` for the
  kit itself and its kit-bound (or project) plugins, else a ``flowcore.api.CoreContext``. Each
  implementation gets the context of the plugin it belongs to.
* flow calls hooks through pluggy, in load order (the kit, then kit-bound or project plugins,
  then general plugins); ``tryfirst``/``trylast`` move an implementation to the front or back,
  and hook wrappers (``@hookimpl(wrapper=True)``, a generator that yields once and receives the
  other implementations' result) work as pluggy documents them. Each hook states what
  combining the results means.
* Isolation: an implementation that raises is reported in one line naming its plugin, and its
  result is left out (a wrapper that raises is left out and the call goes on without it); the
  other plugins and every built-in command keep working (``--strict-plugins`` turns the report
  into an error). One exception: a ``FlowError`` raised in a hook a kit declared reaches the kit
  that called it (a plugin's refusal, e.g. of an upload); the kit's hook reference says so.
* Kits declare hooks of their own (``flow_addhooks``); each kit's hook reference lists them.
  A kit or plugin calls any hook as ``context.hook.<name>(...)``, which gets the non-``None``
  results in the order above.
* ``flow --help`` and ``flow <command> --help`` call no hook at all: command names and help come
  from a cached manifest, rebuilt (by calling ``flow_register_commands`` and ``flow_kit_info``)
  when the config or an installed distribution changes. Hooks must therefore be cheap and free of
  side effects apart from what they document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcore.plugins.markers import hookspec

if TYPE_CHECKING:
    from flowcore.plugins.protocols import CoreContext, HookSpecs, KitInfo, Registry, Template

# ---------------------------------------------------------------------------------------------
# Registration: called when flow (re)builds its command manifest, and when a command is run
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_addhooks(hooks: HookSpecs) -> None:
    """Declare the kit's own hooks (implemented by kits only), as pytest's ``pytest_addhooks``.

    When: every time the kit is loaded, before its kit-bound and the project's plugins are
    registered, so that their implementations are checked against the kit's specifications
    (``flow plugin add`` runs the same check, with the specs of the kits a plugin declares in
    ``FLOW_BUILD_KITS`` that are installed). Kit hooks exist only while their kit is loaded.

    :param hooks: call ``hooks.add(module)`` with the module (or class) holding the kit's hook
        specifications, functions marked ``@hookspec`` (``from flowcore.api import hookspec``),
        named ``flow_<kit short name>_<what>`` and taking ``context`` first.

    Return: ignored. The kit calls its hooks with ``context.hook.<name>(...)``; a plugin
    implementing a ``flow_*`` hook that neither flowcore nor its kit declares is warned about,
    naming both, and its other hooks still work.
    """


@hookspec
def flow_register_commands(registry: Registry, context: CoreContext) -> None:
    """Add this plugin's click commands to ``flow``'s top level.

    When: when flow builds its command manifest (after an install, removal, upgrade or config
    change), and again, for the owning plugin only, when one of its commands is run.

    :param registry: call ``registry.add(command)`` with a ``click.Command`` (or ``click.Group``)
        for each command; ``registry.add(command, name="other")`` registers it under another
        name. The registry records this plugin as the command's source.
    :param context: this plugin's context (see the module docs).

    Return: ignored. A name that is already taken is resolved by precedence (built-in > kit >
    kit-bound or project plugin > general plugin; among equals the first loaded wins) and the
    loser is skipped with a warning. ``buildkit``, ``plugin`` and ``config`` can never be taken.
    Registration must be deterministic: register the same names every time.
    """


@hookspec
def flow_kit_info(context: CoreContext) -> KitInfo | None:
    """Describe the build kit (implemented by kits only; plugins leave it out).

    When: when flow builds its command manifest, before ``flow_register_commands``.

    :param context: the kit's context.

    Return: a dict (``flowcore.api.KitInfo``) with ``short_name`` (the name of the kit's config section, e.g.
    ``"python"`` for ``[tool.flow.python]``; defaults to the distribution name without
    ``flow-kit-``), ``description`` (one line for listings) and optionally ``config_schema``
    (a mapping of key to a one-line description of that key of the kit's section: every key
    the kit reads there; flow warns about any other, naming the nearest of these) and
    ``project_files`` (the file names the kit recognises a project folder by, e.g.
    ``["pyproject.toml", "setup.py"]``: a folder holding any of them is one this kit takes).
    Return ``None`` to use the defaults. ``project_files`` is read from every installed kit:
    ``flow init`` refuses a folder its kit does not take and, without ``-k``, picks the one kit
    that takes it; flow suggests ``flow -k KIT COMMAND`` in a project only when KIT takes it.
    A kit that names no ``project_files`` takes any folder. The other keys are used from the
    active kit only.
    """


# ---------------------------------------------------------------------------------------------
# Creating projects
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_create_templates(kit: str, context: CoreContext) -> list[Template] | None:
    """Contribute project templates to ``flow create``.

    When: when ``flow create`` lists the templates of the kit the user chose (the kit runs in
    global mode, so its kit-bound plugins are loaded too).

    :param kit: distribution name of the kit ``flow create`` is creating a project for. A
        kit-bound plugin normally returns templates only when ``kit`` is its kit.
    :param context: this plugin's context.

    Return: a list of template dicts (``flowcore.api.Template``), each with ``name`` (unique within the kit),
    ``description`` (one line), ``source`` (a local directory path or a git URL) and ``kit``
    (the kit it belongs to). ``None`` or ``[]`` contributes nothing. Lists of all plugins are
    concatenated in load order; a later template with a name already taken is dropped.
    """


# ---------------------------------------------------------------------------------------------
# Around every command (local only: no network, no prompts; for reporting and timing)
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_before_command(context: CoreContext, command_name: str, args: list[str]) -> None:
    """Called just before any top-level command runs (built-in, kit or plugin command).

    When: after the command line has been parsed, after ``--help`` has been handled (help never
    triggers it) and before the command's own code runs.

    :param context: this plugin's context.
    :param command_name: the top-level command's name, e.g. ``"build"``.
    :param args: the arguments given after the command name, as on the command line.

    Return: ignored. Raising does not stop the command: the plugin is reported and skipped.
    Keep it fast and local; it runs on every command.
    """


@hookspec
def flow_after_command(
    context: CoreContext, command_name: str, exit_code: int, duration: float
) -> None:
    """Called after any top-level command finished, whether it succeeded or failed.

    When: after the command's code returned or raised, before flow prints an error and exits.
    Only called when ``flow_before_command`` was called for the same command.

    :param context: this plugin's context.
    :param command_name: the top-level command's name.
    :param exit_code: the exit code flow is about to exit with (0 on success, 1 failed work,
        2 usage or config error, 130 interrupted).
    :param duration: wall-clock seconds the command took, as a float.

    Return: ignored. Raising is reported and skipped; it never changes the exit code.
    """

