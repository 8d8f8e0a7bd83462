"""The install step's egress proxy: what `npm ci` of a real dependency tree pays for going through it.

One command (`.venv/bin/python benchmarks/bench_egress.py`): `npm ci` of eslint 8.57.0 +
express 4.21.2 (175 packages, ~6 MB of tarballs) in the real bubblewrap sandbox, from a static
npm registry on loopback (kits/flow-kit-cloudbuild/tests/npm_registry.py), with an empty npm
cache each round so every tarball is fetched:

- direct: the sandbox with the host's network (what install had before issue 18 part 2);
- egress: the install step as it runs now: a network namespace with only loopback, the relay
  in front of npm, the server's egress proxy (in this process's event loop, as in the server)
  allowing only the registry's 127.0.0.1:PORT.

Alternating rounds, medians, ratio egress / direct (target <= 1.15x).

The tree is fetched once from registry.npmjs.org (the lockfile with `npm install
--package-lock-only`, then each tarball) into ``$XDG_CACHE_HOME/flow-bench-egress`` (default
``~/.cache``); later runs are offline. Without the cache and without the network the benchmark
says so and skips.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "kits" / "flow-kit-cloudbuild"
sys.path[:0] = [str(KIT / "src"), str(KIT / "tests")]

from npm_registry import StaticNpmRegistry  # noqa: E402

from flow_kit_cloudbuild.server.runtime import egress  # noqa: E402
from flow_kit_cloudbuild.server.runtime.sandbox import Sandbox, SandboxSpec  # noqa: E402

TREE = {"eslint": "8.57.0", "express": "4.21.2"}
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flow-bench-egress"


def fetch_tree() -> dict:
    """The lockfile of TREE and every tarball it names, from the npm registry, cached."""
    lock_file = CACHE / "package-lock.json"
    if lock_file.is_file():
        return json.loads(lock_file.read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "package.json").write_text(json.dumps({"name": "bench", "version": "1.0.0", "private": True}))
        subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                        *(f"{n}@{v}" for n, v in TREE.items())], cwd=tmp, check=True, capture_output=True,
                       timeout=300)
        lock = json.loads(Path(tmp, "package-lock.json").read_text())

    def get(entry: tuple[str, dict]) -> None:
        path, meta = entry
        target = CACHE / "tarballs" / (path.replace("/", "+") + ".tgz")
        if not target.is_file():
            target.parent.mkdir(exist_ok=True)
            name = meta.get("name") or path.rsplit("node_modules/", 1)[-1]
            url = meta.get("resolved") or (f"https://registry.npmjs.org/{name}/-/"
                                           f"{name.rsplit('/', 1)[-1]}-{meta['version']}.tgz")
            with urllib.request.urlopen(url, timeout=60) as resp:
                target.write_bytes(resp.read())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, [(k, v) for k, v in lock["packages"].items() if k]))
    lock_file.write_text(json.dumps(lock))
    return lock


class RegistryProcess:
    """The cached tarballs on a loopback registry in a process of its own (as a real registry is:
    in this process it would share the GIL with the proxy), and the lockfile rewritten to it."""

    def __init__(self, lock: dict, where: Path) -> None:
        entries, packages = [], {}
        for path, meta in lock["packages"].items():
            if path:
                name = meta.get("name") or path.rsplit("node_modules/", 1)[-1]
                entries.append([name, meta["version"], str(CACHE / "tarballs" / (path.replace("/", "+") + ".tgz"))])
        (where / "registry.json").write_text(json.dumps(entries))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-registry", str(where / "registry.json")],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        self.size = sum(Path(f).stat().st_size for _, _, f in entries)
        for path, meta in lock["packages"].items():
            if not path:
                packages[path] = meta
                continue
            name = meta.get("name") or path.rsplit("node_modules/", 1)[-1]
            packages[path] = {**meta, "resolved": f"{self.url.rstrip('/')}/{name}/-/"
                                                  f"{name.rsplit('/', 1)[-1]}-{meta['version']}.tgz"}
        self.lock = {**lock, "packages": packages}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def serve_registry(manifest: Path) -> None:
    registry = StaticNpmRegistry()
    for name, version, file in json.loads(manifest.read_text()):
        registry.add_tarball(name, version, Path(file).read_bytes())
    print(registry.url, flush=True)
    while True:
        time.sleep(3600)


async def npm_ci(sandbox: Sandbox, project: Path, registry: RegistryProcess,
                 proxy: egress.EgressProxy | None) -> float:
    for d in ("node_modules", "cache", "home", "tmp"):
        shutil.rmtree(project / d, ignore_errors=True)
    for d in ("cache", "home", "tmp"):
        (project / d).mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(project / "home"), "TMPDIR": str(project / "tmp"),
           "npm_config_cache": str(project / "cache"), "npm_config_registry": registry.url,
           "npm_config_audit": "false", "npm_config_fund": "false", "npm_config_update_notifier": "false",
           "npm_config_progress": "false", "CI": "true"}
    started = time.perf_counter()
    if proxy is None:
        argv = sandbox.wrap(["npm", "ci"], SandboxSpec(work=project, network=True), project)
        code = await run(argv, env, project)
    else:
        async with proxy.listening() as sock:
            argv = sandbox.wrap(["npm", "ci"], SandboxSpec(work=project, egress=sock), project)
            code = await run(argv, {**env, **egress.proxy_env()}, project)
    took = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"npm ci failed ({code}) {'through the proxy' if proxy else 'direct'}")
    if len(list((project / "node_modules").iterdir())) < 50:
        raise SystemExit("npm ci installed too little")
    return took


async def run(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return proc.returncode or 0


async def bench(rounds: int) -> dict:
    try:
        lock = fetch_tree()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"SKIP: the dependency tree is not cached in {CACHE} and cannot be fetched ({exc})")
        return {"skipped": True}
    with tempfile.TemporaryDirectory(prefix="flow-bench-egress-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        registry = RegistryProcess(lock, Path(tmp))
        local_lock = registry.lock
        count, size = len([k for k in local_lock["packages"] if k]), registry.size
        try:
            root = local_lock["packages"][""]
            (project / "package.json").write_text(json.dumps({"name": "bench", "version": "1.0.0", "private": True,
                                                              "dependencies": root.get("dependencies", {})}))
            (project / "package-lock.json").write_text(json.dumps(local_lock))
            sandbox = Sandbox()
            policy = egress.EgressPolicy(egress.parse_registry_hosts([f"127.0.0.1:{registry.port}"]))
            proxy = egress.EgressProxy(policy)
            await npm_ci(sandbox, project, registry, None)    # warm the page cache and npm itself
            await npm_ci(sandbox, project, registry, proxy)
            times: dict[str, list[float]] = {"direct": [], "egress": []}
            for i in range(rounds):
                order = ("direct", "egress") if i % 2 == 0 else ("egress", "direct")
                for case in order:
                    times[case].append(await npm_ci(sandbox, project, registry,
                                                    proxy if case == "egress" else None))
        finally:
            registry.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"packages": count, "tarball_bytes": size, "rounds": rounds,
              "direct_s": round(med["direct"], 3), "egress_s": round(med["egress"], 3),
              "ratio": round(med["egress"] / med["direct"], 3),
              "direct_all": [round(t, 3) for t in times["direct"]],
              "egress_all": [round(t, 3) for t in times["egress"]]}
    print(f"npm ci of {count} packages ({size / 1e6:.1f} MB of tarballs), {rounds} rounds each, medians:")
    print(f"  direct (host network)          {med['direct']:.3f} s")
    print(f"  through the egress proxy       {med['egress']:.3f} s   ({result['ratio']:.3f}x, target <= 1.15x)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--serve-registry", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_registry:
        return serve_registry(args.serve_registry)
    if shutil.which("bwrap") is None:
        print("SKIP: bubblewrap is not installed")
        return
    result = asyncio.run(bench(args.rounds))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
