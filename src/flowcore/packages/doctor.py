"""``flow doctor``'s logic: compare the managed environments with the config, and rebuild them.

The config is the source of truth and the environments are caches of it, so the diagnosis is a
diff (missing, broken, extra) and the fix reinstalls from the record each install left behind
(``installed.json``), never changing the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore._base import progress as _progress
from flowcore._base.errors import InstallError
from flowcore.config.environment import KIT_GROUP, PLUGIN_GROUP
from flowcore.packages.installer import (
    Dist,
    ManagedEnv,
    base_distributions,
    read_record,
    unsatisfied_base_requirements,
    write_record,
)

if TYPE_CHECKING:
    from flowcore.packages.manager import PackageManager

_GROUP = {"kit": KIT_GROUP, "plugin": PLUGIN_GROUP}


@dataclass(frozen=True)
class Problem:
    """One difference between the config and a managed environment, found by ``diagnose``."""

    scope: str  # "global" or "project"
    kind: str  # "missing", "broken" or "extra"
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.name} ({self.scope}): {self.detail}"


def diagnose(pm: PackageManager) -> list[Problem]:
    """Compare each environment with the config: what is missing, broken or extra."""
    problems: list[Problem] = []
    base: dict[str, Dist] | None = None
    for scope, expected in pm.expected().items():
        env = pm.env(scope)
        if not env.root.exists():
            problems += [Problem(scope, "missing", n, f"{k} in the config, no environment "
                                 f"at {env.root}") for n, k in expected.items()]
            continue
        if not env.exists():
            problems.append(Problem(scope, "broken", "environment", f"{env.root} is not a "
                                    f"usable environment for this Python"))
            problems += [Problem(scope, "missing", n, f"{k} in the config")
                         for n, k in expected.items()]
            continue
        if not env.base_pth_current():
            problems.append(Problem(scope, "broken", "environment",
                                    "it does not see flowcore's current packages"))
        base = base if base is not None else base_distributions()
        problems += _diagnose_env(scope, env, expected, base)
    return problems

def _diagnose_env(scope: str, env: ManagedEnv, expected: dict[str, str],
              base: dict[str, Dist]) -> list[Problem]:
    from flowcore.packages.probe import api_problem, read_declarations

    problems: list[Problem] = []
    dists = env.distributions()
    present: list[tuple[str, Dist]] = []
    for name, kind in expected.items():
        dist = dists.get(name)
        if dist is None:
            problems.append(Problem(scope, "missing", name, f"{kind} in the config, not "
                                    "installed"))
        elif _GROUP[kind] not in dist.groups:
            problems.append(Problem(scope, "broken", name, f"has no {_GROUP[kind]} entry "
                                    "point"))
        else:
            present.append((kind, dist))
    for text in unsatisfied_base_requirements([d for _, d in present], base):
        problems.append(Problem(scope, "broken", text.split()[0], text))
    values = [v for kind, d in present for g, _, v in d.entry_points if g == _GROUP[kind]]
    try:
        declared = read_declarations(env, values)
    except InstallError as exc:
        return problems + [Problem(scope, "broken", "environment", exc.cause)]
    for kind, d in present:
        for g, _, v in d.entry_points:
            if g != _GROUP[kind]:
                continue
            why = declared[v].error or api_problem(d.name, declared[v].api)
            if why:
                problems.append(Problem(scope, "broken", d.name, why))
    for name, dist in dists.items():
        if name not in expected and dist.groups:
            problems.append(Problem(scope, "extra", name, f"installed ({dist.version}) but "
                                    "not in the config"))
    return problems

def fix(pm: PackageManager) -> list[str]:
    """Rebuild the environments from the config; returns what was done, step by step."""
    done: list[str] = []
    pm.config.package_source()  # a bad package source setting stops here, before any change
    problems = diagnose(pm)
    for scope, expected in pm.expected().items():
        mine = [p for p in problems if p.scope == scope]
        if not mine:
            continue
        env = pm.env(scope)
        with env.lock():
            if any(p.name == "environment" for p in mine) or not env.exists():
                with _progress.step(f"rebuilding {env.root}"):
                    if not env.exists():
                        env.create()
                    env.ensure()
                done.append(f"rebuilt the {scope} environment at {env.root}")
            remove = [p.name for p in mine
                      if p.kind in ("extra", "broken") and p.name != "environment"]
            if remove:
                pm.installer.uninstall(env, remove)
                done += [f"removed {n} ({scope})" for n in remove if n not in expected]
            present = env.distributions()
            record = read_record(env)
            for name, kind in expected.items():
                if name in present:
                    continue
                done.append(_reinstall(pm, env, name, kind, record.get(name, {})))
    return done

def _reinstall(pm: PackageManager, env: ManagedEnv, name: str, kind: str,
           rec: dict[str, Any]) -> str:
    source = rec.get("source") or name
    links = list(rec.get("findLinks") or [])
    if (source.startswith("/") and not Path(source).exists()) and rec.get("version"):
        source = f"{name}=={rec['version']}"
    options = pm.install_options(links, bool(rec.get("noIndex")))
    try:
        results, snapshot = pm.install_checked(env, [source], options, kind)
        if snapshot is not None:
            snapshot.discard()
    except InstallError as exc:
        return f"could not reinstall {name}: {exc.cause}"
    record = read_record(env)
    for r in results:
        record[r.name] = {**rec, "version": r.version, "kind": kind}
    write_record(env, record)
    return f"reinstalled {name} {results[0].version} from {source}"
