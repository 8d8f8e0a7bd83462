"""Is there a newer flowcore? Checked at most once a day, in the background, never blocking.

On a command (not on ``--help``), :func:`maybe_start` looks at ``lastUpdateDate`` in the global
config; if a day has passed, stdout is a terminal, ``CI`` is not set and ``--no-check-latest`` was
not given, it starts ``python -m flowcore.cli.update_check`` as a detached process and returns at
once. That process records the attempt (``lastUpdateDate``) first, so parallel runs do not start a
second check, asks ``pip index versions flowcore`` with a short timeout (through the user's own
pip configuration, i.e. the index they install from), and stores what it found as
``latestVersion``. Offline, it fails silently. The next command prints a one-line notice when
``latestVersion`` is newer than the running flowcore.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from flowcore._base.version import __version__

if TYPE_CHECKING:
    from flowcore.cli.app import Flow

DAY_MS = 24 * 60 * 60 * 1000
TIMEOUT_S = 15


def _now_ms() -> int:
    return int(time.time() * 1000)


def _watched(flow: Flow) -> bool:
    """A person is watching: not CI, stdout is a terminal, and the check was not turned off."""
    return flow.options.check_latest and not os.environ.get("CI") and sys.stdout.isatty()


def _due(flow: Flow) -> bool:
    last = flow.config.global_config.last_update_check
    return _now_ms() - last >= DAY_MS


def maybe_start(flow: Flow) -> None:
    """Print the notice from an earlier check, and start a new check if one is due."""
    try:
        if not _watched(flow):
            return
        _notice(flow.config.global_config.latest_version)
        if _due(flow):
            import subprocess

            subprocess.Popen(
                [sys.executable, "-m", "flowcore.cli.update_check"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
    except Exception:  # noqa: BLE001 - an update check must never break a command
        return


def _notice(latest: object) -> None:
    if not isinstance(latest, str) or latest == __version__:
        return
    from packaging.version import InvalidVersion, Version

    try:
        newer = Version(latest) > Version(__version__)
    except InvalidVersion:
        return
    if newer:
        print(
            f"flow: notice: flowcore {latest} is available (this is {__version__}). "
            f"Upgrade with: pip install -U flowcore",
            file=sys.stderr,
        )


def latest_version() -> str | None:
    """The newest flowcore on the user's index, or ``None`` (offline, no pip, any error)."""
    import re
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", "flowcore",
             "--disable-pip-version-check", "--retries", "0", "--timeout", "5"],
            capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^flowcore \(([^)]+)\)", out.stdout, re.MULTILINE)
    return match.group(1) if match else None


def run_check() -> None:
    """The background process: record the attempt, ask the index, store the answer."""
    from flowcore.config import record_update_check

    record_update_check(_now_ms())
    latest = latest_version()
    if latest:
        record_update_check(_now_ms(), latest)


if __name__ == "__main__":
    try:
        run_check()
    except Exception:  # noqa: BLE001 - silent by design; nobody is watching this process
        pass
