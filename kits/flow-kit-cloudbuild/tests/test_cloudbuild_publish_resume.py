"""``flow publish`` following tasks: detach and attach, dropped connections, Ctrl-C, cancel.
Real CLI, real server (see cloudbuild_publish_support); the kit's hooks are
test_cloudbuild_publish_hooks.py's."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import repo_tests  # noqa: F401  (puts tests/ on sys.path)
from cloudbuild_publish_support import (
    BuildServer,
    assert_protocol_shape,
    error_lines,
    is_deployment_url,
    json_lines,
    make_site,
    needs_node,
    publish,
)
from tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def server(publish_server):
    """The publish tests' build server (cloudbuild_publish_support), not the server tests' one."""
    return publish_server


pytestmark = needs_node

SLOW = ("--source", "upload", "--build-cmd", "npm run slow")


def log_lines(message: dict) -> list[str]:
    """The output lines of one "log" message (the wire format joins a batch with newlines)."""
    return message["data"]["payload"]["message"].split("\n")


def seqs(messages: list[dict]) -> list[int]:
    return [m["meta"]["seq"] for m in messages]


def attach_json(flow, server, task_id: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return flow("publish", "--server", server.url, "--token", server.token, "--attach", task_id,
                "--json", cwd=cwd)


def test_detach_then_attach_replays_everything_from_seq_1(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="detach-site", slow_lines=15,
                        slow_interval_ms=50)

    detached = publish(flow, server, project, *SLOW, "--detach", "--json")

    assert detached.returncode == 0, detached.stderr
    task_id = json.loads(detached.stdout)["taskId"]

    attached = attach_json(flow, server, task_id, project)

    assert attached.returncode == 0, attached.stderr
    messages = json_lines(attached.stdout)
    assert_protocol_shape(messages)
    assert seqs(messages) == list(range(1, len(messages) + 1))
    assert {m["meta"]["taskId"] for m in messages} == {task_id}
    assert messages[0]["data"]["action"] == "queued"
    assert messages[-1]["data"]["action"] == "done"
    logs = [line for m in messages if m["data"]["action"] == "log" for line in log_lines(m)]
    assert [line for line in logs if line.startswith("slow line")] == [
        f"slow line {i}" for i in range(1, 16)]
    assert server.get(f"/api/tasks/{task_id}")["lastSeq"] == len(messages)

    # a finished task replays the same, and the human form ends with the deployment URL (the
    # build at its own origin, docs/cloud-build.md); the file list's URL is still named
    again = attach_json(flow, server, task_id, project)
    assert json_lines(again.stdout) == messages
    human = flow("publish", "--server", server.url, "--token", server.token,
                 "--attach", task_id, cwd=project)
    assert human.returncode == 0, human.stderr
    done = messages[-1]["data"]["payload"]
    assert is_deployment_url(done["deploymentUrl"], server.port)
    assert human.stdout.strip().splitlines()[-1] == done["deploymentUrl"]
    assert f"files: {done['artifactUrl']}" in human.stdout + human.stderr


def test_dropped_connection_resumes_without_loss_or_duplication(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="drop-site", slow_lines=40,
                        slow_interval_ms=50)
    proxy = TcpProxy(server.port)
    try:
        proc = flow.popen("publish", "--server", f"http://127.0.0.1:{proxy.port}",
                          "--token", server.token, *SLOW, "--json", cwd=project)
        received = []
        for line in proc.stdout:
            received.append(json.loads(line))
            slow = [line for m in received if m["data"]["action"] == "log"
                    for line in log_lines(m) if line.startswith("slow")]
            # a log message can carry a batch of lines (and a replay after a cut often does),
            # so the count is crossed, not hit: one cut after 5 lines, one after 20, mid-stream
            due = 1 if len(slow) >= 5 else 0
            due += 1 if len(slow) >= 20 else 0
            if proxy.cuts < due and received[-1]["data"]["action"] == "log":
                proxy.cut()  # every live connection dies mid-stream
        code = proc.wait(timeout=120)
        stderr = proc.stderr.read()
    finally:
        proxy.close()

    assert code == 0, stderr
    assert proxy.cuts == 2
    assert stderr.count("lost; reconnecting") == 2
    assert seqs(received) == list(range(1, len(received) + 1))
    assert received[-1]["data"]["action"] == "done"
    # exactly what the server stored, message for message
    task_id = received[0]["meta"]["taskId"]
    assert json_lines(attach_json(flow, server, task_id, project).stdout) == received


def test_ctrl_c_without_a_terminal_detaches_and_the_task_goes_on(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="sigint-site", slow_lines=30,
                        slow_interval_ms=50)
    proc = flow.popen("publish", "--server", server.url, "--token", server.token, *SLOW,
                      "--json", cwd=project)
    task_id = None
    for line in proc.stdout:
        message = json.loads(line)
        task_id = message["meta"]["taskId"]
        if message["data"]["action"] == "log" and "slow line 3" in log_lines(message):
            proc.send_signal(signal.SIGINT)
            break
    proc.stdout.read()
    code = proc.wait(timeout=60)
    stderr = proc.stderr.read()

    assert code == 130
    assert error_lines(stderr) == [
        f"flow: error: detached from task {task_id}; it keeps running on the server. "
        f"Follow it with: flow publish --attach {task_id}"]
    resumed = attach_json(flow, server, task_id, project)
    assert resumed.returncode == 0, resumed.stderr
    assert json_lines(resumed.stdout)[-1]["data"]["action"] == "done"


def test_cancel_a_running_task(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="cancel-site", slow_lines=600,
                        slow_interval_ms=50)
    detached = publish(flow, server, project, *SLOW, "--detach")
    assert detached.returncode == 0, detached.stderr
    task_id = detached.stdout.strip()

    cancelled = flow("publish", "--server", server.url, "--token", server.token,
                     "--cancel", task_id, cwd=project)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"task {task_id}: cancelled"
    followed = flow("publish", "--server", server.url, "--token", server.token,
                    "--attach", task_id, cwd=project)
    assert followed.returncode == 1
    assert len(error_lines(followed.stderr)) == 1
    assert f"task {task_id} was cancelled" in followed.stderr
    assert "slow line 600" not in followed.stdout


def test_server_restart_mid_stream_resumes_after_the_last_seq(flow, tmp_path):
    """The server dies mid-build without a last word (SIGKILL) and comes back on the same port:
    the client reconnects, re-attaches after the last seq it printed, and ends with the task's
    real outcome (the restart failed the running build) with no message lost or repeated."""
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path / "data").start()
    project = make_site(tmp_path / "site", name="restart-site", slow_lines=400,
                        slow_interval_ms=50)
    try:
        proc = flow.popen("publish", "--server", srv.url, "--token", srv.token, *SLOW,
                          "--json", cwd=project)
        received = []
        for line in proc.stdout:
            received.append(json.loads(line))
            if received[-1]["data"]["action"] == "log" and "slow line 3" in log_lines(received[-1]):
                srv.proc.kill()  # a crash: no final message reaches the client
                srv.proc.wait()
                srv.start()
        code = proc.wait(timeout=120)
        stderr = proc.stderr.read()

        assert code == 1, stderr
        assert "lost; reconnecting" in stderr and "reconnected; resuming after message" in stderr
        assert seqs(received) == list(range(1, len(received) + 1))
        assert received[-1]["data"]["action"] == "failed"
        assert "the server restarted while this task was in build" in \
            received[-1]["data"]["payload"]["message"]
        errors = error_lines(stderr)
        assert len(errors) == 1 and "step 'build'" in errors[0]
        task_id = received[0]["meta"]["taskId"]
        assert json_lines(attach_json(flow, srv, task_id, project).stdout) == received
    finally:
        srv.stop()


def test_server_stop_ends_the_follow_with_the_servers_last_word(flow, tmp_path):
    """SIGTERM stops the server: it fails the running build and sends that final message
    before it closes the connections; the client prints it and exits with that outcome at
    once, instead of trying to reconnect for a minute and saying the task keeps running."""
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path / "data").start()
    project = make_site(tmp_path / "site", name="stop-site", slow_lines=600,
                        slow_interval_ms=50)
    proc = None
    try:
        proc = flow.popen("publish", "--server", srv.url, "--token", srv.token, *SLOW,
                          "--json", cwd=project)
        received = []
        stopped_at = None
        for line in proc.stdout:
            received.append(json.loads(line))
            if stopped_at is None and received[-1]["data"]["action"] == "log" \
                    and "slow line 3" in log_lines(received[-1]):
                srv.proc.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
        code = proc.wait(timeout=120)
        took = time.monotonic() - stopped_at
        stderr = proc.stderr.read()
        srv.proc.wait(timeout=30)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        srv.stop()

    assert took < 8, f"the client exited {took:.1f} s after the server's SIGTERM: {stderr}"
    assert code == 1, stderr
    assert seqs(received) == list(range(1, len(received) + 1))
    last = received[-1]["data"]
    assert last["action"] == "failed"
    assert last["payload"]["message"] == \
        "the server stopped while this task was in build; publish again"
    assert error_lines(stderr) == [
        "flow: error: the build failed at step 'build': the server stopped while this task was "
        f"in build; publish again. See the log above (again with: flow publish --attach "
        f"{received[0]['meta']['taskId']})"]
    assert "keeps running" not in stderr and "reconnect" not in stderr


def test_task_timeout_ends_non_zero_with_a_fix(flow, server, tmp_path):
    project = make_site(tmp_path / "site", name="timeout-site", slow_lines=600,
                        slow_interval_ms=50)

    result = publish(flow, server, project, *SLOW, "--timeout", "3")

    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "timed out during step 'build'" in errors[0]
    assert "--timeout SECONDS" in errors[0]
