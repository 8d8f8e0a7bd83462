"""Error types for every expected failure.

Each error carries a *cause* and a *fix*; the CLI entry (``flowcore.cli.main.main``) is the one place
that catches them and turns them into ``flow: error: <cause>. <fix>`` plus an exit code. Code
anywhere else raises and never prints or exits on its own.

Problems that do not stop the command (a plugin skipped, a setting ignored) go through
:func:`warn`, the one place that prints ``flow: warning:``, so every warning looks the same and
reads as one line with its cause and fix.

Errors and warnings carry text flow did not write (plugin and template names, exception
messages from plugin code, config keys and values, a server's answer), so both pass it through
``flowcore._base.printable.printable`` here, where every one of them is made: no caller has to
remember, and no escape sequence in that text reaches the user's terminal.
"""

from __future__ import annotations


class FlowError(Exception):
    """Base of all expected failures. ``exit_code`` 1 means failed work."""

    exit_code = 1

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause.rstrip(".")
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """``<cause>. <fix>``, without control characters (see the module docs)."""
        from flowcore._base.printable import printable

        return printable(f"{self.cause}. {self.fix}".strip() if self.fix else f"{self.cause}.")


class UsageError(FlowError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(FlowError):
    """A config file cannot be read, parsed or validated."""

    exit_code = 2


class InstallError(FlowError):
    """A kit or plugin could not be installed, removed or found."""


class PluginLoadError(FlowError):
    """A kit or plugin failed to import or raised inside a hook."""


def warn(cause: str, fix: str = "") -> None:
    """Print ``flow: warning: <cause>. <fix>`` on stderr: a problem that does not stop the command.

    The same ``cause``/``fix`` shape as :class:`FlowError`, so that a warning and the error it
    becomes under ``--strict-plugins`` read alike. Without a fix the cause is printed as given.
    """
    import os

    if os.environ.get("_FLOW_COMPLETE"):
        return  # completing a command line in a shell: nothing may reach the terminal
    import click

    from flowcore._base.printable import printable

    line = f"flow: warning: {cause.rstrip('.')}. {fix}" if fix else f"flow: warning: {cause}"
    click.echo(printable(line), err=True)
