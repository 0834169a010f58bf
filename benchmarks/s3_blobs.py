"""Blob streaming through `runstore serve`: a large artifact uploaded and downloaded with the
blobs in a real SeaweedFS bucket (--blobs s3://..., tests/s3_harness.py) and, as the limit in
the same run, in the server's directory. Prints MB/s both ways and the server's peak RSS:
memory must stay flat (independent of the blob's size).

    .venv/bin/python benchmarks/s3_blobs.py [--mb 300]

Target: server peak RSS <= 200 MB with a blob of several hundred MB; S3 throughput reported as
a ratio to the directory's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "remote"))

import httpx  # noqa: E402

from runstore.protocol import API_PREFIX  # noqa: E402
from runstore.remote import Client, upload_artifact  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.s3_harness import SeaweedProcess  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_big_artifact(store: Store, tmp: Path, mb: int) -> tuple[str, str]:
    import uuid as uuidlib

    src = tmp / "big.bin"
    seed = os.urandom(32)
    with src.open("wb") as fh:
        for i in range(mb):
            fh.write(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() * 32768)
    sha, size = store.put_blob_file(src)
    src.unlink()
    art = str(uuidlib.uuid4())
    with store.write() as conn:
        art_id = conn.execute(
            "INSERT INTO artifacts (uuid, name, alternative_name, created_timestamp, local_dir)"
            " VALUES (?, 'big', 'big_240101_000000_bench', 't', ?)", (art, str(tmp))).lastrowid
        conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                     (sha, size))
        conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, sha256, size_bytes)"
                     " VALUES (?, 'big.bin', 'file', ?, ?)", (art_id, sha, size))
    return art, sha


def one(label: str, server: ServerProcess, store: Store, art: str, sha: str,
        mb: int) -> tuple[float, float, float]:
    with server:
        token = server.add_user("bench")
        with Client(server.url, token, timeout_s=300) as client:
            t0 = time.perf_counter()
            upload_artifact(store, art, client)
            up = mb / (time.perf_counter() - t0)
        digest = hashlib.sha256()
        t0 = time.perf_counter()
        with httpx.stream("GET", f"{server.url}{API_PREFIX}/blobs/{sha}", timeout=300,
                          headers={"Authorization": f"Bearer {token}"}) as got:
            got.raise_for_status()
            for chunk in got.iter_bytes(1 << 20):
                digest.update(chunk)
        down = mb / (time.perf_counter() - t0)
        assert digest.hexdigest() == sha, "downloaded bytes differ"
        rss = vm_hwm_mb(server.pid)
    print(f"{label:<10} upload {up:7.1f} MB/s, download {down:7.1f} MB/s, "
          f"server peak RSS {rss:.0f} MB", flush=True)
    return up, down, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store(tmp / "home")
        art, sha = make_big_artifact(store, tmp, args.mb)
        local = one("directory", ServerProcess(tmp / "local"), store, art, sha, args.mb)
        with SeaweedProcess(tmp / "s3") as s3:
            env = {**s3.env, "RUNSTORE_BLOBS": s3.blobs_url("bench")}
            remote = one("s3", ServerProcess(tmp / "s3srv", extra_env=env), store, art, sha,
                         args.mb)
            assert s3.list_keys("bench/uploads/") == [], "staged parts left behind"
    print(f"{args.mb} MB blob; S3/directory: upload {remote[0] / local[0]:.0%}, download "
          f"{remote[1] / local[1]:.0%}; server peak RSS {remote[2]:.0f} MB with S3 "
          f"(directory {local[2]:.0f} MB; target <= 200 MB)")


if __name__ == "__main__":
    main()
