"""flow-cloudbuild-server end to end: real server on loopback, real git daemon, real npm and
Python builds. The pipeline, messages, artifacts, caches, release rules and HTTP routes."""

from __future__ import annotations

import io
import json
import time

from cloudbuild_server_support import (
    OTHER_TOKEN,
    TOKEN,
    Client,
    actions,
    final,
    git,
    http_get,
    http_request,
    logs,
    new_repo,
    npm_project,
    protocol,
    python_project,
    tar_gz,
    upload,
)


def publish_git(client: Client, url: str, **extra) -> dict:
    payload = {"name": "demo", "version": "1.0.0", "source": "git", "repo": url, "ref": "main",
               "buildCmd": ["npm", "run", "build"], "prod": False, "force": False, "timeout": 120}
    payload.update(extra)
    return client.publish(**payload)


def run_git(client: Client, url: str, **extra) -> list[dict]:
    ack = publish_git(client, url, **extra)
    assert ack["ok"], ack
    return client.wait(ack["taskId"])


def test_npm_build_from_git_runs_every_step_and_serves_the_artifact(client, server, git_daemon):
    url = new_repo(git_daemon, npm_project())
    msgs = run_git(client, url)
    assert actions(msgs) == ["queued", "prepare", "download", "install", "build", "publish", "done"]
    for m in msgs:  # the fixed message shape
        assert set(m) == {"meta", "data"} and set(m["meta"]) == {"timestamp", "taskId", "seq"}
        assert set(m["data"]) == {"action", "payload"} and isinstance(m["data"]["payload"]["message"], str)
    assert "build done" in logs(msgs)
    log_msgs = [m for m in msgs if m["data"]["action"] == "log"]
    assert all(m["data"]["payload"]["stream"] in ("stdout", "stderr") for m in log_msgs)
    assert any(m["data"]["payload"]["step"] == "install" for m in log_msgs)
    done = final(msgs)["payload"]
    assert done["artifactUrl"].startswith(server.url) and done["artifactUrl"].endswith("/")
    [art] = done["artifacts"]
    assert art["name"] == "app.js"
    status, body = http_get(art["url"])
    assert status == 200 and body == b'console.log("built");\n' and art["size"] == len(body)
    status, listing = http_get(done["artifactUrl"])
    assert status == 200 and json.loads(listing)[0]["name"] == "app.js"
    status, record = http_get(f"{server.url}/api/tasks/{msgs[0]['meta']['taskId']}", token=TOKEN)
    record = json.loads(record)
    assert status == 200 and record["state"] == "done" and record["lastSeq"] == len(msgs)
    assert record["artifacts"][0]["name"] == "app.js" and record["error"] is None
    assert set(record) == set(protocol.TASK_FIELDS)
    assert "tokenHash" not in record and "request" not in record


def test_second_publish_fetches_into_the_cached_mirror(client, server, git_daemon):
    url = new_repo(git_daemon, npm_project())
    first = run_git(client, url)
    second = run_git(client, url)
    assert final(first)["action"] == final(second)["action"] == "done"
    assert any("into the mirror cache" in line for line in logs(first))
    assert any("cached mirror" in line for line in logs(second))
    assert not any("into the mirror cache" in line for line in logs(second))


def test_new_commits_are_built_after_the_mirror_exists(client, git_daemon):
    from cloudbuild_server_support import commit_tree

    url = new_repo(git_daemon, npm_project())
    run_git(client, url)
    repo = git_daemon.base / url.rsplit("/", 1)[1]
    commit_tree(repo, {"build.js": "require('fs').mkdirSync('dist');"
                                   "require('fs').writeFileSync('dist/v2.txt', 'two');"})
    msgs = run_git(client, url)
    assert [a["name"] for a in final(msgs)["payload"]["artifacts"]] == ["v2.txt"]


def test_a_commit_or_tag_can_be_built(client, git_daemon):
    from cloudbuild_server_support import commit_tree, git

    url = new_repo(git_daemon, npm_project())
    repo = git_daemon.base / url.rsplit("/", 1)[1]
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    commit_tree(repo, {"build.js": "process.exit(3)"})
    assert final(run_git(client, url, ref=first))["action"] == "done"
    assert final(run_git(client, url, ref="v1"))["action"] == "done"
    assert final(run_git(client, url, ref="main"))["action"] == "failed"


def test_failed_build_stops_the_pipeline_and_names_the_step(client, git_daemon):
    url = new_repo(git_daemon, npm_project(build_js="console.error('boom'); process.exit(7);"))
    msgs = run_git(client, url)
    end = final(msgs)
    assert end["action"] == "failed" and end["payload"]["step"] == "build"
    assert "exited with status 1" in end["payload"]["message"] or "status 7" in end["payload"]["message"]
    assert "publish" not in actions(msgs)
    assert any(m["data"]["payload"].get("stream") == "stderr" and "boom" in protocol.log_lines(m)
               for m in msgs if m["data"]["action"] == "log")


