"""The release index's rules on the embedded implementation (``storage/releases.py``): names as
DNS labels, ownership, the same version needing force, concurrent changes, the bounded history,
and the index of older servers still honoured after an upgrade. The same rules run in Redis mode
(test_cloudbuild_redis_deployments.py) and end to end (test_cloudbuild_deployments.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
import repo_tests  # noqa: F401  (puts the kit's src on sys.path)

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.errors import RequestError
from flow_kit_cloudbuild.server.storage.releases import (
    HISTORY_LIMIT,
    LocalReleases,
    branch_label,
    dns_label,
    is_label,
    project_label,
)

A, B = "a" * 64, "b" * 64
T1, T2, T3 = "1" * 24, "2" * 24, "3" * 24


@pytest.mark.parametrize(("name", "label"), [
    ("my-site", "my-site"), ("My_Site", "my-site"), ("my.site", "my-site"), ("@acme/web", "acme-web"),
    ("--a--b--", "a-b"), ("___", "x"), ("0123456789abcdef01234567", "0123456789abcdef01234567-site"),
])
def test_project_labels(name, label):
    assert project_label(name) == label and is_label(label)


def test_long_names_keep_a_hash_and_fit_one_label():
    long_a, long_b = "x" * 50 + "a", "x" * 50 + "b"
    assert project_label(long_a) != project_label(long_b)
    assert len(project_label(long_a)) == 40 and is_label(project_label(long_a))
    project = project_label(long_a)
    branch = branch_label(project, "feature/" + "y" * 80)
    assert len(f"{project}--{branch}") <= 63 and is_label(f"{project}--{branch}")
    assert "--" not in dns_label("a--b//c")


def run(coro):
    return asyncio.run(coro)


def test_ownership_force_and_history(tmp_path):
    r = LocalReleases(tmp_path / "releases")

    async def scenario():
        moved = await r.record("Site", "1.0.0", T1, A, prod=True, force=False, branch="main")
        assert moved["prodChanged"] and moved["branch"] == "main" and moved["prod"] is None
        with pytest.raises(RequestError) as same:  # the same version needs force
            await r.check("Site", "1.0.0", A, prod=True, force=False)
        assert same.value.code == protocol.ERROR_EXISTS
        with pytest.raises(RequestError) as taken:  # another token, another spelling, same label
            await r.check("site", "2.0.0", B, prod=True, force=True)
        assert taken.value.code == protocol.ERROR_NAME_TAKEN
        with pytest.raises(RequestError):
            await r.record("SITE", "2.0.0", T2, B, prod=True, force=True, branch=None)
        with pytest.raises(RequestError):
            await r.promote("SITE", "1.0.0", T1, B)
        # another token's branch build deploys but moves no alias
        moved = await r.record("site", "3.0.0", T3, B, prod=False, force=False, branch="main")
        assert moved["branch"] is None and "belongs to another token" in moved["skipped"]
        assert await r.resolve("site", "main") == T1
        await r.record("Site", "2.0.0", T2, A, prod=True, force=False, branch=None)
        assert await r.resolve("site", None) == T2
        assert await r.promote("Site", "1.0.0", T1, A) == T2
        assert await r.resolve("site", None) == T1
        project = await r.get("site")
        assert [(e["taskId"], e["action"]) for e in project["history"]] == [
            (T1, "release"), (T2, "release"), (T1, "promote")]
        assert await r.task_ids() == {T1, T2}
    run(scenario())
    # written atomically, one file per label, readable by a new process
    data = json.loads((tmp_path / "releases" / "site.json").read_text())
    assert data["owner"] == A and data["prod"] == T1
    assert run(LocalReleases(tmp_path / "releases").resolve("site", None)) == T1


def test_concurrent_changes_are_not_lost_and_history_is_bounded(tmp_path):
    r = LocalReleases(tmp_path / "releases")

    async def scenario():
        await r.record("busy", "1", T1, A, prod=True, force=False, branch=None)
        await asyncio.gather(*(r.promote("busy", "1", (T1, T2)[i % 2], A) for i in range(HISTORY_LIMIT + 50)))
        project = await r.get("busy")
        assert len(project["history"]) == HISTORY_LIMIT
        assert project["prod"] == project["history"][-1]["taskId"]
    run(scenario())


def test_the_index_of_older_servers_is_still_honoured(tmp_path):
    legacy = tmp_path / "artifacts" / "releases.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"old-site\n1.0.0": T1}))
    r = LocalReleases(tmp_path / "releases", legacy=legacy)

    async def scenario():
        assert T1 in await r.task_ids()  # retention keeps it
        with pytest.raises(RequestError) as same:
            await r.check("old-site", "1.0.0", A, prod=True, force=False)
        assert same.value.code == protocol.ERROR_EXISTS
        with pytest.raises(RequestError):
            await r.record("old-site", "1.0.0", T2, A, prod=True, force=False, branch=None)
        await r.record("old-site", "1.0.0", T2, A, prod=True, force=True, branch=None)
        assert (await r.get("old-site"))["versions"]["1.0.0"] == T2
    run(scenario())


def test_labels_that_are_not_labels_resolve_to_nothing(tmp_path):
    r = LocalReleases(tmp_path / "releases")
    for label in ("../etc", "a/b", "", "x" * 64, "-a", "a-", "A"):
        assert run(r.resolve(label, None)) is None and run(r.get(label)) is None
