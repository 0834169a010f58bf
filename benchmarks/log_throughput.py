"""Logging throughput: runstore's Run.log() against raw sqlite3 executemany for the same rows.

One run, 10 keys per log() call, N calls (default 100,000), then finish(). The limit is
measured in the same process: the same rows inserted with raw sqlite3 ``executemany`` into an
equivalent table (same columns, same primary key, WAL, synchronous=NORMAL).

Prints per-call p50/p99 of log(), end-to-end points/s, the ratio to raw, and RSS growth.

    python benchmarks/log_throughput.py [--calls 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def bench_runstore(calls: int, keys: list[str]) -> dict:
    import runstore as em

    run = em.create_run(name="bench", hparams={"lr": 1e-3})
    log = run.log
    per_call = []
    rss_10k = None
    t0 = time.perf_counter()
    clock = time.perf_counter_ns
    for i in range(calls):
        values = {k: i * 0.001 + j for j, k in enumerate(keys)}
        a = clock()
        log("train", values, step=i, epoch=i // 1000)
        per_call.append(clock() - a)
        if i == 1000:
            rss_10k = rss_mb()  # after 10k points
    run.finish()
    total = time.perf_counter() - t0
    rss_end = rss_mb()
    per_call.sort()
    return {
        "total_s": total,
        "p50_us": per_call[len(per_call) // 2] / 1000,
        "p99_us": per_call[int(len(per_call) * 0.99)] / 1000,
        "mean_us": statistics.fmean(per_call) / 1000,
        "rss_10k": rss_10k,
        "rss_end": rss_end,
        "rows": run._metric_count,
    }


def bench_raw(calls: int, keys: list[str], path: str) -> float:
    """The same rows, built the same way, into an equivalent table with raw executemany."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE metrics (run_id INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
        " key TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER, value REAL,"
        " timestamp TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID")
    t0 = time.perf_counter()
    rows = []
    seq = 0
    ts = "2026-01-01T00:00:00.000000+00:00"
    batch = 5000
    for i in range(calls):
        for j, k in enumerate(keys):
            rows.append((1, seq, "train", k, i, i // 1000, i * 0.001 + j, ts))
            seq += 1
        if len(rows) >= batch * len(keys):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            rows = []
    if rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    total = time.perf_counter() - t0
    conn.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()
    keys = [f"metric_{j}" for j in range(args.keys)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RUNSTORE_HOME"] = os.path.join(tmp, "store")
        ours = bench_runstore(args.calls, keys)
        raw_s = bench_raw(args.calls, keys, os.path.join(tmp, "raw.db"))
    points = args.calls * args.keys
    assert ours["rows"] == points, (ours["rows"], points)
    print(f"log_throughput: {args.calls:,} log() calls x {args.keys} keys = {points:,} points")
    print(f"  log() per call      p50 {ours['p50_us']:.2f} us   p99 {ours['p99_us']:.2f} us   "
          f"mean {ours['mean_us']:.2f} us   (target p50 <= 5 us)")
    print(f"  runstore end to end {ours['total_s']:.3f} s   "
          f"{points / ours['total_s']:,.0f} points/s")
    print(f"  raw sqlite3 limit   {raw_s:.3f} s   {points / raw_s:,.0f} points/s")
    print(f"  ratio runstore/raw  {ours['total_s'] / raw_s:.2f}x   (target <= 1.5x)")
    print(f"  RSS after 10k points {ours['rss_10k']:.1f} MB, after {points:,}: "
          f"{ours['rss_end']:.1f} MB, growth {ours['rss_end'] - ours['rss_10k']:.1f} MB "
          f"(target <= 50 MB)")


if __name__ == "__main__":
    main()
