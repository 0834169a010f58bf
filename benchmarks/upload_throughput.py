"""Upload throughput: a finished run with 1,000,000 metric points and a 100 MB artifact,
uploaded to a real local `runstore serve`, against the limit: the same rows inserted straight
into a server database the way the server stores them
(runstore.server.metricrows.insert_metric_rows, one transaction per chunk, in chunks of the
same size).

    .venv/bin/python benchmarks/upload_throughput.py [--points 1000000] [--mb 100]

Prints points/s, MB/s, the ratio to the direct insert, and the peak RSS of client and server.
Target: ratio >= 0.40; client and server peak RSS <= 150 MB each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "remote"))

from rs_fixtures import add_metrics, finish, make_run  # noqa: E402

from runstore.remote import Client, upload_artifact, upload_run  # noqa: E402
from runstore.remote.upload import METRIC_CHUNK_ROWS  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402


def vm_hwm_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_artifact(store: Store, tmp: Path, mb: int) -> str:
    import uuid as uuidlib

    src = tmp / "weights.bin"
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
            " VALUES (?, 'model', 'model_240101_000000_bench1', 't', ?)", (art, str(tmp))
        ).lastrowid
        conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                     (sha, size))
        conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, sha256, size_bytes)"
                     " VALUES (?, 'weights.bin', 'file', ?, ?)", (art_id, sha, size))
    return art


def direct_insert(store: Store, run_uuid: str, data_dir: Path) -> float:
    """Seconds to insert the run's rows straight into a fresh server database."""
    from sqlalchemy import update

    from runstore.server import db, metricrows

    database = db.Database.for_data_dir(data_dir)
    with database.write() as conn:
        conn.execute(db.users.insert().values(id=1, name="bench", created_at=0))
        conn.execute(db.folders.insert().values(id=1, owner_id=1, path="/bench", created_at=0))
        conn.execute(db.runs.insert().values(
            id=1, owner_id=1, uuid=run_uuid, folder_id=1, name="x", run_name="x",
            alternative_name="x", status="Complete", start_timestamp="t", created_at=0,
            updated_at=0))
    run_id = store.read("SELECT id FROM runs WHERE uuid = ?", (run_uuid,))[0][0]
    conn_local = store.connection()
    start = time.perf_counter()
    offset = 0
    while True:
        rows = conn_local.execute(
            "SELECT type, key, step, epoch, value, timestamp FROM metrics WHERE run_id = ? "
            "AND seq >= ? ORDER BY seq LIMIT ?", (run_id, offset, METRIC_CHUNK_ROWS)).fetchall()
        if not rows:
            break
        rows = [(t, k, s, e, v if v is None or v == v else None, ts)
                for t, k, s, e, v, ts in rows]
        with database.write() as conn:
            metricrows.insert_metric_rows(conn, 1, offset, rows)
            conn.execute(update(db.runs).where(db.runs.c.id == 1)
                         .values(metric_count=offset + len(rows)))
        offset += len(rows)
    elapsed = time.perf_counter() - start
    database.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store(tmp / "home")
        run = make_run(store, "bench", status="Running")
        add_metrics(store, run, args.points)
        art = make_artifact(store, tmp, args.mb)
        finish(store, run)
        setup_rss = vm_hwm_mb()

        with ServerProcess(tmp / "server") as server:
            token = server.add_user("bench")
            with Client(server.url, token) as client:
                t0 = time.perf_counter()
                result = upload_run(store, run, client)
                t_metrics = time.perf_counter() - t0
                assert result.metrics_sent == args.points, result
                t0 = time.perf_counter()
                art_result = upload_artifact(store, art, client)
                t_blob = time.perf_counter() - t0
                assert art_result.bytes_sent == args.mb * 1024 * 1024, art_result
            server_rss = vm_hwm_mb(server.pid)
        client_rss = vm_hwm_mb()
        t_direct = direct_insert(store, run, tmp / "direct")

    upload_pps = args.points / t_metrics
    direct_pps = args.points / t_direct
    print(f"metrics upload : {args.points:,} points in {t_metrics:.2f} s = "
          f"{upload_pps:,.0f} points/s")
    print(f"direct insert  : {args.points:,} points in {t_direct:.2f} s = "
          f"{direct_pps:,.0f} points/s")
    print(f"ratio          : {upload_pps / direct_pps:.0%} of the direct insert rate "
          "(target >= 40%)")
    print(f"artifact upload: {args.mb} MB in {t_blob:.2f} s = {args.mb / t_blob:.1f} MB/s")
    print(f"peak RSS       : client {client_rss:.0f} MB (after setup {setup_rss:.0f} MB), "
          f"server {server_rss:.0f} MB (target <= 150 MB each)")
    print(f"ru_maxrss self : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