def test_failed_install_stops_before_the_build(client, git_daemon):
    files = npm_project()
    files["package-lock.json"] = "{ not json"
    msgs = run_git(client, new_repo(git_daemon, files))
    assert final(msgs)["action"] == "failed" and final(msgs)["payload"]["step"] == "install"
    assert "build" not in actions(msgs)


def test_unknown_ref_fails_in_download(client, git_daemon):
    msgs = run_git(client, new_repo(git_daemon, npm_project()), ref="no-such-branch")
    assert final(msgs)["payload"]["step"] == "download"
    assert "not found" in final(msgs)["payload"]["message"]


def test_npm_run_of_a_missing_script_is_refused_after_download_before_install(client, git_daemon):
    msgs = run_git(client, new_repo(git_daemon, npm_project()), buildCmd=["npm", "run", "deploy"])
    end = final(msgs)
    assert end["action"] == "failed" and end["payload"]["step"] == "download"
    assert "refused" in end["payload"]["message"] and "deploy" in end["payload"]["message"]
    assert "install" not in actions(msgs)


def test_default_build_command_is_the_build_script(client, git_daemon):
    # noCache: another test of this module built the same project with the same command
    msgs = run_git(client, new_repo(git_daemon, npm_project()), buildCmd=None, noCache=True)
    assert final(msgs)["action"] == "done"
    assert "$ npm run build" in logs(msgs)


def test_build_without_output_dir_fails_in_publish(client, git_daemon):
    msgs = run_git(client, new_repo(git_daemon, npm_project(build_js="console.log('no output')")))
    assert final(msgs)["payload"]["step"] == "publish"
    assert "dist/" in final(msgs)["payload"]["message"]


def test_python_project_builds_with_uv_offline(client, git_daemon):
    msgs = run_git(client, new_repo(git_daemon, python_project()), name="pydemo", version="0.1.0",
                   buildCmd=["uv", "build"])
    assert final(msgs)["action"] == "done", logs(msgs)[-20:]
    names = sorted(a["name"] for a in final(msgs)["payload"]["artifacts"])
    assert names == ["pydemo-0.1.0-py3-none-any.whl", "pydemo-0.1.0.tar.gz"]
    wheel = next(a for a in final(msgs)["payload"]["artifacts"] if a["name"].endswith(".whl"))
    status, body = http_get(wheel["url"])
    import zipfile
    assert status == 200 and "pydemo/__init__.py" in zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert any("Python venv" in m["data"]["payload"]["message"] for m in msgs if m["data"]["action"] == "install")


def test_uploaded_source_is_built(client, server):
    files = {k: v.encode() for k, v in npm_project().items()}
    status, body = upload(server, tar_gz(files))
    assert status == 201
    ack = client.publish(name="demo", version="1.0.0", source="upload", uploadId=body["uploadId"],
                         buildCmd=["npm", "run", "build"], prod=False, force=False)
    assert ack["ok"], ack
    msgs = client.wait(ack["taskId"])
    assert final(msgs)["action"] == "done"


def test_upload_of_another_token_cannot_be_used(server):
    status, body = upload(server, tar_gz({"package.json": b"{}"}), token=OTHER_TOKEN)
    with Client(server.url, TOKEN) as c:
        ack = c.publish(name="demo", version="1.0.0", source="upload", uploadId=body["uploadId"], buildCmd=None)
    assert ack == {"ok": False, "error": {"code": "forbidden", "message": ack["error"]["message"]}}


def test_prod_republish_needs_force(client, git_daemon):
    url = new_repo(git_daemon, npm_project())
    version = f"9.{time.time_ns()}"
    assert final(run_git(client, url, version=version, prod=True))["action"] == "done"
    ack = publish_git(client, url, version=version, prod=True)
    assert ack["ok"] is False and ack["error"]["code"] == "exists"
    assert version in ack["error"]["message"]
    assert final(run_git(client, url, version=version, prod=True, force=True))["action"] == "done"
    # not prod: no release rule
    assert final(run_git(client, url, version=version))["action"] == "done"


