"""Install benchmark: `flow plugin add` of a local wheel vs `pip install --no-deps` of the same wheel.

Run: .venv/bin/python benchmarks/bench_install.py [--runs N]

Both sides install the same wheel (flow-plugin-env, built from this repo), offline, measured as
whole processes (what a user waits for), in the same run:

* baseline: ``<fresh venv>/bin/python -m pip install --no-deps --no-index <wheel>``. The venv is
  made (with pip) before the clock starts; a new one for every run.
* flow, fresh FLOW_HOME: ``flow plugin add <wheel> --no-index`` with an empty FLOW_HOME, so the
  managed environment is created in the timed run (the first install a user ever does).
* flow, existing env: the same into a FLOW_HOME whose managed environment already exists
  (every later install).

flow's side does more than copy files: it locks, snapshots the environment, checks the plugin's
requirements against flowcore's packages, imports its entry point in a subprocess (the
environment's ``python -I``, reduced environment) to read FLOW_API / FLOW_BUILD_KITS, writes
the config and the install record, then loads the plugins in its own process to rebuild the
command manifest (so the next command does not).

flowcore's bytecode is compiled before the clock starts, as an installed flowcore's is (pip's
side has its own from its install): run from a checkout with PYTHONDONTWRITEBYTECODE set, every
module changed since the last compile would otherwise be compiled again in every timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from wheelfactory import plugin_wheel  # noqa: E402


def offline_env(flow_home: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_INDEX", "UV_EXTRA", "UV_FIND", "FLOW_"))}
    env.update(FLOW_HOME=str(flow_home), PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1", UV_OFFLINE="1",
               UV_CACHE_DIR=str(cache))
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr}")
    return elapsed


def build_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dest), str(REPO / "plugins" / "flow-plugin-env")],
                   check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return next(dest.glob("flow_plugin_env-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    flow = [sys.executable, "-m", "flowcore"]
    import flowcore

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(flowcore.__file__).parent)],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="flow-bench-install-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = build_wheel(tmp / "wheels")
        warm = plugin_wheel(tmp / "wheels", "flow-plugin-warmup", "X = 1\n")
        cache = tmp / "uv-cache"
        template = tmp / "template-venv"
        subprocess.run([sys.executable, "-m", "venv", str(template)], check=True)

        pip_times, fresh_times, warm_times = [], [], []
        for i in range(runs):
            venv = tmp / f"venv-{i}"
            shutil.copytree(template, venv, symlinks=True)
            pip_times.append(timed([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                    "--no-deps", "--no-index", str(wheel)],
                                   offline_env(tmp / "unused", cache)))

            home = tmp / f"home-fresh-{i}"
            fresh_times.append(timed([*flow, "--no-check-latest", "plugin", "add", str(wheel),
                                      "--no-index"], offline_env(home, cache)))

            home = tmp / f"home-warm-{i}"
            env = offline_env(home, cache)
            timed([*flow, "--no-check-latest", "plugin", "add", str(warm), "--no-index"], env)
            warm_times.append(timed([*flow, "--no-check-latest", "plugin", "add", str(wheel),
                                     "--no-index"], env))

    base = statistics.median(pip_times)
    rows = [
        ("pip install --no-deps (fresh venv)", base),
        ("flow plugin add (fresh FLOW_HOME)", statistics.median(fresh_times)),
        ("flow plugin add (existing env)", statistics.median(warm_times)),
    ]
    print(f"install of a local wheel ({wheel.name}), median of {runs} runs, whole process "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    for label, value in rows:
        print(f"  {label:<38} {value * 1000:8.1f} ms   ratio {value / base:5.2f}x")
    results = {"add_existing_vs_pip": round(rows[2][1] / base, 3),
               "add_fresh_vs_pip": round(rows[1][1] / base, 3)}
    print(f"ratio flow plugin add (existing env) / pip install --no-deps: "
          f"{results['add_existing_vs_pip']:.2f}  (target <= 0.25)")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
