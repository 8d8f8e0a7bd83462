"""Read what a kit or plugin declares (``FLOW_BUILD_KITS``, ``FLOW_API``) without importing it here.

Plugin code never runs inside the flow process at install time: each entry point is imported in
a child process, which reports the declarations as JSON. An entry point that fails to import is
reported with its error, which is how ``flow plugin add`` refuses broken plugins and ``flow
doctor`` finds them.

On Linux the child is a fork of flow itself (when flow runs no other thread and the environment
is one for this Python): it forgets every module of the environment that flow imported, sees
the environment's packages the way flow's PluginSystem will load them, and imports there. That
saves starting an interpreter and importing click again, ~50 ms of each ``flow plugin add``.
Elsewhere, or with ``FLOW_PROBE=subprocess``, the environment's own interpreter (``-I``) runs
the same code in a subprocess.

Either way the plugin code runs with a reduced environment (``probe_environ``): no token or
other secret of the user's environment reaches code that nobody has vetted yet.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowcore._installer import ManagedEnv
from flowcore.errors import InstallError

_DECLARE = r"""
def _declare(value):
    import importlib
    module_name, _, attr = value.partition(":")
    item = {"value": value}
    try:
        module = importlib.import_module(module_name)
        obj = module
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        for key in ("FLOW_BUILD_KITS", "FLOW_API"):
            found = getattr(obj, key, getattr(module, key, None))
            if found is not None and not isinstance(found, (str, list, tuple)):
                found = repr(found)
            item[key] = list(found) if isinstance(found, tuple) else found
    except BaseException as exc:
        item["error"] = f"{type(exc).__name__}: {exc}"
    return item
"""

_SCRIPT = _DECLARE + r"""
import json, os, sys
result = os.fdopen(os.dup(1), "w")  # the probe's own channel: what plugins print goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
out = [_declare(value) for value in json.loads(sys.argv[1])]
result.write(json.dumps(out) + "\n")
result.flush()
"""


#: The variables of the user's environment that the import check passes on (``probe_environ``
#: says why): by name (compared upper-cased, as Windows names them), and every ``LC_*``.
PROBE_ENV_NAMES = frozenset({
    "PATH",                                 # programs an import runs
    "HOME", "USER", "LOGNAME",              # the user's home and name (expanduser, getpass)
    "LANG", "LANGUAGE", "TZ",               # encoding, messages and time zone (with LC_*)
    "TMPDIR", "TEMP", "TMP",                # where temporary files go
    "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH",  # shared libraries of compiled extensions
    "DYLD_FALLBACK_LIBRARY_PATH",
    "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT",  # Windows' own basics
    "USERPROFILE", "HOMEDRIVE", "HOMEPATH", "APPDATA", "LOCALAPPDATA",
    "FLOW_HOME",                            # flowcore's home, as the flow that installs sees it
})
PROBE_ENV_PREFIXES = ("LC_",)


def probe_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment plugin code gets in the import check: ``environ`` (default: flow's)
    reduced to ``PROBE_ENV_NAMES`` and ``PROBE_ENV_PREFIXES``.

    An allowlist, because ``flow plugin add`` runs code nobody has vetted yet (a wheel from an
    index, a directory a repository brought) before anything is committed, and the user's
    environment holds secrets under names no list could foresee (``FLOW_CLOUDBUILD_TOKEN``,
    ``GITHUB_TOKEN``, ``AWS_*``, a password in ``FLOW_INDEX_URL``): only what an import needs
    passes. No ``PYTHON*`` variable: the subprocess probe is ``python -I``, which ignores them,
    and the fork's interpreter was set up with flow's own when it started.
    """
    import os

    source = os.environ if environ is None else environ
    return {key: value for key, value in source.items()
            if key.upper() in PROBE_ENV_NAMES or key.upper().startswith(PROBE_ENV_PREFIXES)}


@dataclass(frozen=True)
class Declarations:
    """What one entry point declares, or the error importing it raised."""

    value: str
    build_kits: list[str] | None
    api: str | None
    error: str | None


