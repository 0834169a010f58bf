"""8 processes logging into one store at once: zero errors, every row, aggregate points/s.

The limit, measured in the same run: one process inserting the same total number of rows
with raw sqlite3 executemany (SQLite has one writer at a time, so this is the ceiling).

    python benchmarks/concurrent_writers.py [--procs 8] [--calls 20000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time, runstore as em
start_at, calls, rank = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
while time.time() < start_at:
    time.sleep(0.001)
run = em.create_run(name="rank" + rank)
for i in range(calls):
    run.log("train", {f"k{j}": i + j * 0.5 for j in range(10)}, step=i)
run.finish()
print(time.time())
"""


def raw_limit(total_rows: int, path: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE m (run_id INTEGER, seq INTEGER, type TEXT, key TEXT, step INTEGER,"
                 " epoch INTEGER, value REAL, timestamp TEXT, PRIMARY KEY (run_id, seq))"
                 " WITHOUT ROWID")
    ts = "2026-01-01T00:00:00.000000+00:00"
    t0 = time.perf_counter()
    batch = 50_000
    for start in range(0, total_rows, batch):
        rows = [(1, s, "train", f"k{s % 10}", s // 10, None, s * 0.5, ts)
                for s in range(start, min(start + batch, total_rows))]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    from runstore.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        home = os.path.join(tmp, "store")
        Store(home)  # create the schema first, as an installed node would have it
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD)
        start_at = time.time() + 2.0
        env = {**os.environ, "RUNSTORE_HOME": home}
        procs = [subprocess.Popen([sys.executable, script, str(start_at), str(args.calls),
                                   str(i)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for i in range(args.procs)]
        outs = [p.communicate() for p in procs]
        errors = [err for p, (_, err) in zip(procs, outs, strict=True)
                  if p.returncode != 0 or err.strip()]
        end = max(float(out.strip().splitlines()[-1]) for out, _ in outs if out.strip())
        elapsed = end - start_at
        store = Store(home)
        rows = store.read("SELECT COUNT(*) FROM metrics")[0][0]
        expected = args.procs * args.calls * 10
        raw_s = raw_limit(expected, os.path.join(tmp, "raw.db"))
    print(f"concurrent_writers: {args.procs} processes x {args.calls:,} log() calls x 10 keys")
    print(f"  errors: {len(errors)}   rows present: {rows:,} of {expected:,}")
    for err in errors[:3]:
        print("  stderr:", err.strip().splitlines()[-1])
    print(f"  runstore aggregate  {expected / elapsed:,.0f} points/s ({elapsed:.2f} s)")
    print(f"  raw sqlite3 limit   {expected / raw_s:,.0f} points/s (one writer, {raw_s:.2f} s)")
    print(f"  ratio runstore/raw  {raw_s / elapsed:.2f} of the single-writer rate")


if __name__ == "__main__":
    main()
