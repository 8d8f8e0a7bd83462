"""Start-up cost of `flow --help` against `python -c "import click"`, with 0, 10 and 50 plugins.

Builds three throw-away flow homes (1 build kit + N general plugins each, installed with uv into
a managed environment exactly as flow lays it out), warms each command manifest once, then runs
every command in the same interleaved loop so that machine noise hits all of them alike. Prints
medians (ms) and the ratios the issue sets targets for:

* `flow --help` with 1 kit + 50 plugins within 1.35x of `python -c "import click"` (issue 21,
  which retired the tricks that made issue 14's 1.25x: string twins of paths, a copy of click's
  help formatter; was 1.5x in issue 4);
* `flow bench49` (a plugin's command, run) with 50 plugins within 1.45x of the same (issue 21;
  1.3x in issue 14);
* `flow --help` with 50 plugins within 10% of the same with 0 plugins.
* `flow --help` inside a trusted project (its own plugin and `.flow/env`, 1 kit + 10 plugins)
  within 5% of the same outside any project (issue 24: the trust check is a stat of a few
  files compared with the recorded ones).

Run: .venv/bin/python -m benchmarks (all benchmarks) or .venv/bin/python benchmarks/bench_startup.py
Options: --rounds N (default 21).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from managed_env import install, make_env, plugin_wheel, write_config  # noqa: E402

PLUGIN_BODY = '''
@click.command("{cmd}")
@click.option("--times", default=1, help="How often.")
def command(times):
    """Command {cmd} of a benchmark plugin."""
    click.echo("{cmd}")

@hookimpl
def flow_register_commands(registry):
    registry.add(command)
'''


def flow_command() -> list[str]:
    script = Path(sys.executable).with_name("flow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flowcore"]


def make_home(root: Path, n_plugins: int, wheels: Path) -> Path:
    home = root / f"home-{n_plugins}"
    env_dir = make_env(home / "env")
    kit = plugin_wheel(wheels, "flow-kit-bench", PLUGIN_BODY.format(cmd="build"),
                       group="flow.kits")
    names = [f"flow-plugin-bench{i:02d}" for i in range(n_plugins)]
    plugin_wheels = [plugin_wheel(wheels, n, PLUGIN_BODY.format(cmd=f"bench{i:02d}"))
                     for i, n in enumerate(names)]
    install(env_dir, kit, *plugin_wheels)
    write_config(home, activeBuildKit="flow-kit-bench",
                 buildKits=[{"name": "flow-kit-bench", "installed": True, "plugins": []}],
                 plugins=names)
    return home


def make_trusted_project(root: Path, home: Path) -> Path:
    """A project with its own plugin and ``.flow/env``, trusted with ``flow trust``."""
    project = root / "trusted-project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\n\n[tool.flow]\nplugins = ["flow-plugin-bench00"]\n')
    make_env(project / ".flow" / "env")
    r = subprocess.run([*flow_command(), "trust"], env=run_env(home), cwd=project,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"flow trust failed: {r.stderr}")
    return project


def run_env(home: Path | None) -> dict[str, str]:
    # As installed: bytecode caches are written (pip and uv compile them at install time).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FLOW_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CI="1", NO_COLOR="1")
    if home is not None:
        env["FLOW_HOME"] = str(home)
    return env


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stderr.decode()}")
    return took * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    opts = parser.parse_args()
    flow = flow_command()
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
        root = Path(tmp)
        cwd = root / "cwd"
        cwd.mkdir()
        wheels = root / "wheels"
        homes = {n: make_home(root, n, wheels) for n in (0, 10, 50)}
        project = make_trusted_project(root, homes[10])
        cases = {
            'python -c "import click"': ([sys.executable, "-c", "import click"], None),
            "flow --help, 1 kit + 0 plugins": ([*flow, "--help"], homes[0]),
            "flow --help, 1 kit + 10 plugins": ([*flow, "--help"], homes[10]),
            "flow --help, 1 kit + 50 plugins": ([*flow, "--help"], homes[50]),
            "flow bench49 --help, 1 kit + 50 plugins": ([*flow, "bench49", "--help"], homes[50]),
            "flow bench49 (run), 1 kit + 50 plugins": ([*flow, "bench49"], homes[50]),
            "flow --help, trusted project, 1 kit + 10 plugins": ([*flow, "--help"], homes[10]),
        }
        where = {name: project if "trusted project" in name else cwd for name in cases}
        for name, (argv, home) in cases.items():  # warm: builds each manifest, fills OS caches
            timed(argv, run_env(home), where[name])
            timed(argv, run_env(home), where[name])
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.rounds):
            for name, (argv, home) in cases.items():
                samples[name].append(timed(argv, run_env(home), where[name]))
        cold_home = make_home(root / "cold", 50, wheels)
        cold = timed([*flow, "--help"], run_env(cold_home), cwd)

    med = {name: statistics.median(values) for name, values in samples.items()}
    base = med['python -c "import click"']
    print(f"bench_startup: medians of {opts.rounds} interleaved runs "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    width = max(map(len, med))
    for name, value in med.items():
        print(f"  {name:<{width}}  {value:7.1f} ms   {value / base:5.2f}x import click")
    p0 = med["flow --help, 1 kit + 0 plugins"]
    p50 = med["flow --help, 1 kit + 50 plugins"]
    print(f"  first `flow --help` after installing 50 plugins (rebuilds the manifest): "
          f"{cold:.1f} ms")
    run50 = med["flow bench49 (run), 1 kit + 50 plugins"]
    results = {
        "help_50_vs_import_click": round(p50 / base, 3),
        "run_50_vs_import_click": round(run50 / base, 3),
        "help_50_vs_help_0": round(p50 / p0, 3),
        "help_trusted_project_vs_outside": round(
            med["flow --help, trusted project, 1 kit + 10 plugins"]
            / med["flow --help, 1 kit + 10 plugins"], 3),
    }
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    print(f"ratio flow --help (50 plugins) / import click: {results['help_50_vs_import_click']:.2f}"
          f"  (target <= 1.35)")
    print(f"ratio flow bench49 (50 plugins) / import click: {results['run_50_vs_import_click']:.2f}"
          f"  (target <= 1.45)")
    print(f"ratio flow --help (50 plugins) / (0 plugins):  {results['help_50_vs_help_0']:.2f}"
          f"  (target <= 1.10)")
    print(f"ratio flow --help trusted project / outside:   "
          f"{results['help_trusted_project_vs_outside']:.2f}  (target <= 1.05)")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
