"""Redis mode with object storage and no shared directory (issue 19, item 3): a gateway and two
workers, each on its own data dir, a real redis-server and a real SeaweedFS; uploads and
artifacts only in the bucket (``--store s3://...``). ``flow publish`` uploads its source through
the gateway, a worker fetches it from the bucket, the gateway serves the result from the bucket;
a worker killed mid-build leaves the task to the other, which fetches the same upload again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cloudbuild_publish_support import make_site, needs_node, open_deployment
from cloudbuild_redis_support import Cluster, kill, needs_redis, wait_for, worker_pid
from cloudbuild_server_support import TOKEN, Client, final, http_get, http_request, logs, npm_project, tar_gz

pytestmark = [needs_redis, needs_node]

SLOW_JS = ("const fs = require('fs');\nlet i = 0;\n"
           "const t = setInterval(() => { i += 1; console.log('slow line ' + i);\n"
           "  if (i >= %d) { clearInterval(t); fs.mkdirSync('dist', {recursive: true});\n"
           "    fs.writeFileSync('dist/index.html', '<h1>slow</h1>'); } }, %d);\n")


def _files_under(root: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(pattern))


def test_redis_mode_with_s3_and_no_shared_dir(flow, tmp_path, seaweed, redis_server):
    bucket = seaweed.bucket("flow-redis")
    prefix = f"run-{time.time_ns()}"
    cluster = Cluster(tmp_path / "cluster", redis_server, shared_dir=False, env=seaweed.env,
                      extra=("--store", f"s3://{bucket}/{prefix}"))
    try:
        gateway = cluster.add("gateway")
        workers = {p.proc.pid: p for p in (cluster.add("worker"), cluster.add("worker"))}

        # 1. flow publish (the real CLI) uploads the source; a worker builds it from the bucket
        site = make_site(tmp_path / "site", name="s3-site")
        done = flow("publish", "--server", gateway.url, "--token", TOKEN, "--source", "upload",
                    "--build-cmd", "npm run build", "--json", cwd=site)
        assert done.returncode == 0, done.stderr
        last = json.loads(done.stdout.splitlines()[-1])
        assert last["data"]["action"] == "done", last
        task = last["meta"]["taskId"]
        keys = seaweed.keys(bucket, f"{prefix}/")
        assert f"{prefix}/artifacts/{task}/files/index.html" in keys, keys
        uploads = [k for k in keys if k.startswith(f"{prefix}/uploads/")]
        # the sources went when the build ended; what says which task used the upload stayed
        assert sorted(k.rsplit(".", 1)[-1] for k in uploads) == ["json", "task"], uploads
        assert seaweed.client().get_object(Bucket=bucket, Key=[k for k in uploads if k.endswith(".task")][0])[
            "Body"].read().decode() == task
        # 2. the gateway serves it from the bucket: the artifact route and the deployment's origin
        assert http_get(f"{gateway.url}/artifacts/{task}/index.html") == (200, b"<h1>1.0.0</h1>\n")
        status, _, body = open_deployment(f"http://{task}.localhost:{gateway.port}/")
        assert (status, body) == (200, b"<h1>1.0.0</h1>\n")

        # 3. a worker killed mid-build: the other fetches the same upload and finishes the task
        files = npm_project(name="s3-victim", scripts={"build": "node build.js", "slow": "node slow.js"})
        files["slow.js"] = SLOW_JS % (30, 100)
        status, raw = http_request("POST", gateway.url + "/api/uploads", body=tar_gz(files), token=TOKEN,
                                   headers={"Content-Type": "application/gzip"})
        assert status == 201, raw
        with Client(gateway.url) as client:
            ack = client.publish(name="s3-victim", version="1.0.0", source="upload",
                                 uploadId=json.loads(raw)["uploadId"], buildCmd=["npm", "run", "slow"])
            assert ack["ok"], ack
            victim = ack["taskId"]
            msgs = wait_for(lambda: (m := client.ordered(victim)) and "slow line 3" in logs(m) and m, 60,
                            "slow line 3 in the log")
            [first] = worker_pid(msgs)
            kill(workers[first])
            msgs = client.wait(victim, timeout=cluster.heartbeat + 60)
            # the upload stays single-use with its claim in the bucket
            again = client.publish(name="s3-victim", version="1.0.1", source="upload",
                                   uploadId=json.loads(raw)["uploadId"], buildCmd=["npm", "run", "slow"])
            assert again["ok"] is False and again["error"]["code"] == "refused", again
            assert f"already used by task {victim}" in again["error"]["message"]
        assert final(msgs)["action"] == "done", final(msgs)
        assert worker_pid(msgs) == [first, next(pid for pid in workers if pid != first)]
        assert any("stopped responding" in line for line in logs(msgs))
        assert http_get(f"{gateway.url}/artifacts/{victim}/index.html") == (200, b"<h1>slow</h1>")

        # nothing was shared through a directory: no shared dir, no upload or artifact on any disk
        assert not cluster.shared.exists()
        for proc in cluster.procs:
            data = proc.data_dir
            assert not (data / ".flowcb-probes").exists()
            assert _files_under(data, "*.tar.gz") == [], data
            assert not (data / "artifacts" / task).exists() and not (data / "artifacts" / victim).exists()
    finally:
        cluster.stop()
