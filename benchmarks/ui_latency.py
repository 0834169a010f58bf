"""Web UI latency, server side: the runs page of a folder with 10,000 runs, and a chart's data
for a 1,000,000-point series, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/ui_latency.py             # 10,000 runs, 1,000,000 points
    .venv/bin/python benchmarks/ui_latency.py --quick     # 2,000 runs, 200,000 points
    .venv/bin/python benchmarks/ui_latency.py --sqlite-only | --postgres-only [--runs-only]
    .venv/bin/python benchmarks/ui_latency.py --mlflow /tmp/mlflow-venv/bin/mlflow

MLflow beside it: when an `mlflow` executable is on PATH (or given with --mlflow; it lives in a
venv of its own), benchmarks/mlflow_ui.py seeds an MLflow store of the same shape, serves it and
times the requests MLflow's own UI sends for the same views, --mlflow-iterations times each (10
by default: MLflow's sorted runs pages take seconds each; seeding takes about 5 minutes at full
size). --no-mlflow (or --runs-only) skips it.

The requests go over HTTP on 127.0.0.1 to a real `runstore serve` (uvicorn, one process) on
the seeded database, logged in with a session cookie as a browser is. Server-side time is what
the server reports in each response's Server-Timing header: from the request's arrival to its
response headers, every layer included (routing, session check, the queries, Jinja rendering /
JSON encoding; runstore/server/timing.py). The client's wall clock over loopback and the
server process's CPU per request are printed beside it. The 1,000,000 points are ingested
through ``metricrows.insert_metric_rows`` (the path the sync protocol uses, which keeps the
rollups), in 100,000-row chunks; the ingest time is printed too. The 10,000 runs get their
rows and per-series summaries inserted in bulk.

Targets (issue 11): p95 <= 50 ms for both, on both databases.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from runstore.server import db, metricrows  # noqa: E402
from runstore.server.auth import add_user  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlflow_ui  # noqa: E402

LIMIT_MS = 50.0
KEYS = [("train", "loss"), ("val", "loss"), ("val", "accuracy")]


def seed(database: db.Database, n_runs: int, n_points: int) -> tuple[str, str, float]:
    """alice's token, the long run's uuid, and the seconds the long series took to ingest."""
    token = add_user(database, "alice")
    rnd = random.Random(1)
    with database.write() as conn:
        user_id = conn.execute(db.users.select().where(db.users.c.name == "alice")).one().id
        folder_id = db.insert_returning_id(conn, db.folders.insert().values(
            owner_id=user_id, path="/alice/sweep", created_at=time.time(),
            parent_id=conn.execute(db.folders.select().where(
                db.folders.c.path == "/alice")).one().id))
        runs, series = [], []
        for i in range(n_runs):
            runs.append(dict(
                owner_id=user_id, uuid=f"{i:032x}", folder_id=folder_id,
                name=f"run-{i:05d}", run_name=f"run-{i:05d}", alternative_name=f"run-{i:05d}_x",
                labels=json.dumps(["sweep", f"g{i % 7}"]),
                status=("Complete", "Error", "Running")[i % 3 and (i % 11 == 0) + 0],
                start_timestamp=f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00",
                end_timestamp=f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:30:00+00:00",
                hparams=json.dumps({"lr": rnd.choice([1e-4, 3e-4, 1e-3, 3e-3]),
                                    "batch_size": rnd.choice([32, 64, 128]),
                                    "optimizer": {"name": rnd.choice(["adam", "sgd"]),
                                                  "momentum": 0.9},
                                    "seed": i}),
                # (the rows the summaries below stand for: a count that disagrees makes the
                # server's start-up backfill rebuild the run from its (absent) rows)
                metric_count=100 * len(KEYS), complete=True, created_at=0.0,
                updated_at=0.0))
        conn.execute(db.runs.insert(), runs)
        # (ids from the database: PostgreSQL's sequence must hand them out)
        for (run_id,) in conn.execute(db.runs.select().with_only_columns(db.runs.c.id)
                                      .where(db.runs.c.folder_id == folder_id)):
            for t, k in KEYS:
                v = rnd.random()
                series.append(dict(run_id=run_id, type=t, key=k, n=100, nan_count=0,
                                   min_step=0, max_step=99, min_value=v / 2, max_value=v * 2,
                                   last_value=v, last_step=99, last_seq=99))
        conn.execute(db.metric_series.insert(), series)
    long_uuid = "f" * 32
    with database.write() as conn:
        long_id = db.insert_returning_id(conn, db.runs.insert().values(
            owner_id=user_id, uuid=long_uuid, folder_id=folder_id, name="long",
            run_name="long", alternative_name="long_x", status="Complete",
            start_timestamp="2024-02-01T00:00:00+00:00", metric_count=n_points,
            complete=True, created_at=0.0, updated_at=0.0))
    return token, long_uuid, ingest(database, long_id, n_points, rnd)


def analyze(database: db.Database) -> None:
    """Planner statistics for the freshly bulk-loaded tables, as autovacuum would gather on a
    live server (PostgreSQL plans a 10,000-row table it believes empty badly); SQLite's
    ANALYZE likewise."""
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if not database.is_sqlite else "ANALYZE")


def ingest(database: db.Database, run_id: int, n_points: int, rnd: random.Random) -> float:
    """Seconds to store n_points rows through metricrows.insert_metric_rows, 100,000 per chunk."""
    start = time.perf_counter()
    chunk = 100_000
    for offset in range(0, n_points, chunk):
        rows = [("train", "loss", s, s // 1000,
                 None if s % 50_000 == 7 else 2.0 * math.exp(-s / 300_000) + rnd.random() * .05,
                 "2024-02-01T00:00:00+00:00")
                for s in range(offset, min(n_points, offset + chunk))]
        with database.write() as conn:
            metricrows.insert_metric_rows(conn, run_id, offset, rows)
    return time.perf_counter() - start


def ingest_without_rollups(database: db.Database, n_points: int) -> float:
    """The same ingest with the rollup step switched off: what the rollups cost."""
    from runstore.server import rollups

    with database.write() as conn:
        folder_id = conn.execute(db.folders.select().where(
            db.folders.c.path == "/alice/sweep")).one().id
        run_id = db.insert_returning_id(conn, db.runs.insert().values(
            owner_id=1, uuid="e" * 32, folder_id=folder_id, name="plain", run_name="plain",
            alternative_name="plain_x", status="Complete", start_timestamp="t",
            metric_count=n_points, complete=True, created_at=0.0, updated_at=0.0))
    saved = rollups.add_rows
    rollups.add_rows = lambda *_args: None  # type: ignore[assignment]
    try:
        return ingest(database, run_id, n_points, random.Random(2))
    finally:
        rollups.add_rows = saved


class Result(NamedTuple):
    name: str
    server_p95: float | None  # Server-Timing: the server's own time (None: not reported)
    server_p50: float | None
    client_p95: float          # the client's wall clock, loopback HTTP included
    client_p50: float
    cpu_mean: float            # CPU of the server process per request, on average


def timed(client: httpx.Client, url: str, n: int, cpu: mlflow_ui.ServerCpu
          ) -> tuple[list[float], list[float], float]:
    """Per request: the server's time from its Server-Timing header and the client's wall
    clock; and the server process's CPU per request on average (the kernel counts it in
    10 ms ticks: too coarse for one request), in ms."""
    server, wall = [], []
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    c0 = cpu()
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url)
        wall.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        timing = r.headers["server-timing"]
        assert timing.startswith("app;dur="), timing
        server.append(float(timing.partition("=")[2]))
    return server, wall, (cpu() - c0) * 1000 / n


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def measure(label: str, database: db.Database, data_dir: Path, n_runs: int, n_points: int,
            iterations: int, runs_only: bool = False, database_url: str | None = None
            ) -> list[Result]:
    from tests.server_harness import ServerProcess

    token, long_uuid, ingest_s = seed(database, n_runs, 0 if runs_only else n_points)
    plain_s = 1.0 if runs_only else ingest_without_rollups(database, n_points)
    if not runs_only:
        print(f"[{label}] seeded {n_runs:,} runs; {n_points:,} points ingested with rollups in "
              f"{ingest_s:.1f} s ({n_points / ingest_s:,.0f} rows/s); without rollups "
              f"{plain_s:.1f} s ({n_points / plain_s:,.0f} rows/s): rollups cost x"
              f"{ingest_s / plain_s:.2f} at ingest", flush=True)
    results = []
    # `runstore serve` over the same database, as users run it (its start-up backfill builds
    # the rollups of the run stored without them)
    with ServerProcess(data_dir, database_url=database_url, startup_timeout_s=600) as server:
        analyze(database)
        with database.read() as conn:  # (the seeded summaries survived the server's start-up)
            n_series = conn.execute(select(func.count()).select_from(db.metric_series)).scalar()
        assert n_series == n_runs * len(KEYS) + (0 if runs_only else 2), n_series
        assert server.pid is not None
        cpu = mlflow_ui.ServerCpu(server.pid)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.get("/ui/login")
            csrf = client.cookies.get("runstore_csrf")
            r = client.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/ui/"},
                            follow_redirects=False)
            assert r.status_code == 303, r.text
            folder = "/ui/folder?path=/alice/sweep"
            cols = "&cols=1&h=lr&h=batch_size&h=optimizer.name&h=seed" \
                   "&m=train/loss&m=val/loss&m=val/accuracy"
            cases = [
                ("runs page, default columns", folder),
                ("runs page, sorted by val/accuracy best",
                 folder + cols + "&sort=best:val/accuracy"),
                ("runs page, sorted by hparam lr", folder + cols + "&sort=h:lr"),
                ("runs page, label filter, page 20", folder + cols + "&label=g3&page=20"),
                ("runs page, name filter", folder + cols + "&name=run-012"),
                (f"chart data, {n_points:,} points, 2,000-px chart",
                 f"/ui/api/series?run={long_uuid}&type=train&key=loss&points=4000"),
                (f"chart data, {n_points:,} points, zoomed to a third",
                 f"/ui/api/series?run={long_uuid}&type=train&key=loss&points=2000"
                 f"&lo={n_points // 3 + 17}&hi={2 * n_points // 3 - 5}"),
            ]
            for name, url in cases[:5] if runs_only else cases:
                server_ms, wall, cpu_ms = timed(client, url, iterations, cpu)
                results.append(Result(f"{label}: {name}", p95(server_ms),
                                      statistics.median(server_ms), p95(wall),
                                      statistics.median(wall), cpu_ms))
            if not runs_only:
                got = client.get(cases[5][1]).json()
                assert len(got["x"]) <= 4000 and not got["raw"]
    return results


def main() -> None:
    import os
    import signal

    # SIGTERM unwinds like Ctrl-C, so the private PostgreSQL is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sqlite-only", action="store_true")
    which.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--runs-only", action="store_true",
                        help="only the runs-page cases (no 1,000,000-point ingest)")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--mlflow", metavar="PATH",
                        help="the `mlflow` executable to compare with (default: mlflow on PATH)")
    parser.add_argument("--mlflow-iterations", type=int, default=10)
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    if args.iterations < 2 or args.mlflow_iterations < 2:
        raise SystemExit("need --iterations >= 2 and --mlflow-iterations >= 2")
    # (--runs-only: no 1,000,000-point series, so none for MLflow either)
    skip_mlflow = args.no_mlflow or args.runs_only
    mlflow = None if skip_mlflow else mlflow_ui.find_mlflow(args.mlflow)
    n_runs, n_points = (2_000, 200_000) if args.quick else (10_000, 1_000_000)
    results: list[Result] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.postgres_only:
            database = db.Database.for_data_dir(Path(tmp) / "sqlite")
            results += measure("SQLite", database, Path(tmp) / "sqlite", n_runs, n_points,
                               args.iterations, args.runs_only)
            database.dispose()
        if not args.sqlite_only:
            from tests.pg_harness import PostgresProcess

            with PostgresProcess(Path(tmp) / "pg") as pg:
                url = pg.create_database()
                database = db.Database(url)
                results += measure("PostgreSQL", database, Path(tmp) / "pgdata", n_runs,
                                   n_points, args.iterations, args.runs_only, url)
                database.dispose()
        if mlflow is not None:
            results += [Result(name, None, None, wall, median, cpu) for name, wall, cpu, median,
                        _min in mlflow_ui.measure_mlflow(mlflow, Path(tmp), n_runs, n_points,
                                                    args.mlflow_iterations)]
    if mlflow is None and not skip_mlflow:
        print("MLflow: no `mlflow` on PATH, no figure beside runstore's (--mlflow PATH to add "
              "one: python3 -m venv V && V/bin/pip install mlflow)")
    print(f"load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (a loaded machine inflates every figure)")
    print(f"\n{'case':<60} {'server p95':>10} {'p50':>6} {'loopback p95':>12} {'p50':>6} "
          f"{'CPU':>6} {'limit':>6} {'ratio':>6}")
    for x in results:
        shown = x.server_p95 if x.server_p95 is not None else x.client_p95
        server = (f"{x.server_p95:10.1f} {x.server_p50:6.1f}" if x.server_p95 is not None
                  and x.server_p50 is not None else f"{'-':>10} {'-':>6}")
        print(f"{x.name:<60} {server} {x.client_p95:12.1f} {x.client_p50:6.1f} "
              f"{x.cpu_mean:6.1f} {LIMIT_MS:6.0f} {shown / LIMIT_MS:6.2f}"
              f"{'' if shown <= LIMIT_MS else '  OVER'}")
    print("(ms per request. server: the app's own time, from the Server-Timing header of a "
          "real `runstore serve`; loopback: the client's wall clock over HTTP on 127.0.0.1; "
          "CPU: the server process's, mean (MLflow: p95); ratio = server p95 / limit, or "
          "loopback p95 where the server reports no time)")
    if mlflow is not None:
        print(f"MLflow: {args.mlflow_iterations} requests per case, over loopback HTTP to "
              "`mlflow server`, which reports no server time: compare its loopback column "
              "with runstore's; MLflow's runs page returns 100 rows, runstore's 50")


if __name__ == "__main__":
    main()
