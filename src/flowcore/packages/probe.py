"""Read what a kit or plugin declares (``FLOW_BUILD_KITS``, ``FLOW_API``) without importing it here.

Plugin code never runs inside the flow process before an install is committed: each entry point
is imported in a subprocess, the environment's own interpreter with ``-I`` and a reduced
environment (``probe_environ``: no token or other secret of the user's environment reaches code
that nobody has vetted yet), which reports the declarations as JSON. An entry point that fails to
import is reported with its error, which is how ``flow plugin add`` refuses broken plugins and
``flow doctor`` finds them.

With ``check_hooks``, the probe also checks each entry point's hook implementations the way
loading it will (``flowcore.plugins.hookcheck.check_for_install``: flowcore's hook specs and those
of the kits it declares in ``FLOW_BUILD_KITS`` that are installed): a signature that does not fit
a declared hook comes back as ``hook_error``, a hook nothing declares in ``undeclared``.

A fresh interpreter rather than a fork of flow: a fork would hold all of flow's memory (tokens,
index passwords) and could not hide it from the plugin, for ~50 ms saved per install.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowcore._base.errors import InstallError
from flowcore.packages.installer import ManagedEnv

_SCRIPT = r"""
def _declare(value, check):
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
        if check is not None:
            from flowcore.plugins.hookcheck import check_for_install
            from flowcore.plugins.system import entry_point_values
            kits = item.get("FLOW_BUILD_KITS") or []
            kits = [kits] if isinstance(kits, str) else kits
            item.update(check_for_install(obj, check["names"].get(value, value), kits,
                                          entry_point_values))
    except BaseException as exc:
        item["error"] = f"{type(exc).__name__}: {exc}"
    return item

import json, os, site, sys
result = os.fdopen(os.dup(1), "w")  # the probe's own channel: what plugins print goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
check = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
for kit_dir in (check or {}).get("kit_dirs", []):
    site.addsitedir(kit_dir)  # where kits are installed, after the environment's own packages
out = [_declare(value, check) for value in json.loads(sys.argv[1])]
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
    passes. No ``PYTHON*`` variable: the probe is ``python -I``, which ignores them.
    """
    import os

    source = os.environ if environ is None else environ
    return {key: value for key, value in source.items()
            if key.upper() in PROBE_ENV_NAMES or key.upper().startswith(PROBE_ENV_PREFIXES)}


@dataclass(frozen=True)
class Declarations:
    """What one entry point declares, or the error importing it raised; with ``check_hooks``,
    the hooks it implements that nothing declares and why a hook signature does not fit."""

    value: str
    build_kits: list[str] | None
    api: str | None
    error: str | None
    undeclared: tuple[str, ...] = ()
    hook_error: str | None = None


def read_declarations(env: ManagedEnv, values: Sequence[str], *, timeout: float = 120,
                      check_hooks: bool = False, names: Mapping[str, str] | None = None,
                      kit_dirs: Sequence[Path] = ()) -> dict[str, Declarations]:
    """Import each entry point value (``module`` or ``module:attr``) in the environment's own
    interpreter (``python -I``, ``probe_environ()``).

    ``check_hooks``: check each one's hook implementations as loading will (see the module
    docs), naming it by ``names[value]`` (its distribution) and finding its kits in the
    environment and in ``kit_dirs``. An import that hangs is bounded: after ``timeout`` seconds
    the probe is killed and InstallError raised.
    """
    if not values:
        return {}
    check: dict[str, object] | None = None
    if check_hooks:
        check = {"names": dict(names or {}),
                 "kit_dirs": [str(d) for d in kit_dirs if Path(d).is_dir()]}
    return _declarations(_subprocess(env, values, timeout, check))


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
            tuple(str(h) for h in item.get("undeclared") or ()),
            item.get("hook_error"),
        )
    return out


def _subprocess(env: ManagedEnv, values: Sequence[str], timeout: float,
                check: dict[str, object] | None = None) -> list[dict]:
    """The probe in the environment's own interpreter (``python -I``)."""
    extra = [json.dumps(check)] if check is not None else []
    try:
        proc = subprocess.run(
            [str(env.python), "-I", "-c", _SCRIPT, json.dumps(list(values)), *extra],
            capture_output=True, text=True, check=False, timeout=timeout, env=probe_environ(),
        )
    except subprocess.TimeoutExpired as exc:  # (killed and reaped by subprocess.run)
        raise InstallError(  # no fix: the caller knows what was left unchanged
            f"importing {', '.join(values)} in the flow environment did not finish within "
            f"{timeout:g} s (a kit or plugin hangs when imported)") from exc
    except OSError as exc:
        raise InstallError(f"cannot run the flow environment's Python {env.python}: {exc}",
                           "Run: flow doctor --fix") from exc
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise InstallError(
            f"the flow environment's Python failed: {proc.stderr.strip()[-300:] or 'no output'}",
            "Run: flow doctor --fix") from None


def api_problem(name: str, api: str | None) -> str | None:
    """Why ``name`` with ``FLOW_API = api`` cannot run on this flowcore, or None if it can
    (``flowcore.plugins.api_version``: a plugin that declares nothing supports every version)."""
    from flowcore.plugins import api_version

    problem = api_version.api_problem(api)
    return f"{name} {problem}" if problem else None

