"""Read what a kit or plugin declares (``FLOW_BUILD_KITS``, ``FLOW_API``) without importing it here.

Plugin code never runs inside the flow process at install time: the managed environment's own
interpreter imports each entry point in a subprocess and prints the declarations as JSON. An
entry point that fails to import is reported with its error, which is how ``flow plugin add``
refuses broken plugins and ``flow doctor`` finds them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from flowcore._installer import ManagedEnv
from flowcore.errors import InstallError

_SCRIPT = r"""
import importlib, json, os, sys
result = os.fdopen(os.dup(1), "w")  # the probe's own channel: what plugins print goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
out = []
for value in json.loads(sys.argv[1]):
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
    out.append(item)
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
    """Import each entry point value (``module`` or ``module:attr``) in ``env``'s interpreter.

    An import that hangs is bounded: after ``timeout`` seconds the probe is killed and
    InstallError raised.
    """
    if not values:
        return {}
    try:
        proc = subprocess.run(
            [str(env.python), "-I", "-c", _SCRIPT, json.dumps(list(values))],
            capture_output=True, text=True, check=False, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallError(  # no fix: the caller knows what was left unchanged
            f"importing {', '.join(values)} in the flow environment did not finish within "
            f"{timeout:g} s (a kit or plugin hangs when imported)") from exc
    except OSError as exc:
        raise InstallError(f"cannot run the flow environment's Python {env.python}: {exc}",
                           "Run: flow doctor --fix") from exc
    try:
        items = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise InstallError(
            f"the flow environment's Python failed: {proc.stderr.strip()[-300:] or 'no output'}",
            "Run: flow doctor --fix",
        ) from None
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
