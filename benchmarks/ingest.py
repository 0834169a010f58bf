"""Server ingest of a 1,000,000-point run against the engine's own bulk insert (issue 13).

For each engine (SQLite, and PostgreSQL when its binaries are installed: tests/pg_harness.py
starts a private one), three figures on the same rows:

* server ingest: the run's metric chunks (20,000 rows, pre-encoded as the client sends them)
  PUT one after another to a real `runstore serve` subprocess: claim, chunks, finalize, timed
  from the first chunk to the last acknowledgement. What the server does per point;
* upload_run: the real client (runstore.remote.upload_run) from a local store, end to end
  (client reads and encodes too);
* raw bulk insert: the same rows straight into a fresh database of the same engine with the
  driver's bulk path (sqlite3 executemany in one transaction per chunk; psycopg binary COPY
  per chunk), no server, no HTTP.

    .venv/bin/python benchmarks/ingest.py [--points 1000000] [--engines sqlite,postgresql]
        [--repeat 3]

Each figure is the best of --repeat runs (default 3), interleaved: the machine is shared.
Target: server ingest >= 50% of the raw bulk insert of the same engine.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "remote"))

import httpx  # noqa: E402
from rs_fixtures import add_metrics, finish, make_run  # noqa: E402

from runstore.protocol import encode_metric_row  # noqa: E402
from runstore.remote import Client, upload_run  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402

CHUNK = 20_000
TS = "2024-01-02T03:04:05.123456+00:00"


def rows_of(store: Store, run_uuid: str) -> list[tuple]:
    conn = store.connection()
    run_id = conn.execute("SELECT id FROM runs WHERE uuid = ?", (run_uuid,)).fetchone()[0]
    return conn.execute("SELECT type, key, step, epoch, value, timestamp FROM metrics "
                        "WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()


def claim_body(run_uuid: str, status: str = "Running") -> dict:
    meta = {"labels": [], "description": "", "status": status, "start_timestamp": TS,
            "end_timestamp": None if status == "Running" else TS, "hparams": {},
            "platform": {}, "git": {}, "remote": [], "generation": 0}
    return {"uuid": run_uuid, "name": "ingest", "alternative_name": f"ingest_{run_uuid[:8]}",
            "folder": "/bench/ingest", "conflict_strategy": "new", "metadata": meta}


def server_ingest(url: str, token: str, rows: list[tuple]) -> float:
    """Seconds from the first chunk to the last acknowledgement (bodies encoded before)."""
    bodies = [json.dumps({"offset": i, "rows": [encode_metric_row(r)
                                                for r in rows[i:i + CHUNK]]},
                         separators=(",", ":")).encode() for i in range(0, len(rows), CHUNK)]
    run_uuid = str(uuidlib.uuid4())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=120) as http:
        http.post("/folders", json={"path": "/bench/ingest", "make_parents": True}
                  ).raise_for_status()
        http.post("/runs/claim", json=claim_body(run_uuid)).raise_for_status()
        start = time.perf_counter()
        for body in bodies:
            http.put(f"/runs/{run_uuid}/metrics", content=body).raise_for_status()
        elapsed = time.perf_counter() - start
        meta = claim_body(run_uuid, "Complete")["metadata"]
        done = http.post(f"/runs/{run_uuid}/finalize",
                         json={"metric_count": len(rows), "metadata": meta})
        done.raise_for_status()
        assert done.json()["metric_count"] == len(rows), done.text
    return elapsed


def raw_sqlite(path: Path, rows: list[tuple]) -> float:
    from runstore.server.db import Database

    Database(f"sqlite:///{path}").dispose()  # the server's schema, nothing else
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("INSERT INTO users (id, name, created_at) VALUES (1, 'b', 0)")
    conn.execute("INSERT INTO folders (id, owner_id, path, created_at) VALUES (1, 1, '/b', 0)")
    conn.execute("INSERT INTO runs (id, owner_id, uuid, folder_id, name, run_name, "
                 "alternative_name, labels, description, status, start_timestamp, hparams, "
                 "platform, git, remote, metric_count, complete, generation, created_at, "
                 "updated_at) VALUES (1, 1, 'u', 1, 'x', 'x', 'x', '[]', '', 'Running', 't', "
                 "'{}', '{}', '{}', '[]', 0, 0, 0, 0, 0)")
    start = time.perf_counter()
    for i in range(0, len(rows), CHUNK):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, "
                         "timestamp) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                         [(i + j, *r) for j, r in enumerate(rows[i:i + CHUNK])])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def raw_postgres(url: str, rows: list[tuple]) -> float:
    import psycopg

    from runstore.server.db import Database

    Database(url).dispose()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, name, created_at) VALUES (1, 'b', 0)")
        conn.execute("INSERT INTO folders (id, owner_id, path, created_at) "
                     "VALUES (1, 1, '/b', 0)")
        conn.execute("INSERT INTO runs (id, owner_id, uuid, folder_id, name, run_name, "
                     "alternative_name, labels, description, status, start_timestamp, hparams,"
                     " platform, git, remote, metric_count, complete, generation, created_at, "
                     "updated_at) VALUES (1, 1, 'u', 1, 'x', 'x', 'x', '[]', '', 'Running', "
                     "'t', '{}', '{}', '{}', '[]', 0, false, 0, 0, 0)")
        start = time.perf_counter()
        for i in range(0, len(rows), CHUNK):
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    "COPY metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
                    "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(("int4", "int8", "text", "text", "int8", "int8", "float8",
                                "text"))
                for j, r in enumerate(rows[i:i + CHUNK]):
                    copy.write_row((1, i + j, *r))
        return time.perf_counter() - start


def upload_client(url: str, token: str, store: Store, run_uuid: str) -> float:
    with Client(url, token) as client:
        start = time.perf_counter()
        result = upload_run(store, run_uuid, client, folder="client", make_folder=True)
        elapsed = time.perf_counter() - start
    assert result.complete and result.metrics_sent > 0, result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each figure")
    args = parser.parse_args()
    n = args.points
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store(tmp / "home")
        copies = []  # one run per repetition and engine: each upload_run sends it all
        for _ in range(args.repeat * len(args.engines.split(","))):
            run = make_run(store, "bench", status="Running")
            add_metrics(store, run, n)
            finish(store, run)
            copies.append(run)
        rows = rows_of(store, copies[0])
        for e, engine in enumerate(args.engines.split(",")):
            pg = None
            if engine == "sqlite":
                server = ServerProcess(tmp / f"srv-{engine}")
                raw = ("sqlite", str(tmp / "raw.db"))
            else:
                from tests.pg_harness import PostgresNotInstalled, PostgresProcess

                try:
                    pg = PostgresProcess(tmp).start()
                except PostgresNotInstalled as exc:
                    print(f"postgresql: skipped ({exc})")
                    continue
                server = ServerProcess(tmp / f"srv-{engine}",
                                       database_url=pg.create_database())
                raw = ("postgresql", pg.create_database())
            try:
                # Best of --repeat for each figure, interleaved: this machine is shared, and
                # the best run is the one least disturbed by others.
                t_server = t_client = t_raw = float("inf")
                with server:
                    token = server.add_user("bench")
                    for i in range(args.repeat):
                        t_server = min(t_server, server_ingest(server.url, token, rows))
                        t_client = min(t_client, upload_client(
                            server.url, token, store, copies[e * args.repeat + i]))
                        target = (raw[1] if raw[0] == "postgresql" or i == 0
                                  else f"{raw[1]}.{i}")
                        if raw[0] == "postgresql" and i > 0:
                            target = pg.create_database()
                        t_raw = min(t_raw, raw_sqlite(Path(target), rows)
                                    if raw[0] == "sqlite" else raw_postgres(target, rows))
            finally:
                if pg is not None:
                    pg.cleanup()
            results.append((engine, n / t_server, n / t_client, n / t_raw))
    print(f"{'engine':<11}{'server ingest':>16}{'upload_run':>14}{'raw bulk':>12}"
          f"{'ingest/raw':>12}{'upload/raw':>12}")
    for engine, server_pps, client_pps, raw_pps in results:
        print(f"{engine:<11}{server_pps:>16,.0f}{client_pps:>14,.0f}{raw_pps:>12,.0f}"
              f"{server_pps / raw_pps:>12.0%}{client_pps / raw_pps:>12.0%}")
    print("points/s; target: server ingest >= 50% of the raw bulk insert of the same engine")


if __name__ == "__main__":
    main()
