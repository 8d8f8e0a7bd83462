"""The ``flow`` entry point: global options, lazy command dispatch, and the one error handler.

Every expected failure is a ``FlowError`` (or a click usage error) and ends here as one line,
``flow: error: <cause>. <fix>``, with exit code 2 for usage and config errors and 1 for failed
work. Anything unexpected is written with its traceback to a debug log; ``--debug`` prints it.
This module imports click and nothing heavy: it is on the path of every ``flow`` start.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from flowcore._base.errors import FlowError
from flowcore._base.version import __version__
from flowcore.cli.app import Flow, flow_of, truthy_env
from flowcore.cli.late_options import LATE_OPTIONS, hoist
from flowcore.registry.command_registry import CommandRegistry

if TYPE_CHECKING:
    from pathlib import Path

HELP_MAX_WIDTH = 100
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": HELP_MAX_WIDTH}


def _help_width() -> int:
    """The width click's help formatter picks by default (the terminal's columns, at most
    ``max_content_width``, minus 2, at least 50), handed to click as the context's public
    ``terminal_width``. Found with ``os`` the way ``shutil.get_terminal_size`` does (``COLUMNS``,
    then the terminal, then 80) because importing shutil brings bz2, lzma and zlib: ~1.7 ms of
    every ``flow --help`` (benchmarks/README.md, the cost ledger)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return max(min(columns or 80, HELP_MAX_WIDTH) - 2, 50)
#: The environment variable of click's shell completion protocol (``flow completion``).
COMPLETE_VAR = "_FLOW_COMPLETE"


class FlowGroup(click.Group):
    """A click group whose commands come from the CommandRegistry, loaded only when used.

    ``flow --help`` reads names and help from the cached command manifest (no plugin, no pluggy
    imported); running a command loads only its owner. Every command invocation is wrapped in
    the ``flow_before_command``/``flow_after_command`` hooks, and kicks off the daily update
    check in the background.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --help is eager: click handles it before it has stored -k/-g/--root/--config, so read
        # the global options first (the parser runs no callbacks) for the help listing to match.
        try:
            opts, rest, _ = self.make_parser(ctx).parse_args(args=list(args))
            ctx.meta["flow.early_params"] = opts
        except click.UsageError:
            return super().parse_args(ctx, args)
        if rest and not ctx.resilient_parsing and _mentions_global_option(self, rest[1:]):
            args = hoist(self, ctx, list(args), len(args) - len(rest), opts)
            try:
                ctx.meta["flow.early_params"] = self.make_parser(ctx).parse_args(list(args))[0]
            except click.UsageError:
                pass
        return super().parse_args(ctx, args)

    def _registry(self, ctx: click.Context) -> CommandRegistry:
        registry = ctx.meta.get("flow.registry")
        if registry is None:
            registry = ctx.meta["flow.registry"] = CommandRegistry(flow_of(ctx))
        return registry

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [info.name for info in self._registry(ctx).list()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self._registry(ctx).get(cmd_name)
        return None if command is None else _with_command_hooks(command, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Validate both config files before any command is looked up, so that a broken config
        # is reported as such rather than as whatever loading a plugin with it runs into.
        flow = flow_of(ctx)
        flow.config  # noqa: B018 - the property reads and validates both config files
        name = click.utils.make_str(args[0])
        command = self.get_command(ctx, name)
        if command is None:
            if ctx.resilient_parsing:
                return None, None, args[1:]
            if name[:1] and not name[:1].isalnum():
                self.parse_args(ctx, args)  # an option in the command's place: click's error
            from flowcore.cli.hints import no_such_command

            raise no_such_command(flow, self._registry(ctx), name)
        ctx.meta["flow.args"] = list(args[1:])  # for flow_before_command
        return name, command, args[1:]

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        """Complete a command name from the manifest (as ``--help`` lists it: no plugin is
        imported), then the options as click does."""
        from click.shell_completion import CompletionItem

        items = [CompletionItem(i.name, help=i.help) for i in self._registry(ctx).list()
                 if i.name.startswith(incomplete)]
        return items + click.Command.shell_complete(self, ctx, incomplete)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        infos = self._registry(ctx).list()
        if not infos:
            return
        rows = [(i.name, f"{i.help}  [{i.source}]" if i.help else f"[{i.source}]") for i in infos]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        flow = ctx.find_object(Flow)
        try:
            if flow is not None:
                from flowcore.cli.hints import require_kit

                require_kit(flow.config)
        except FlowError as exc:
            formatter.write_paragraph()
            formatter.write_text(f"Configuration problem: {exc.message}")


def _mentions_global_option(group: click.Group, tail: list[str]) -> bool:
    """Whether anything after the command looks like one of the root's options (cheap)."""
    decls = {d for p in group.params if p.name in LATE_OPTIONS for d in p.opts}
    for token in tail:
        if token == "--":
            return False
        if token.partition("=")[0] in decls or (token[:2] in decls and token[:2] != "--"):
            return True
    return False


def _with_command_hooks(command: click.Command, name: str) -> click.Command:
    """A copy of ``command`` whose ``invoke`` runs inside the before/after command hooks.

    click calls ``invoke`` after the command's own arguments were parsed (so ``--help`` has
    been handled and never triggers a hook); the copy leaves the registered object untouched.
    """
    import copy

    hooked = copy.copy(command)
    invoke = hooked.invoke

    def invoke_with_hooks(ctx: click.Context) -> Any:
        return _invoke_with_hooks(ctx, name, invoke)

    hooked.invoke = invoke_with_hooks  # type: ignore[method-assign]
    return hooked