def read_declarations(env: ManagedEnv, values: Sequence[str], *,
                      timeout: float = 120) -> dict[str, Declarations]:
    """Import each entry point value (``module`` or ``module:attr``) in a child process that
    sees ``env``'s packages.

    An import that hangs is bounded: after ``timeout`` seconds the probe is killed and
    InstallError raised.
    """
    return read_declarations_and(env, values, None, timeout=timeout)[0]


def read_declarations_and(
    env: ManagedEnv, values: Sequence[str],
    then: Callable[[dict[str, Declarations]], Any] | None, *, timeout: float = 120,
) -> tuple[dict[str, Declarations], Pending | None]:
    """``read_declarations``, and ``then(declarations)`` called in the same child process after
    the imports, when that child is a fork of flow: a ``Pending`` for its result (JSON data; None
    when ``then`` raised or did not finish in time: its work is never the reason an install
    fails), else None (no fork). This returns with the declarations, while ``then`` may still
    run.
    """
    if not values:
        return {}, None
    found = _forked(env, values, timeout, then) if _can_fork(env) else None
    if found is None:
        return _declarations(_subprocess(env, values, timeout)), None
    return _declarations(found[0]), found[1]


def _declarations(items: list[dict]) -> dict[str, Declarations]:
    out: dict[str, Declarations] = {}
    for item in items:
        kits = item.get("FLOW_BUILD_KITS")
        if isinstance(kits, str):
            kits = [kits]
        api = item.get("FLOW_API")
        out[item["value"]] = Declarations(
            item["value"],
            [str(k) for k in kits] if isinstance(kits, list) else None,
            str(api) if api is not None else None,
            item.get("error"),
        )
    return out


def _hung(values: Sequence[str], timeout: float) -> InstallError:
    return InstallError(  # no fix: the caller knows what was left unchanged
        f"importing {', '.join(values)} in the flow environment did not finish within "
        f"{timeout:g} s (a kit or plugin hangs when imported)")


def _failed(stderr: str) -> InstallError:
    return InstallError(
        f"the flow environment's Python failed: {stderr.strip()[-300:] or 'no output'}",
        "Run: flow doctor --fix")


def _subprocess(env: ManagedEnv, values: Sequence[str], timeout: float) -> list[dict]:
    """The probe in the environment's own interpreter (``python -I``)."""
    try:
        proc = subprocess.run(
            [str(env.python), "-I", "-c", _SCRIPT, json.dumps(list(values))],
            capture_output=True, text=True, check=False, timeout=timeout, env=probe_environ(),
        )
    except subprocess.TimeoutExpired as exc:
        raise _hung(values, timeout) from exc
    except OSError as exc:
        raise InstallError(f"cannot run the flow environment's Python {env.python}: {exc}",
                           "Run: flow doctor --fix") from exc
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise _failed(proc.stderr) from None


def _can_fork(env: ManagedEnv) -> bool:
    """Whether the probe may be a fork of this process: Linux, no other thread running (a
    fork copies none of them, and a lock one of them holds would stay held), and an
    environment of this very Python (its ``site-packages`` is where this Python looks)."""
    import os
    import sys

    if os.environ.get("FLOW_PROBE", "").lower() == "subprocess":
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False
    return env.python.exists() and env.site_packages.is_dir()


