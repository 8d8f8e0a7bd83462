"""The install cache (issue 23): a token's node_modules kept per lock file, so `npm ci` runs once.

Every test runs the real server (real bubblewrap, real build uids when run as root) and real
`npm ci` against a real loopback registry (npm_registry.StaticNpmRegistry, allowed on the server
through ``registry-hosts`` as test_cloudbuild_egress.py does). Sources are published from a real
git daemon; each publish of a project changes one source line, so the build cache never answers
for the install cache. What is asserted is what a user sees (the task's log, the artifact) and
what the server keeps under ``<data>/cache/installs``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudbuild_server_support import OTHER_TOKEN, TOKEN, Client, GitDaemon, ServerProc, final, http_get, logs, new_repo
from npm_registry import StaticNpmRegistry, pack

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.runtime import install_cache

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("npm") is None,
                                reason="bubblewrap and npm are needed (.ci/run installs them)")

MiB = 1024 * 1024
REUSED = "install cache: reused node_modules for package-lock.json"
MANY_FILES = 60_000  # what ic-many's postinstall writes: storing it takes long enough to be killed


def _blob(seed: int, size: int) -> str:
    """``size`` characters that gzip cannot shrink much (the npm cache holds the tarball)."""
    import base64
    import random

    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4)).decode()


@pytest.fixture(scope="module")
def registry() -> Iterator[StaticNpmRegistry]:
    npm = StaticNpmRegistry()
    npm.add_package("ic-dep", "1.0.0", {"index.js": "module.exports = 'dep 1.0.0';\n"})
    npm.add_package("ic-dep", "1.1.0", {"index.js": "module.exports = 'dep 1.1.0';\n"})
    npm.add_package("ic-big-a", "1.0.0", {"index.js": "module.exports = 'a';\n", "blob.txt": _blob(1, 4 * MiB)})
    npm.add_package("ic-big-b", "1.0.0", {"index.js": "module.exports = 'b';\n", "blob.txt": _blob(2, 4 * MiB)})
    make = ("const fs = require('fs'); fs.mkdirSync('many');\n"
            f"for (let i = 0; i < {MANY_FILES}; i++) fs.writeFileSync('many/f' + i, 'x' + i);\n")
    many_manifest = {"name": "ic-many", "version": "1.0.0", "main": "index.js",
                     "scripts": {"postinstall": "node make.js"}}
    npm.add_tarball("ic-many", "1.0.0", pack("ic-many", "1.0.0", {  # its package.json replaces pack's
        "package.json": json.dumps(many_manifest), "make.js": make,
        "index.js": "module.exports = require('fs').readdirSync(__dirname + '/many').length;\n"}),
        {"scripts": many_manifest["scripts"]})
    yield npm
    npm.stop()


def server_for(data: Path, npm: StaticNpmRegistry, **config: Any) -> ServerProc:
    srv = ServerProc(data, "--concurrency", "2", config={
        "offline": False, "registry-hosts": [f"127.0.0.1:{npm.port}"],
        "build-commands": [["npm", "run", "<script>"]], **config})
    srv.config["build-env"].update(npm_config_registry=npm.url)
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, registry: StaticNpmRegistry) -> Iterator[ServerProc]:
    srv = server_for(tmp_path_factory.mktemp("installcache") / "data", registry).start()
    yield srv
    srv.stop()


def project(npm: StaticNpmRegistry, name: str, deps: dict[str, str], line: str,
            build_js: str = "") -> dict[str, str | bytes]:
    """An npm project depending on ``deps`` whose build writes ``dist/out.txt``: every dependency's
    export, then ``line`` (the one source line a test changes)."""
    lock = npm.lock(name, deps)
    if "ic-many" in deps:
        lock["packages"]["node_modules/ic-many"]["hasInstallScript"] = True
    build = build_js or ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                         f"const deps = {json.dumps(sorted(deps))}.map(d => String(require(d)));\n"
                         f"fs.writeFileSync('dist/out.txt', deps.join(' ') + ' | ' + {json.dumps(line)});\n")
    return {"package.json": json.dumps({"name": name, "version": "1.0.0", "private": True, "dependencies": deps,
                                        "scripts": {"build": "node build.js"}}),
            "package-lock.json": json.dumps(lock), "build.js": build}


def publish(server: ServerProc, url: str, token: str = TOKEN, **extra: Any) -> list[dict]:
    payload = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
               "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 300, **extra}
    with Client(server.url, token) as c:
        ack = c.publish(**payload)
        assert ack["ok"], ack
        return c.wait(ack["taskId"], timeout=300)


def output(msgs: list[dict]) -> str:
    end = final(msgs)
    assert end["action"] == "done", (end, logs(msgs)[-30:])
    [art] = [a for a in end["payload"]["artifacts"] if a["name"] == "out.txt"]
    return http_get(art["url"])[1].decode()


def ran_npm_ci(msgs: list[dict]) -> bool:
    return "$ npm ci" in logs(msgs)


def reused(msgs: list[dict]) -> bool:
    return any(line.startswith(REUSED) and line.endswith("(npm ci skipped)") for line in logs(msgs))


def entries(data: Path, token: str = TOKEN) -> list[Path]:
    return sorted(install_cache.entries(install_cache.owner_root(data / "cache", protocol.token_hash(token))))


def all_entries(data: Path) -> list[Path]:
    return sorted(p for p in (data / "cache" / "installs").glob("*/*") if len(p.name) == 64 and p.is_dir())


def tarballs_fetched(npm: StaticNpmRegistry, since: int) -> list[str]:
    return [path for path, _ in npm.requests[since:] if path.endswith(".tgz")]


def test_an_unchanged_lock_reuses_node_modules_and_the_changed_source_is_built(
        server: ServerProc, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    first = publish(server, new_repo(git_daemon, project(registry, "reuse", {"ic-dep": "1.0.0"}, "first")))
    assert output(first) == "dep 1.0.0 | first"
    assert ran_npm_ci(first) and not reused(first)
    assert any(line.startswith("install cache: stored node_modules for package-lock.json") for line in logs(first))

    seen = len(registry.requests)
    second = publish(server, new_repo(git_daemon, project(registry, "reuse", {"ic-dep": "1.0.0"}, "second")))
    assert output(second) == "dep 1.0.0 | second", "the build did not run on the changed source"
    assert reused(second), logs(second)
    assert not ran_npm_ci(second)
    assert "> node build.js" in "\n".join(logs(second)), "the build step did not run"
    assert tarballs_fetched(registry, seen) == []


def test_a_changed_lock_runs_npm_ci(server: ServerProc, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    one = publish(server, new_repo(git_daemon, project(registry, "relock", {"ic-dep": "1.0.0"}, "one")))
    assert output(one) == "dep 1.0.0 | one" and ran_npm_ci(one)
    two = publish(server, new_repo(git_daemon, project(registry, "relock", {"ic-dep": "1.1.0"}, "two")))
    assert output(two) == "dep 1.1.0 | two"
    assert ran_npm_ci(two) and not reused(two), logs(two)


def test_another_token_never_gets_a_tokens_entry(
        server: ServerProc, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    mine = publish(server, new_repo(git_daemon, project(registry, "tenant", {"ic-dep": "1.0.0"}, "mine")))
    assert output(mine) == "dep 1.0.0 | mine" and ran_npm_ci(mine)
    theirs = publish(server, new_repo(git_daemon, project(registry, "tenant", {"ic-dep": "1.0.0"}, "theirs")),
                     token=OTHER_TOKEN)
    assert output(theirs) == "dep 1.0.0 | theirs"
    assert ran_npm_ci(theirs) and not reused(theirs), logs(theirs)
    again = publish(server, new_repo(git_daemon, project(registry, "tenant", {"ic-dep": "1.0.0"}, "again")),
                    token=OTHER_TOKEN)
    assert output(again) == "dep 1.0.0 | again" and reused(again), "the other token's own entry was not used"


def test_no_cache_runs_npm_ci_even_with_an_entry(
        server: ServerProc, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    files = project(registry, "nocache", {"ic-dep": "1.0.0"}, "a")
    assert ran_npm_ci(publish(server, new_repo(git_daemon, files)))
    files = project(registry, "nocache", {"ic-dep": "1.0.0"}, "b")
    msgs = publish(server, new_repo(git_daemon, files), noCache=True)
    assert output(msgs) == "dep 1.0.0 | b"
    assert ran_npm_ci(msgs) and not reused(msgs), logs(msgs)


def test_what_a_build_writes_into_node_modules_never_reaches_the_next_build(
        server: ServerProc, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    """The build reads the dependency, then rewrites it and adds a file next to it (which works,
    as after `npm ci`: the restored tree is the build's own copy). The entry was stored before
    the build ran and no build can see it: the next builds read the original again."""
    installs = server.data_dir / "cache" / "installs"
    build_js = ("const fs = require('fs'); fs.mkdirSync('dist');\n"
                "const dep = require.resolve('ic-dep');\n"
                "fs.writeFileSync('dist/out.txt', fs.readFileSync(dep, 'utf8') + ' | ' + LINE);\n"
                "fs.writeFileSync(dep, \"module.exports = 'poisoned';\\n\");\n"
                "fs.writeFileSync(require('path').dirname(dep) + '/extra.js', 'planted');\n"
                "console.log('wrote into node_modules');\n"
                f"console.log('install cache visible: ' + fs.existsSync({json.dumps(str(installs))}));\n")
    outputs = []
    for i, line in enumerate(("one", "two", "three")):
        files = project(registry, "poison", {"ic-dep": "1.0.0"}, line, build_js=f"const LINE = '{line}';\n" + build_js)
        msgs = publish(server, new_repo(git_daemon, files))
        outputs.append(output(msgs))
        assert "wrote into node_modules" in logs(msgs)
        assert "install cache visible: false" in logs(msgs)
        assert reused(msgs) == (i > 0), logs(msgs)
    assert outputs == [f"module.exports = 'dep 1.0.0';\n | {line}" for line in ("one", "two", "three")]
    [entry] = [e for e in entries(server.data_dir) if (e / "node_modules" / "ic-dep").is_dir()
               and "poison" in (e / "node_modules" / ".package-lock.json").read_text()]
    dep = entry / "node_modules" / "ic-dep"
    assert (dep / "index.js").read_text() == "module.exports = 'dep 1.0.0';\n"
    assert not (dep / "extra.js").exists()
    if os.geteuid() == 0:  # the build uid owns its copy, never the entry
        assert {p.lstat().st_uid for p in entry.rglob("*")} == {0}


def test_the_least_recently_used_entry_is_evicted_past_the_cache_quota(
        tmp_path: Path, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    """Each entry holds ~4 MiB and the npm cache ~3 MiB per package: after A and B the token holds
    ~14 MiB, over the 11 MiB quota; A's entry is the least recently used and goes, B's stays."""
    with server_for(tmp_path / "data", registry, **{"cache-max-bytes": "11M"}) as srv:
        a = publish(srv, new_repo(git_daemon, project(registry, "qa", {"ic-big-a": "1.0.0"}, "a1")))
        assert output(a) == "a | a1" and ran_npm_ci(a)
        [entry_a] = all_entries(srv.data_dir)
        b = publish(srv, new_repo(git_daemon, project(registry, "qb", {"ic-big-b": "1.0.0"}, "b1")))
        assert output(b) == "b | b1" and ran_npm_ci(b)
        left = all_entries(srv.data_dir)
        assert entry_a not in left, "the least recently used entry was not evicted"
        assert len(left) == 1, left
        assert not install_cache.cache_quota.marker(entry_a).exists(), "the evicted entry's marker is left"
        b2 = publish(srv, new_repo(git_daemon, project(registry, "qb", {"ic-big-b": "1.0.0"}, "b2")))
        assert output(b2) == "b | b2" and reused(b2), "the recently used entry was evicted"
        a2 = publish(srv, new_repo(git_daemon, project(registry, "qa", {"ic-big-a": "1.0.0"}, "a2")))
        assert output(a2) == "a | a2" and ran_npm_ci(a2) and not reused(a2)


def test_a_server_killed_while_storing_leaves_no_entry_that_is_read(
        tmp_path: Path, registry: StaticNpmRegistry, git_daemon: GitDaemon) -> None:
    """SIGKILL the server once the store's temporary exists: after a restart the next publish
    runs `npm ci`, stores a complete entry and removes the dead server's temporary."""
    data = tmp_path / "data"
    installs = data / "cache" / "installs"
    srv = server_for(data, registry).start()
    try:
        with Client(srv.url, TOKEN) as c:
            files = project(registry, "killed", {"ic-many": "1.0.0"}, "one")
            ack = c.publish(name="demo", version="1.0.0", source="git", repo=new_repo(git_daemon, files), ref="main",
                            buildCmd=["npm", "run", "build"], prod=False, force=False, timeout=300)
            assert ack["ok"], ack
            deadline = time.monotonic() + 240
            temps: list[Path] = []
            while not temps:
                assert time.monotonic() < deadline, "the store never started"
                assert not all_entries(data), "the store finished before the server was killed"
                temps = [t for t in installs.glob(f"*/{install_cache.TEMP_PREFIX}*") if (t / "node_modules").is_dir()]
                time.sleep(0.002)
            srv.stop(signal.SIGKILL)
        assert srv.proc is not None and srv.proc.returncode == -signal.SIGKILL
    finally:
        srv.stop()
    assert [t for t in temps if t.exists()] == temps, "no temporary was left: the store was not interrupted"
    assert all_entries(data) == []
    copied = sum(1 for _ in temps[0].rglob("*"))
    assert copied < MANY_FILES, "the temporary is complete: the kill came too late to test anything"

    with server_for(data, registry) as srv:
        msgs = publish(srv, new_repo(git_daemon, project(registry, "killed", {"ic-many": "1.0.0"}, "two")))
        assert output(msgs) == f"{MANY_FILES} | two"
        assert ran_npm_ci(msgs) and not reused(msgs), logs(msgs)
        assert not any(t.exists() for t in temps), "the dead server's temporary was not removed"
        assert list(installs.glob(f"*/{install_cache.TEMP_PREFIX}*")) == []
        [entry] = all_entries(data)
        assert sum(1 for _ in (entry / "node_modules" / "ic-many" / "many").iterdir()) == MANY_FILES
        again = publish(srv, new_repo(git_daemon, project(registry, "killed", {"ic-many": "1.0.0"}, "three")))
        assert output(again) == f"{MANY_FILES} | three" and reused(again)