def _invoke_with_hooks(ctx: click.Context, name: str, invoke: Any) -> Any:
    import time

    from flowcore.plugins import context as plugin_context

    root = ctx.find_root()
    _start_update_check(root.find_object(Flow))
    registry: CommandRegistry = root.meta["flow.registry"]
    token = plugin_context.activate(registry.context_of(name))
    start = time.monotonic()
    code = 0
    registry.call_command_hook("flow_before_command", command_name=name,
                               args=list(ctx.meta.get("flow.args", ())))
    try:
        return invoke(ctx)
    except BaseException as exc:
        code = _exit_code_of(exc)
        raise
    finally:
        registry.call_command_hook("flow_after_command", command_name=name, exit_code=code,
                                   duration=time.monotonic() - start)
        plugin_context.deactivate(token)


def _exit_code_of(exc: BaseException) -> int:
    """The exit code ``main`` will turn ``exc`` into (for ``flow_after_command``)."""
    if isinstance(exc, FlowError):
        return exc.exit_code
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
        return 130
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return 1


def _start_update_check(flow: Flow | None) -> None:
    if flow is not None and flow.options.check_latest:
        from flowcore.cli import update_check

        update_check.maybe_start(flow)


def _complete_kits(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """``-k <Tab>``: the installed kits (``flowcore.cli.completion_values``, imported only
    when completing)."""
    from flowcore.cli.completion_values import kit_names

    return kit_names(ctx, param, incomplete)



@click.group(cls=FlowGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="flow", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Print full tracebacks and debug logging.")
@click.option("-g", "--global", "global_scope", is_flag=True,
              help="Use the global scope even inside a project.")
@click.option("-k", "--build-kit", metavar="NAME", help="Use this build kit for this run.",
              shell_complete=_complete_kits)
@click.option("--no-check-latest", is_flag=True, help="Do not check for a newer flowcore.")
@click.option("--root", type=click.Path(), metavar="DIR",
              help="Project root (its config is looked for there).")
@click.option("--config", type=click.Path(), metavar="FILE",
              help="Project config file (its folder is the root unless --root).")
@click.option("--strict-plugins", is_flag=True,
              help="Fail instead of skipping a plugin that cannot load (or FLOW_STRICT_PLUGINS=1).")
@click.pass_context
def cli(ctx: click.Context, **params: Any) -> None:
    """flow: project workflows from build kits and plugins.

    Commands marked with a kit or plugin name come from that package; the active kit is chosen
    by the project's [tool.flow] buildkit, else by 'flow buildkit switch'. The options below
    may also follow the command (flow plugin add -g NAME), unless the command has an option of
    that name itself.
    """
    flow_of(ctx).config  # noqa: B018 - the property validates both config files before any command runs


def _write_debug_log(exc: BaseException) -> Path | None:
    import time
    import traceback

    try:
        from flowcore._base import paths

        directory = paths.log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"flow-debug-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(
            f"flow {__version__}\nargv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(exc)),
            encoding="utf-8",
        )
        return path
    except OSError:
        return None


#: click >= 8.2 raises this for a group run without a command (older ones print the help).
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _sentence(text: str) -> str:
    """``text`` ending as a sentence: a full stop added unless it ends with one, or with a
    question ("Did you mean 'list'?") or a parenthesis."""
    text = text.strip()
    return text if text.endswith((".", "?", "!", ")")) else f"{text}."


def _fail(message: str, code: int) -> None:
    """The one error line. ``message`` may carry a plugin's exception text: made printable
    (``flowcore._base.printable``) so no escape sequence of theirs reaches the terminal."""
    if not message.isprintable():
        from flowcore._base.printable import printable

        message = printable(message)
    click.echo(f"flow: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI and turn every failure into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or truthy_env("FLOW_DEBUG")
    if argv is None and not truthy_env("FLOW_NO_LOCAL"):
        from flowcore.cli.local_handover import hand_over_to_local

        hand_over_to_local(args, debug=debug)  # returns only when there is nothing to hand over
    try:
        rv = cli.main(args=args, prog_name="flow", standalone_mode=False,
                      complete_var=COMPLETE_VAR, terminal_width=_help_width())
    except _NO_ARGS_IS_HELP as exc:  # bare `flow` (or a bare group): the help, exit 0
        click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except FlowError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(exc.message, exc.exit_code)
    except click.exceptions.Abort:
        _fail("interrupted.", 130)
    except KeyboardInterrupt:
        _fail("interrupted.", 130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "flow"
        _fail(f"{_sentence(exc.format_message())} See '{where} --help'.", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are reported
        if isinstance(exc, OSError):
            from flowcore._base.paths import unwritable_home

            known = unwritable_home(exc)
            if known is not None:  # a home flow cannot write: a configuration error, no bug
                if debug:
                    import traceback

                    traceback.print_exc()
                _fail(f"{known[0]}. {known[1]}", 2)
        if debug:
            import traceback

            traceback.print_exc()
            _fail(f"unexpected {type(exc).__name__}: {exc}", 1)
        log = _write_debug_log(exc)
        where = f" Full traceback in {log}" if log else ""
        _fail(f"unexpected {type(exc).__name__}: {exc}.{where} (rerun with --debug to print it).", 1)
    sys.exit(rv if isinstance(rv, int) else 0)