def _forked(env: ManagedEnv, values: Sequence[str], timeout: float,
            then: Callable[[dict[str, Declarations]], Any] | None = None,
            ) -> tuple[list[dict], Pending | None] | None:
    """The probe in a fork of this process; what it prints is kept for an error message.

    The child writes the declarations as one JSON line, then what ``then`` gives as another:
    this returns as soon as the first came, the second is the ``Pending``'s ``result()``.
    None when the child could not reduce its environment (``_enter_probe_environ``) and
    imported nothing: the caller runs the subprocess probe instead.
    """
    import os
    import sys
    import time

    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(result_r)
            os.close(output_r)
            os.dup2(output_w, 1)
            os.dup2(output_w, 2)
            _child(env, values, result_w, then)
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the output pipe
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(result_w)
    os.close(output_w)
    child = _Child(pid, result_r, output_r, time.monotonic() + timeout)
    try:
        finished = child.read(child.answered if then is not None else None)
        if not finished and not child.answered():
            raise _hung(values, timeout)
        if finished or then is None:
            child.reap(kill=not finished)  # (killed: the declarations came, it hung after)
        try:
            items = json.loads(child.lines()[0].decode("utf-8"))
        except ValueError:
            raise _failed(child.output()) from None
    except BaseException:
        child.reap(kill=True)
        raise
    if items is None:
        child.reap(kill=True)
        return None
    return items, (Pending(child) if then is not None else None)


class _Child:
    """A forked probe: its pipes (its answer, what it prints) and what came through them."""

    def __init__(self, pid: int, result_fd: int, output_fd: int, deadline: float) -> None:
        self.pid = pid
        self.result_fd = result_fd
        self.output_fd = output_fd
        self.deadline = deadline
        self.chunks: dict[int, list[bytes]] = {result_fd: [], output_fd: []}
        self.open_fds = [result_fd, output_fd]
        self.reaped = False

    def answered(self) -> bool:
        """Whether the first line (the declarations) came."""
        return any(b"\n" in chunk for chunk in self.chunks[self.result_fd])

    def read(self, enough: Callable[[], bool] | None = None) -> bool:
        """Read until both pipes closed (True), or ``enough()``, or the deadline (False)."""
        import os
        import select
        import time

        while self.open_fds:
            if enough is not None and enough():
                return False
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select(self.open_fds, [], [], remaining)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    self.chunks[fd].append(data)
                else:
                    self.open_fds.remove(fd)
        return True

    def reap(self, *, kill: bool) -> None:
        import os
        import signal

        if self.reaped:
            return
        self.reaped = True
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(self.pid, 0)
        os.close(self.result_fd)
        os.close(self.output_fd)

    def lines(self) -> list[bytes]:
        return b"".join(self.chunks[self.result_fd]).split(b"\n")

    def output(self) -> str:
        return b"".join(self.chunks[self.output_fd]).decode("utf-8", "replace")


_PENDING: set[Pending] = set()
_CANCEL_AT_EXIT = False


class Pending:
    """What ``then`` gives in a forked probe, while its child may still be computing it: flow
    goes on with the declarations meanwhile. A child nobody asks is killed at exit."""

    def __init__(self, child: _Child) -> None:
        global _CANCEL_AT_EXIT
        self.child = child
        if not _CANCEL_AT_EXIT:
            import atexit

            atexit.register(_cancel_pending)
            _CANCEL_AT_EXIT = True
        _PENDING.add(self)

    def result(self) -> Any:
        """The JSON data ``then`` returned, or None (it raised, or did not finish in time)."""
        _PENDING.discard(self)
        child = self.child
        if not child.reaped:
            finished = child.read()
            child.reap(kill=not finished)
            if not finished:
                return None
        lines = child.lines()
        try:
            return json.loads(lines[1].decode("utf-8")) if lines[1:] != [b""] else None
        except (ValueError, IndexError):
            return None

    def cancel(self) -> None:
        _PENDING.discard(self)
        self.child.reap(kill=True)


def _cancel_pending() -> None:
    for pending in list(_PENDING):
        pending.cancel()


