"""Object storage (issue 19, item 3): what storing a build through S3ObjectStore costs over the
client library used directly.

One command (`.venv/bin/python benchmarks/bench_storage.py`) starts a real SeaweedFS on loopback
(``weed server ... -s3``, free ports: kits/flow-kit-cloudbuild/tests/seaweed_support.py), writes
a 20 MB, 500-file site (random bytes, sizes from 1 KB to ~200 KB, nested folders), then runs
``--rounds`` interleaved rounds of:

* **server**: what the publish step does with ``--store s3://...``:
  ``ObjectArtifactStore(S3ObjectStore(...)).put(task, files)`` (clear the task's prefix, open every
  file and check the quota on its size, store each file capped at that size with its content
  type, 16 at once, then the manifest);
* **boto3**: the same 500 files with ``client.upload_file`` from a thread pool of the same width
  (16) on a client with the same connection pool: the upload done directly with the library.

Each round uses a fresh prefix; the order alternates. Prints the medians, the ratio
server / boto3 (target <= 1.5x) and ``RESULT {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
KIT = HERE.parent / "kits" / "flow-kit-cloudbuild"
sys.path.insert(0, str(KIT / "tests"))
sys.path.insert(0, str(KIT / "src"))
from seaweed_support import SeaweedFS  # noqa: E402

from flow_kit_cloudbuild.server.storage.artifacts import PARALLEL, ObjectArtifactStore  # noqa: E402
from flow_kit_cloudbuild.server.storage.objects import S3ObjectStore, s3_client  # noqa: E402

TOTAL = 20 * 1024 * 1024
FILES = 500


def make_site(root: Path, seed: int = 19) -> list[tuple[str, Path]]:
    """500 files summing to 20 MB: sizes drawn from a skewed spread (many small, some large)."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(FILES)]
    scale = TOTAL / sum(weights)
    sizes = [max(1024, int(w * scale)) for w in weights]
    sizes[-1] += TOTAL - sum(sizes)  # exactly 20 MB
    files = []
    for i, size in enumerate(sizes):
        ext = (".js", ".css", ".html", ".png", ".woff2")[i % 5]
        name = f"assets/part{i % 7}/file-{i:03d}{ext}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(max(size, 1)))
        files.append((name, path))
    return files


def run_server(client, bucket: str, prefix: str, files: list[tuple[str, Path]]) -> float:
    store = ObjectArtifactStore(S3ObjectStore(bucket, prefix, client).child("artifacts"))
    started = time.perf_counter()
    asyncio.run(store.put("0123456789abcdef01234567", files, max_bytes=0))
    return time.perf_counter() - started


def run_direct(client, bucket: str, prefix: str, files: list[tuple[str, Path]]) -> float:
    def one(item: tuple[str, Path]) -> None:
        name, path = item
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        client.upload_file(str(path), bucket, f"{prefix}/{name}", ExtraArgs={"ContentType": kind})

    started = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flow-bench-storage-") as tmp:
        base = Path(tmp)
        seaweed = SeaweedFS(base / "seaweed").start()
        try:
            os.environ.update(seaweed.env)  # s3_client() reads the standard AWS variables
            bucket = seaweed.bucket("bench-storage")
            files = make_site(base / "site")
            total = sum(p.stat().st_size for _, p in files)
            client = s3_client()  # the server's own configuration, for both sides
            run_server(client, bucket, "warm", files[:50])  # connections and volumes warmed up
            run_direct(client, bucket, "warm-direct", files[:50])
            server, direct = [], []
            for i in range(args.rounds):
                order = [("server", run_server), ("boto3", run_direct)]
                if i % 2:
                    order.reverse()
                for label, fn in order:
                    took = fn(client, bucket, f"{label}-{i}", files)
                    (server if label == "server" else direct).append(took)
                    print(f"round {i + 1}: {label:6s} {took * 1000:7.0f} ms", flush=True)
        finally:
            seaweed.stop()
    s, d = statistics.median(server), statistics.median(direct)
    ratio = s / d
    print(f"{len(files)} files, {total / 1e6:.1f} MB; median: S3ObjectStore (artifact store) {s * 1000:.0f} ms "
          f"({total / s / 1e6:.0f} MB/s), boto3 directly {d * 1000:.0f} ms ({total / d / 1e6:.0f} MB/s); "
          f"ratio {ratio:.2f}x (target <= 1.5x)")
    print("RESULT " + json.dumps({"files": len(files), "bytes": total, "server_ms": round(s * 1000, 1),
                                  "boto3_ms": round(d * 1000, 1), "ratio": round(ratio, 3),
                                  "target": 1.5, "ok": ratio <= 1.5}))
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
