"""What each speed trick that stays in flowcore saves, measured with it and without it in one run.

Each trick is switched off by a few lines run before flow's own ``main`` (the ``without`` side),
and both sides run as ``python -c`` through the same wrapper, interleaved round by round, in the
throw-away homes bench_startup.py builds (1 kit + 50 plugins; 1 kit + 0 plugins for the install).
For each trick it prints, in CPU time and in wall-clock time, the median of the paired
differences (without - with) and a 95% interval for it (the boxplot notch: median +- 1.58 IQR /
sqrt(n)); a saving whose interval holds 0 is within noise. An A/A pair (the shipped code on
both sides) shows the noise floor.
The cost ledger in benchmarks/README.md is written from this output.

Run: .venv/bin/python -m benchmarks (all benchmarks) or .venv/bin/python benchmarks/bench_tricks.py
Options: --rounds N (default 21), --install-rounds N (default 7).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import PLUGIN_BODY, make_home, run_env  # noqa: E402

from managed_env import plugin_wheel  # noqa: E402

RUN = "import sys\nsys.argv[0] = 'flow'\n{prelude}\nfrom flowcore.cli.main import main\nmain()\n"

#: What switches each trick off (run before ``main``).
NO_LAZY_REEXPORTS = "import flowcore.api  # what an eager `from flowcore.api import *` costs"
NO_MANIFEST = ("import flowcore.registry.manifest as m\n"
               "m.load = lambda key, fingerprint: None  # every run rebuilds the command tree")
NO_DEFERRED = {
    "pluggy + PluginSystem": "import pluggy, flowcore.plugins.system, flowcore.plugins.hookspecs",
    "importlib.metadata": "import importlib.metadata",
    "packaging (specifiers, requirements, utils)":
        "import packaging.specifiers, packaging.requirements, packaging.utils",
    "tomllib": "import tomllib",
    "hashlib": "import hashlib",
}
PATH_FINGERPRINT = '''
import flowcore.registry.manifest as m
from pathlib import Path
from flowcore.plugins.records import stat_stamp
def _env_listing(sp):
    where = Path(sp)
    try:
        names = sorted(p.name for p in where.iterdir() if p.name.endswith(".dist-info"))
    except OSError:
        return [str(where), None]
    return [str(where), [[n, stat_stamp(where / n / "entry_points.txt"),
                          stat_stamp(where / n / "direct_url.json")] for n in names]]
m._env_listing = _env_listing
'''
NO_DISTINFO = ("import flowcore.plugins.distinfo as d\n"
               "d.metadata_dirs = lambda *a, **k: None  # importlib.metadata answers instead")
NO_WARM_UP = "import flowcore.packages.manager as m\nm._warm_up = lambda: None"


def run(prelude: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """``(wall, cpu)`` ms of one run; cpu is user + system time of the process and the children
    it waited for (``wait4``), which a loaded machine disturbs far less than the wall clock."""
    argv = [sys.executable, "-c", RUN.format(prelude=prelude), *args]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
        raise SystemExit(f"{args} ({prelude!r}) failed: {r.stderr}")
    return took, (usage.ru_utime + usage.ru_stime) * 1000


def summary(with_: list[float], without: list[float]) -> dict[str, float]:
    diffs = sorted(b - a for a, b in zip(with_, without, strict=True))
    q = statistics.quantiles(diffs, n=4)
    med = statistics.median(diffs)
    half = 1.58 * (q[2] - q[0]) / len(diffs) ** 0.5
    return {"with": statistics.median(with_), "without": statistics.median(without),
            "saves": med, "low": med - half, "high": med + half}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--install-rounds", type=int, default=7)
    opts = parser.parse_args()
    help_, plugin_cmd = ["--help"], ["bench49"]
    # name -> (arguments, code run first on the "with" side, on the "without" side)
    pairs: dict[str, tuple[list[str], str, str]] = {
        "A/A (noise floor): flow --help": (help_, "", ""),
        "lazy flowcore.__getattr__ re-exports: flow --help": (help_, "", NO_LAZY_REEXPORTS),
        "lazy flowcore.__getattr__ re-exports: flow bench49": (plugin_cmd, "", NO_LAZY_REEXPORTS),
        "command manifest: flow --help": (help_, "", NO_MANIFEST),
        "command manifest: flow bench49": (plugin_cmd, "", NO_MANIFEST),
        "string joins in the manifest fingerprint: flow --help": (help_, "", PATH_FINGERPRINT),
        **{f"deferred {name}: flow --help": (help_, "", code) for name, code in NO_DEFERRED.items()},
        "dist-info read directly: manifest rebuild (50 plugins)":
            (help_, NO_MANIFEST, NO_MANIFEST + "\n" + NO_DISTINFO),
    }
    with tempfile.TemporaryDirectory(prefix="flow-bench-tricks-") as tmp:
        root = Path(tmp)
        cwd = root / "cwd"
        cwd.mkdir()
        wheels = root / "wheels"
        env50 = run_env(make_home(root, 50, wheels))
        for args in (help_, plugin_cmd):  # warm: the manifest, the OS caches
            run("", args, env50, cwd)
            run("", args, env50, cwd)
        samples: dict[str, tuple[list[tuple[float, float]], ...]] = {k: ([], []) for k in pairs}
        for i in range(opts.rounds):
            for name, (args, on, off) in pairs.items():
                sides = [(on, 0), (off, 1)] if i % 2 == 0 else [(off, 1), (on, 0)]
                for code, side in sides:
                    samples[name][side].append(run(code, args, env50, cwd))

        # _warm_up: `flow plugin add` of a local wheel into a home with 1 kit, then delete it
        env0 = run_env(make_home(root / "install", 0, wheels))
        wheel = plugin_wheel(wheels, "flow-plugin-added", PLUGIN_BODY.format(cmd="added"))
        add, delete = ["plugin", "add", str(wheel), "--no-index"], ["plugin", "delete", "flow-plugin-added"]
        run("", add, env0, cwd)
        run("", delete, env0, cwd)
        install = "install _warm_up: flow plugin add (local wheel)"
        samples[install] = ([], [])
        for i in range(opts.install_rounds):
            sides = [("", 0), (NO_WARM_UP, 1)] if i % 2 == 0 else [(NO_WARM_UP, 1), ("", 0)]
            for code, side in sides:
                samples[install][side].append(run(code, add, env0, cwd))
                run("", delete, env0, cwd)

    print(f"bench_tricks: paired medians, {opts.rounds} rounds ({opts.install_rounds} for the "
          f"install; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f})")
    results = {}
    width = max(map(len, samples))
    for what, index in (("CPU time (user + system)", 1), ("wall clock", 0)):
        print(f" {what}:")
        for name, (with_, without) in samples.items():
            s = summary([w[index] for w in with_], [w[index] for w in without])
            noise = s["low"] <= 0 <= s["high"]
            print(f"  {name:<{width}}  with {s['with']:7.1f} ms  without {s['without']:7.1f} ms  "
                  f"saves {s['saves']:6.2f} ms [{s['low']:6.2f}, {s['high']:6.2f}]"
                  f"{'  (within noise)' if noise else ''}")
            results.setdefault(name, {})["cpu" if index else "wall"] = {
                k: round(v, 2) for k, v in s.items()}
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