def test_attach_replays_after_seq_then_live_without_gaps_or_duplicates(server, git_daemon):
    url = new_repo(git_daemon, npm_project(build_js=(
        "const fs = require('fs');\n"
        "let i = 0; const t = setInterval(() => { console.log('tick ' + (++i)); if (i === 40) {"
        " clearInterval(t); fs.mkdirSync('dist'); fs.writeFileSync('dist/a.txt', 'a'); } }, 20);\n")))
    with Client(server.url) as publisher:
        ack = publish_git(publisher, url)
        task_id = ack["taskId"]
        deadline = time.monotonic() + 60
        while not any("tick 5" == line for line in logs(publisher.ordered(task_id))):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with Client(server.url) as watcher:  # attaches mid-build from seq 3 on
            attached = watcher.call("attach", {"taskId": task_id, "afterSeq": 3})
            assert attached["ok"] and attached["task"]["taskId"] == task_id
            deadline = time.monotonic() + 60
            while True:  # everything from seq 4 to the final message: the last can overtake others
                got = watcher.ordered(task_id)
                seqs = [m["meta"]["seq"] for m in got]
                if got and got[-1]["data"]["action"] == "done" and seqs == list(range(4, seqs[-1] + 1)):
                    break
                assert time.monotonic() < deadline, seqs
                time.sleep(0.02)
            assert not watcher.duplicates
        full = publisher.wait(task_id)
    assert seqs == list(range(4, len(full) + 1))
    assert [f"tick {i}" for i in range(1, 41)] == [x for x in logs(full) if x.startswith("tick")]
    # attaching after the end replays everything, then nothing more
    with Client(server.url) as late:
        assert late.call("attach", {"taskId": task_id, "afterSeq": 0})["ok"]
        assert [m["meta"]["seq"] for m in late.wait(task_id)] == list(range(1, len(full) + 1))
        assert late.ordered(task_id) == full


def test_many_concurrent_tasks_all_finish(server, git_daemon):
    url = new_repo(git_daemon, npm_project())
    with Client(server.url) as c:
        ids = [publish_git(c, url)["taskId"] for _ in range(6)]
        ends = [final(c.wait(t))["action"] for t in ids]
    assert ends == ["done"] * 6


def test_http_routes_answer_errors_as_json(server):
    assert http_get(server.url + "/healthz")[0] == 200
    assert json.loads(http_get(server.url + "/healthz")[1])["ok"] is True
    assert http_get(server.url + "/api/tasks/" + "0" * 24)[0] == 401
    assert http_get(server.url + "/api/tasks/" + "0" * 24, token=TOKEN)[0] == 404
    assert http_get(server.url + "/api/tasks/../../etc/passwd", token=TOKEN)[0] == 404
    assert http_get(server.url + "/artifacts/" + "0" * 24 + "/")[0] == 404
    assert http_get(server.url + "/nope")[0] == 404
    status, body = http_request("DELETE", server.url + "/healthz")
    assert status == 405 and json.loads(body)["error"]["code"] == "bad-request"


def test_fast_output_arrives_complete_in_order_and_batched(client, git_daemon):
    """20,000 lines printed at once: every line, in order, in far fewer messages than lines."""
    build_js = ("const fs = require('fs');\n"
                "let out = [];\n"
                "for (let i = 1; i <= 20000; i++) out.push('line ' + i);\n"
                "process.stdout.write(out.join('\\n') + '\\n');\n"
                "fs.mkdirSync('dist', {recursive: true});\n"
                "fs.writeFileSync('dist/app.js', '1');\n")
    url = new_repo(git_daemon, npm_project(build_js=build_js))
    msgs = run_git(client, url)
    assert final(msgs)["action"] == "done"
    lines = [x for x in logs(msgs) if x.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, 20001)]
    build_logs = [m for m in msgs if m["data"]["action"] == "log"
                  and m["data"]["payload"]["step"] == "build"]
    assert len(build_logs) < 2000
    assert all(m["data"]["payload"]["lines"] == len(protocol.log_lines(m)) for m in build_logs)


def test_a_git_build_gets_the_commits_files_and_no_repository(client, git_daemon):
    """The files are read out of the mirror (read-tree -u, a throw-away index): the build sees
    them with their modes and links, and neither a .git nor the index beside its directory."""
    files = npm_project(build_js=(
        "const fs = require('fs'); fs.mkdirSync('dist');\n"
        "const parent = fs.readdirSync('..').filter((n) => n.includes('index'));\n"
        "fs.writeFileSync('dist/index.html', JSON.stringify({git: fs.existsSync('.git'), parent,\n"
        "  exec: (fs.statSync('run.sh').mode & 0o111) !== 0, link: fs.readlinkSync('latest')}));\n"))
    files["run.sh"] = "#!/bin/sh\necho hi\n"
    url = new_repo(git_daemon, files)
    repo = git_daemon.base / url.rsplit("/", 1)[-1]  # the repository the daemon serves (with a work tree)
    (repo / "run.sh").chmod(0o755)
    (repo / "latest").symlink_to("run.sh")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec and link")
    msgs = run_git(client, url, noCache=True)
    assert final(msgs)["action"] == "done", logs(msgs)[-10:]
    [index] = [a for a in final(msgs)["payload"]["artifacts"] if a["name"] == "index.html"]
    assert json.loads(http_get(index["url"])[1]) == {"git": False, "parent": [], "exec": True, "link": "run.sh"}