def _child(env: ManagedEnv, values: Sequence[str], fd: int,
           then: Callable[[dict[str, Declarations]], Any] | None = None) -> None:
    """In the forked child: import ``values`` as the environment holds them now, write the
    declarations as JSON to ``fd`` (one line), then ``then``'s result (another)."""
    import importlib
    import os
    import sys

    from flowcore.environment import add_to_sys_path

    if not _enter_probe_environ():
        _write(fd, "null\n")  # no plugin code without it: the parent uses the subprocess probe
        return
    sys.stdout = sys.stderr  # what plugins print is output, never the answer
    # What flow imported from the environment before the install is not what it holds now.
    roots = tuple({os.path.join(os.path.abspath(env.root), ""),
                   os.path.join(os.path.realpath(env.root), "")})
    # (Nothing can have been imported from there while no sys.path entry is in it.)
    if any(isinstance(p, str) and os.path.join(os.path.abspath(p), "").startswith(roots)
           for p in sys.path):
        for name, module in list(sys.modules.items()):
            where = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
            if any(isinstance(p, str) and p.startswith(roots) for p in where):
                del sys.modules[name]
    # Like `python -I`: neither the working directory nor the script's folder is searched.
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd, os.path.dirname(sys.argv[0] or ""))]
    for key in [k for k in sys.path_importer_cache
                if isinstance(k, str) and os.path.join(k, "").startswith(roots)]:
        del sys.path_importer_cache[key]
    importlib.invalidate_caches()
    add_to_sys_path(env.root)
    namespace: dict = {}
    exec(_DECLARE, namespace)  # noqa: S102 - flowcore's own code, shared with _SCRIPT
    items = [namespace["_declare"](v) for v in values]
    _write(fd, json.dumps(items) + "\n")
    if then is not None:
        try:
            extra = json.dumps(then(_declarations(items)))
        except Exception:  # noqa: BLE001 - then's work is optional; the parent gets None
            import traceback

            traceback.print_exc()
            return
        _write(fd, extra + "\n")


def _enter_probe_environ() -> bool:
    """In the forked probe, before any plugin code runs: leave only ``probe_environ()`` in each
    place this copy of flow keeps its environment. ``os.environ`` (and through it the C
    library's, which child processes inherit), ``posix.environ`` (the copy Python took at
    start-up), and the block flow was started with, which ``/proc/self/environ`` shows: no longer
    referenced once ``os.environ`` was reset, it is overwritten with zeros.

    False when that block cannot be shown to be blank: then the probe must not be a fork.
    """
    import os
    import posix

    kept = probe_environ()
    os.environ.clear()
    os.environ.update(kept)
    posix.environ.clear()
    posix.environ.update({os.fsencode(k): os.fsencode(v) for k, v in kept.items()})
    return _blank_initial_environ()


def _blank_initial_environ() -> bool:
    """Overwrite this process's initial environment (``env_start``..``env_end`` of
    ``/proc/self/stat``, fields 50 and 51) through ``/proc/self/mem``; whether
    ``/proc/self/environ`` then reads as blank."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after the name, which may hold spaces
        start, end = int(fields[47]), int(fields[48])
        if end > start:
            with open("/proc/self/mem", "r+b", buffering=0) as mem:
                mem.seek(start)
                mem.write(bytes(end - start))
        with open("/proc/self/environ", "rb") as fh:
            return not fh.read().strip(b"\0")
    except (OSError, ValueError, IndexError, OverflowError):
        return False


def _write(fd: int, text: str) -> None:
    import os

    data = text.encode("utf-8")
    while data:
        data = data[os.write(fd, data):]


def api_problem(name: str, api: str | None) -> str | None:
    """Why ``name`` with ``FLOW_API = api`` cannot run on this flowcore, or None if it can.

    A plugin that declares nothing is taken to support every API version.
    """
    from flowcore import FLOW_API_VERSION

    if api is None or api.strip() in ("", "*"):
        return None
    from flowcore._installer import plain_contains

    plain = plain_contains(api, FLOW_API_VERSION)
    if plain is True:
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(api)
    except InvalidSpecifier:
        return f"{name} declares FLOW_API = {api!r}, which is not a version specifier"
    if spec.contains(FLOW_API_VERSION, prereleases=True):
        return None
    return (f"{name} supports flow plugin API {api} but this flowcore provides API "
            f"{FLOW_API_VERSION}")

