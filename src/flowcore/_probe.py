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
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

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
    if not values:
        return {}
    items = _forked(env, values, timeout) if _can_fork(env) else None
    if items is None:
        items = _subprocess(env, values, timeout)
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
            capture_output=True, text=True, check=False, timeout=timeout,
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


def _forked(env: ManagedEnv, values: Sequence[str], timeout: float) -> list[dict]:
    """The probe in a fork of this process; what it prints is kept for an error message."""
    import os
    import select
    import signal
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
            _child(env, values, result_w)
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
    chunks: dict[int, list[bytes]] = {result_r: [], output_r: []}
    open_fds = [result_r, output_r]
    reaped = False
    try:
        deadline = time.monotonic() + timeout
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _hung(values, timeout)
            ready, _, _ = select.select(open_fds, [], [], remaining)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
        os.waitpid(pid, 0)
        reaped = True
    finally:
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        os.close(result_r)
        os.close(output_r)
    try:
        return json.loads(b"".join(chunks[result_r]).decode("utf-8"))
    except ValueError:
        raise _failed(b"".join(chunks[output_r]).decode("utf-8", "replace")) from None


def _child(env: ManagedEnv, values: Sequence[str], fd: int) -> None:
    """In the forked child: import ``values`` as the environment holds them now, write the
    declarations as JSON to ``fd``."""
    import importlib
    import os
    import sys

    from flowcore.environment import add_to_sys_path

    sys.stdout = sys.stderr  # what plugins print is output, never the answer
    # What flow imported from the environment before the install is not what it holds now.
    roots = tuple({os.path.join(os.path.abspath(env.root), ""),
                   os.path.join(os.path.realpath(env.root), "")})
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
    data = (json.dumps([namespace["_declare"](v) for v in values]) + "\n").encode("utf-8")
    while data:
        data = data[os.write(fd, data):]


def api_problem(name: str, api: str | None) -> str | None:
    """Why ``name`` with ``FLOW_API = api`` cannot run on this flowcore, or None if it can.

    A plugin that declares nothing is taken to support every API version.
    """
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from flowcore import FLOW_API_VERSION

    if api is None or api.strip() in ("", "*"):
        return None
    try:
        spec = SpecifierSet(api)
    except InvalidSpecifier:
        return f"{name} declares FLOW_API = {api!r}, which is not a version specifier"
    if spec.contains(FLOW_API_VERSION, prereleases=True):
        return None
    return (f"{name} supports flow plugin API {api} but this flowcore provides API "
            f"{FLOW_API_VERSION}")
