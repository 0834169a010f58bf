"""The fleet curve (issue 13): points/s and p95 finish-to-visible latency with 1, 10, 50 and
200 concurrent uploaders against 1 and 3 `runstore serve` replicas on one PostgreSQL and one
S3 bucket (a real PostgreSQL from tests/pg_harness.py, a real SeaweedFS from
tests/s3_harness.py, the replicas behind tests/fleet/rr_proxy.py), the peak RSS of each
replica, and the same load on one replica over SQLite + a directory and on MLflow's tracking
server (SQLite backend) when MLflow is installed.

    .venv/bin/python benchmarks/fleet.py [--levels 1,10,50,200] [--points 1000]
        [--mlflow /path/to/venv/bin/mlflow]     # default: `mlflow` on PATH, else skipped
        [--mlflow-levels 1,10,50]

Each uploader is a store of its own with finished runs of --points points and one 4 KB
artifact each; "finish-to-visible" is from the run's finish to the server acknowledging it
complete (upload_run returning), the upload starting at once (syncd's own pickup delay is
benchmarks/sync_latency.py's business). Uploaders run as threads in 4 client processes on this
same machine, so the figures are for client + servers sharing its cores.
Limits: replica peak RSS <= 200 MB; MLflow is the reference the ratios are taken against.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLIENT_PROCS = 4


def runs_per_uploader(level: int) -> int:
    return max(2, 40 // level)


# -- the uploader processes ----------------------------------------------------------------
def _prepare(base: Path, index: int, n_runs: int, points: int) -> tuple[object, list[str]]:
    sys.path.insert(0, str(REPO / "tests" / "remote"))
    from rs_fixtures import link, make_artifact, make_run

    from runstore.store import Store

    store = Store(base / f"node{index}")
    src = base / f"node{index}-src"
    src.mkdir(parents=True, exist_ok=True)
    runs = []
    for k in range(n_runs):
        run = make_run(store, f"r{k}", n_metrics=points, status="Running",
                       folder=f"bench/u{index}", make_folder=True)
        art = make_artifact(store, src, f"a{k}", files={"w.bin": os.urandom(4096)})
        link(store, run, art, "output")
        runs.append(run)
    return store, runs


def _upload_runstore(url: str, token: str, store, run: str) -> None:
    from runstore.remote import Client, upload_run

    with Client(url, token, timeout_s=120) as client:
        result = upload_run(store, run, client)
    if not result.complete:
        raise RuntimeError(f"{run} not complete")


def _upload_mlflow(url: str, _token: str, store, run: str) -> None:
    import httpx

    conn = store.connection()
    rid, name = conn.execute("SELECT id, name FROM runs WHERE uuid = ?", (run,)).fetchone()
    rows = conn.execute("SELECT type, key, step, value FROM metrics WHERE run_id = ? "
                        "ORDER BY seq", (rid,)).fetchall()
    api = f"{url}/api/2.0/mlflow"
    now = int(time.time() * 1000)
    with httpx.Client(timeout=120) as h:
        created = h.post(f"{api}/runs/create", json={"experiment_id": "0", "run_name": name,
                                                     "start_time": now})
        created.raise_for_status()
        mlrun = created.json()["run"]["info"]["run_id"]
        for i in range(0, len(rows), 1000):
            # JSON has no NaN/infinity: those become 0 (MLflow's REST API takes numbers).
            metrics = [{"key": f"{t}/{k}", "value": v if v is not None and -1e308 < v < 1e308
                        else 0.0,
                        "timestamp": now, "step": s} for t, k, s, v in rows[i:i + 1000]]
            h.post(f"{api}/runs/log-batch",
                   json={"run_id": mlrun, "metrics": metrics}).raise_for_status()
        h.post(f"{api}/runs/update", json={"run_id": mlrun, "status": "FINISHED",
                                           "end_time": int(time.time() * 1000)}
               ).raise_for_status()


def _client_process(kind: str, url: str, token: str, base: str, indices: list[int],
                    n_runs: int, points: int, ready, start_at, out) -> None:
    sys.path.insert(0, str(REPO / "tests" / "remote"))
    from rs_fixtures import finish

    prepared = [_prepare(Path(base), i, n_runs, points) for i in indices]
    ready.release()
    while start_at.value == 0:
        time.sleep(0.01)
    while time.time() < start_at.value:
        time.sleep(0.001)
    upload = _upload_runstore if kind == "runstore" else _upload_mlflow
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def node(store, runs) -> None:
        for run in runs:
            t0 = time.perf_counter()
            finish(store, run)
            try:
                upload(url, token, store, run)
            except Exception as exc:  # counted and printed by the parent
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=node, args=p) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors, time.time()))


def run_level(kind: str, url: str, token: str, base: Path, level: int,
              points: int) -> dict[str, float]:
    ctx = mp.get_context("fork")
    n_runs = runs_per_uploader(level)
    procs = min(CLIENT_PROCS, level)
    ready = ctx.Semaphore(0)
    start_at = ctx.Value("d", 0.0)
    out = ctx.Queue()
    groups = [list(range(level))[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_client_process, args=(
        kind, url, token, str(base), g, n_runs, points, ready, start_at, out))
        for g in groups]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    begin = time.time() + 0.2
    start_at.value = begin
    latencies: list[float] = []
    errors: list[str] = []
    end = begin
    for _ in workers:
        lat, err, finished = out.get()
        latencies += lat
        errors += err
        end = max(end, finished)
    for w in workers:
        w.join()
    if errors:
        print(f"  {len(errors)} failed uploads, e.g. {errors[0]}")
    total_points = len(latencies) * points
    p95 = (statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 20
           else max(latencies, default=float("nan")))
    return {"pps": total_points / (end - begin), "p95": p95, "runs": len(latencies),
            "failed": len(errors)}


# -- the servers -----------------------------------------------------------------------------
def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_runstore(label: str, tmp: Path, replicas: int, levels: list[int], points: int,
                   pg=None, s3=None) -> list[tuple]:
    from tests.fleet.rr_proxy import RoundRobinProxy
    from tests.server_harness import ServerProcess

    rows = []
    for level in levels:
        base = tmp / f"{label}-{level}".replace(" ", "_")
        if pg is not None:
            url = pg.create_database()
            env = {**s3.env, "RUNSTORE_BLOBS": s3.blobs_url(base.name)}
            servers = [ServerProcess(base / f"replica{i}", database_url=url, extra_env=env)
                       for i in range(replicas)]
        else:
            servers = [ServerProcess(base / "server")]
        for s in servers:
            s.start()
        proxy = RoundRobinProxy([s.port for s in servers]).start()
        try:
            token = servers[0].add_user("bench")
            fig = run_level("runstore", proxy.url, token, base / "clients", level, points)
            rss = max(vm_hwm_mb(s.pid) for s in servers)
        finally:
            proxy.stop()
            for s in servers:
                s.stop()
        rows.append((label, level, fig, rss))
        print(f"  {label:<36} {level:>4} uploaders: {fig['pps']:>9,.0f} points/s, "
              f"p95 {fig['p95']:.2f} s, peak RSS/replica {rss:.0f} MB", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def bench_mlflow(mlflow: str, tmp: Path, levels: list[int], points: int) -> list[tuple]:
    from mlflow_ui import start_server, stop_server

    rows = []
    for level in levels:
        base = tmp / f"mlflow-{level}"
        base.mkdir()
        proc, url, log = start_server(mlflow, base)
        try:
            fig = run_level("mlflow", url, "", base / "clients", level, points)
            import psutil

            rss = sum(p.memory_info().rss for p in [psutil.Process(proc.pid),
                      *psutil.Process(proc.pid).children(recursive=True)]) / 2**20
        finally:
            stop_server(proc, log)
        rows.append(("MLflow 1 server, SQLite", level, fig, rss))
        print(f"  {'MLflow 1 server, SQLite':<36} {level:>4} uploaders: {fig['pps']:>9,.0f} "
              f"points/s, p95 {fig['p95']:.2f} s, RSS {rss:.0f} MB", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,10,50,200")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--mlflow", default=shutil.which("mlflow"))
    parser.add_argument("--mlflow-levels", default="1,10,50",
                        help="MLflow's levels (200 uploaders take many minutes there)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    from tests.pg_harness import PostgresProcess
    from tests.s3_harness import SeaweedProcess

    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with PostgresProcess(tmp / "pg", settings={"synchronous_commit": "on"}) as pg, \
                SeaweedProcess(tmp / "s3") as s3:
            for replicas in (1, 3):
                rows += bench_runstore(f"runstore {replicas} replica(s), PG + S3", tmp,
                                       replicas, levels, args.points, pg, s3)
        rows += bench_runstore("runstore 1 replica, SQLite + dir", tmp, 1, levels,
                               args.points)
        if args.mlflow:
            rows += bench_mlflow(args.mlflow, tmp,
                                 [int(x) for x in args.mlflow_levels.split(",")], args.points)
        else:
            print("MLflow: skipped (no `mlflow` on PATH; pass --mlflow PATH)")
    reference = {level: fig["pps"] for label, level, fig, _ in rows
                 if label.startswith("MLflow") and fig["pps"] > 0}
    print()
    print("| setup | uploaders | points/s | p95 finish-to-visible | peak RSS per replica |"
          + (" vs MLflow |" if reference else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if reference else ""))
    for label, level, fig, rss in rows:
        ratio = (f" {fig['pps'] / reference[level]:.1f}x |" if level in reference else " |") \
            if reference else ""
        fail = f" ({fig['failed']} failed)" if fig["failed"] else ""
        print(f"| {label} | {level} | {fig['pps']:,.0f}{fail} | {fig['p95']:.2f} s | "
              f"{rss:.0f} MB |{ratio}")
    print(f"\n{args.points} points per run; limit: peak RSS per replica <= 200 MB "
          f"(worst measured: {max(r[3] for r in rows if r[0].startswith('runstore')):.0f} MB)")


if __name__ == "__main__":
    main()
