"""MLflow's side of benchmarks/ui_latency.py (issue 11): the same two UI reads -- the runs page of
an experiment with 10,000 runs, and a chart's data for a 1,000,000-point metric -- timed against a
real `mlflow server` (SQLite backend), with the requests MLflow's own web UI sends.

    .venv/bin/python benchmarks/mlflow_ui.py [--mlflow /tmp/mlflow-venv/bin/mlflow]
        [--runs 10000] [--points 1000000] [--iterations 60]

MLflow lives in a venv of its own (this project's venv never imports it). Seeding runs a script
with that venv's Python, writing through MLflow's own store
(``mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore``: ``create_run``, ``log_batch``,
``update_run_info``) into a SQLite file; the server is then started on it and every request goes
over loopback HTTP with httpx, from this process. So MLflow's figures include a loopback HTTP
round trip and uvicorn's request handling, where runstore's (ui_latency.py) are in process.

The requests, and where MLflow 3.x's UI builds them (mlflow/server/js/src/experiment-tracking/):

* runs table: ``POST /ajax-api/2.0/mlflow/runs/search`` with ``{"experiment_ids": [id],
  "run_view_type": "ACTIVE_ONLY", "max_results": 100, "order_by": [...], "filter": ...,
  "page_token": ...}`` -- actions.ts ``searchRunsPayload`` (``RUNS_SEARCH_MAX_RESULTS = 100``),
  the body from components/experiment-page/utils/experimentPage.fetch-utils.ts
  ``createSearchRunsParams`` (default sort ``attributes.start_time DESC``, constants.ts; a column
  sort is ``metrics.`key` DESC`` / ``params.`key` ASC``, ``makeCanonicalSortKey``; the search box
  text is sent as the filter as typed, since the regexp quick-search flag is off in 3.x;
  "load more" resends the body with the previous answer's ``next_page_token``).
* line chart: ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=..&metric_key=..
  &max_results=320[&start_step=..&end_step=..]`` --
  components/runs-charts/hooks/useSampledMetricHistory.tsx (REST path; the GraphQL one is behind
  a flag that is off) with ``maxResults: 320`` from
  components/runs-charts/components/cards/RunsChartsLineChartCard.tsx; zooming sends the step
  range. The server samples: NTILE(320) over the run's rows for the key, in SQL.
* the full-history metric page (components/MetricsPlotPanel.tsx, reached from a metric's name):
  ``GET /ajax-api/2.0/mlflow/metrics/get-history?run_uuid=..&metric_key=..&max_results=25000``,
  then again with each ``next_page_token`` until there is none: 40 requests for 1,000,000 points.
  Timed as its first page alone, and as the whole walk (2 to 5 walks only, one warm-up: at
  1,000,000 points a walk takes over a minute).

CPU: the p95 CPU column is the CPU time the uvicorn process serving the requests spent during each
one, read with psutil before and after (NaN without psutil). `mlflow server` 3.x also starts a
job runner with seven huey consumers; timing starts once the whole tree is idle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

Row = tuple[str, float, float, float, float]

STEPS_PER_METRIC = 10  # ui_latency.seed() records 100-point summaries; here 10 real points each

# Run inside MLflow's venv: argv = db file, artifact dir, n_runs, n_points, steps per metric.
# Prints one JSON line: the experiment id, the long run's id, seconds spent on each part.
SEED_SCRIPT = r'''
import json, math, random, sys, time
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

db, artifacts, n_runs, n_points, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
t0 = time.perf_counter()
store = SqlAlchemyStore(f"sqlite:///{db}", artifacts)
exp = store.create_experiment("sweep")
t_schema = time.perf_counter() - t0
rnd = random.Random(1)
base = 1704067200000  # 2024-01-01T00:00:00Z, ms
t0 = time.perf_counter()
for i in range(n_runs):
    start = base + ((i % 28) * 24 + i % 24) * 3_600_000
    run = store.create_run(exp, "alice", start,
                           [RunTag("sweep", "true"), RunTag("label", f"g{i % 7}")],
                           f"run-{i:05d}")
    rid = run.info.run_id
    params = [Param("lr", repr(rnd.choice([1e-4, 3e-4, 1e-3, 3e-3]))),
              Param("batch_size", str(rnd.choice([32, 64, 128]))),
              Param("optimizer.name", rnd.choice(["adam", "sgd"])),
              Param("seed", str(i))]
    metrics = []
    for key in ("train_loss", "val_loss", "val_accuracy"):
        v = rnd.random()
        metrics += [Metric(key, v * (2 - s / steps), start + s * 1000, s) for s in range(steps)]
    store.log_batch(rid, metrics, params, [])
    failed = i % 3 and i % 11 == 0  # ui_latency.seed()'s statuses: Complete, a few Error
    store.update_run_info(rid, RunStatus.FAILED if failed else RunStatus.FINISHED,
                          start + 1_800_000, None)
t_runs = time.perf_counter() - t0
t0 = time.perf_counter()
long = store.create_run(exp, "alice", base + 31 * 86_400_000, [], "long").info.run_id
chunk = 1000  # MLflow's per-request limit for log_batch metrics
for offset in range(0, n_points, chunk):
    store.log_batch(long, [
        Metric("train_loss",
               math.nan if s % 50_000 == 7 else 2.0 * math.exp(-s / 300_000) + rnd.random() * .05,
               base + 31 * 86_400_000 + s, s)
        for s in range(offset, min(n_points, offset + chunk))], [], [])
store.update_run_info(long, RunStatus.FINISHED, None, None)
t_long = time.perf_counter() - t0
print(json.dumps({"experiment_id": exp, "long_run_id": long, "schema_s": t_schema,
                  "runs_s": t_runs, "points_s": t_long}))
'''


def find_mlflow(explicit: str | None) -> str | None:
    """The `mlflow` executable to use: the explicit path if given, else `mlflow` on PATH."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SystemExit(f"--mlflow {explicit}: not an executable file")
        return str(path)
    return shutil.which("mlflow")


def mlflow_python(mlflow: str) -> str:
    """The Python interpreter of the venv `mlflow` belongs to (its console script's shebang)."""
    beside = Path(mlflow).parent / "python"
    if beside.exists():
        return str(beside)
    first = Path(mlflow).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    raise SystemExit(f"{mlflow}: cannot tell which Python it runs on (no python beside it, "
                     f"no python shebang)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(mlflow: str, base: Path, n_runs: int, n_points: int) -> dict:
    script = base / "seed_mlflow.py"
    script.write_text(SEED_SCRIPT)
    out = subprocess.run(
        [mlflow_python(mlflow), str(script), str(base / "mlflow.db"), str(base / "artifacts"),
         str(n_runs), str(n_points), str(STEPS_PER_METRIC)],
        capture_output=True, text=True, cwd=base)
    if out.returncode != 0:
        raise RuntimeError("seeding MLflow failed:\n" + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_server(mlflow: str, base: Path) -> tuple[subprocess.Popen, str, object]:
    """`mlflow server` on the seeded SQLite file, started as benchmarks/fleet.py bench_mlflow
    does; returns it once /health answers."""
    import httpx

    port = _free_port()
    log = (base / "mlflow.log").open("ab")
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--default-artifact-root", str(base / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return proc, url, log
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {log.name}")
            time.sleep(0.3)
    except BaseException:
        stop_server(proc, log)
        raise


def stop_server(proc: subprocess.Popen, log) -> None:
    """SIGTERM to the server's process group (the CLI, uvicorn, MLflow 3's job runner and its
    huey consumers), then wait for every one of them; SIGKILL what is left after 30 s."""
    try:
        import psutil

        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except Exception:
        tree = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    if tree:
        import psutil

        _, alive = psutil.wait_procs(tree, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def settle(pid: int, most_s: float = 240.0) -> float:
    """Seconds until the server's process tree is idle (under 5% of a core over 2 s): MLflow 3
    starts a job runner and seven huey consumers beside uvicorn, each importing mlflow for
    several CPU-seconds, which would otherwise compete with the first timed requests."""
    try:
        import psutil
    except ImportError:
        time.sleep(30)
        return 30.0

    def tree_cpu() -> float:
        total = 0.0
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    start = time.monotonic()
    while time.monotonic() - start < most_s:
        before = tree_cpu()
        time.sleep(2)
        if tree_cpu() - before < 0.1:
            break
    return time.monotonic() - start


class ServerCpu:
    """CPU seconds (user + system) used so far by the uvicorn process that serves the requests
    (and any workers under it); the job runner and its huey consumers are left out."""

    def __init__(self, pid: int):
        try:
            import psutil
        except ImportError:
            self.procs: list = []
            return
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        servers = [p for p in tree if "uvicorn" in " ".join(p.cmdline())
                   or "gunicorn" in " ".join(p.cmdline())]
        self.procs = ([servers[0], *servers[0].children(recursive=True)] if servers else tree)

    def __call__(self) -> float:
        if not self.procs:
            return math.nan
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
            except Exception:  # a worker gone since
                continue
            total += t.user + t.system
        return total


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def timed(request, check, cpu: ServerCpu, n: int, warmup: int = 3) -> tuple[list[float],
                                                                             list[float]]:
    """Wall-clock ms per request (client side, loopback HTTP included) and the server's CPU ms."""
    for _ in range(warmup):
        check(request())
    wall, cpus = [], []
    for _ in range(n):
        c0 = cpu()
        t0 = time.perf_counter()
        r = request()
        wall.append((time.perf_counter() - t0) * 1000)
        cpus.append((cpu() - c0) * 1000)
        check(r)
    return wall, cpus


def measure_mlflow(mlflow: str, tmp: Path, n_runs: int, n_points: int,
                   iterations: int) -> list[Row]:
    """Seed an MLflow SQLite store like ui_latency.seed(), serve it, time the UI's requests.
    Rows as ui_latency's: (name, p95 wall ms, p95 server CPU ms, median ms, min ms)."""
    import httpx

    base = tmp / "mlflow-ui"
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seeded = seed(mlflow, base, n_runs, n_points)
    total = time.perf_counter() - t0
    print(f"[MLflow] seeded {n_runs:,} runs ({STEPS_PER_METRIC} points x 3 metrics, 4 params, "
          f"2 tags each) in {seeded['runs_s']:.1f} s and {n_points:,} points of one metric "
          f"(log_batch, 1,000 per call) in {seeded['points_s']:.1f} s "
          f"({n_points / seeded['points_s']:,.0f} rows/s); {total:.1f} s in all with schema "
          f"creation and interpreter start", flush=True)
    exp, long = seeded["experiment_id"], seeded["long_run_id"]
    proc, url, log = start_server(mlflow, base)
    results: list[Row] = []

    def add(name: str, wall: list[float], cpus: list[float]) -> None:
        results.append((f"MLflow: {name}", p95(wall), p95(cpus), statistics.median(wall),
                        min(wall)))
        print(f"  {name}: p95 {results[-1][1]:.1f} ms, p50 {results[-1][3]:.1f} ms", flush=True)

    try:
        print(f"[MLflow] server up; its processes idle after {settle(proc.pid):.0f} s more",
              flush=True)
        cpu = ServerCpu(proc.pid)
        with httpx.Client(base_url=url, timeout=600) as client:
            search = "/ajax-api/2.0/mlflow/runs/search"

            def body(order: str, filt: str | None = None, token: str | None = None) -> dict:
                b: dict = {"experiment_ids": [exp], "run_view_type": "ACTIVE_ONLY",
                           "max_results": 100, "order_by": [order]}
                if filt is not None:
                    b["filter"] = filt
                if token is not None:
                    b["page_token"] = token
                return b

            def runs_ok(expect: int | None = min(100, n_runs)):
                def check(r: httpx.Response) -> None:
                    assert r.status_code == 200, (r.status_code, r.text[:300])
                    got = len(r.json().get("runs", []))
                    assert got <= 100 and expect in (None, got), (got, expect)
                return check

            # "Load more" 9 times on the tag filter: the token for rows 900-999 of it (runstore's
            # case is page 20 of 50 rows, rows 950-999).
            label = "tags.label = 'g3'"
            token = None
            for _ in range(9):
                r = client.post(search, json=body("attributes.start_time DESC", label, token))
                token = r.json().get("next_page_token")
                if not token:
                    break
            new = "attributes.start_time DESC"
            cases = [
                ("runs page, default (runs/search, 100 rows)", body(new), runs_ok()),
                ("runs page, sorted by metric val_accuracy", body("metrics.`val_accuracy` DESC"),
                 runs_ok()),
                ("runs page, sorted by param lr", body("params.`lr` ASC"), runs_ok()),
                ("runs page, tag filter label=g3", body(new, label), runs_ok(None)),
            ]
            if token:
                cases.append(("runs page, tag filter, 10th page (page_token)",
                              body(new, label, token), runs_ok(None)))
            cases.append(("runs page, name filter LIKE '%run-012%'",
                          body(new, "attributes.run_name LIKE '%run-012%'"), runs_ok(None)))
            for name, b, check in cases:
                wall, cpus = timed(lambda b=b: client.post(search, json=b), check, cpu,
                                   iterations)
                add(name, wall, cpus)

            interval = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"

            def points_ok(most: int):
                def check(r: httpx.Response) -> None:
                    assert r.status_code == 200, (r.status_code, r.text[:300])
                    got = len(r.json().get("metrics", []))
                    assert 0 < got <= most, (got, most)
                return check

            lo, hi = n_points // 3 + 17, 2 * n_points // 3 - 5
            charts = [
                (f"chart data, {n_points:,} points, sampled to 320",
                 {"run_ids": long, "metric_key": "train_loss", "max_results": 320}),
                (f"chart data, {n_points:,} points, zoomed to a third",
                 {"run_ids": long, "metric_key": "train_loss", "max_results": 320,
                  "start_step": lo, "end_step": hi}),
            ]
            for name, params in charts:
                wall, cpus = timed(lambda p=params: client.get(interval, params=p),
                                   points_ok(320), cpu, iterations)
                add(name, wall, cpus)

            history = "/ajax-api/2.0/mlflow/metrics/get-history"
            first = {"run_uuid": long, "metric_key": "train_loss", "max_results": 25000}
            wall, cpus = timed(lambda: client.get(history, params=first),
                               points_ok(25000), cpu, iterations)
            add("full history, first page (get-history, 25,000)", wall, cpus)

            def walk() -> httpx.Response:
                got, page_token = 0, None
                while True:
                    params = dict(first, **({"page_token": page_token} if page_token else {}))
                    r = client.get(history, params=params)
                    assert r.status_code == 200, (r.status_code, r.text[:300])
                    data = r.json()
                    got += len(data.get("metrics", []))
                    page_token = data.get("next_page_token")
                    if not page_token:
                        assert got == n_points, (got, n_points)
                        return r

            walks = max(2, min(5, iterations // 12))
            wall, cpus = timed(walk, lambda r: None, cpu, walks, warmup=1)
            pages = math.ceil(n_points / 25000)
            add(f"full history, all {pages} pages ({walks} walks)", wall, cpus)
    finally:
        stop_server(proc, log)
    return results


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow", help="path of an `mlflow` executable (default: on PATH)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args()
    if args.runs < 1 or args.points < 100 or args.iterations < 2:
        raise SystemExit("need --runs >= 1, --points >= 100, --iterations >= 2")
    mlflow = find_mlflow(args.mlflow)
    if mlflow is None:
        raise SystemExit("no `mlflow` on PATH; pass --mlflow PATH (an MLflow in a venv of its "
                         "own: python3 -m venv V && V/bin/pip install mlflow)")
    version = subprocess.run([mlflow, "--version"], capture_output=True, text=True).stdout
    print(f"{version.strip()} ({mlflow})", flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = measure_mlflow(mlflow, Path(tmp), args.runs, args.points, args.iterations)
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after: {' '.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} CPUs; "
          f"{time.perf_counter() - started:.0f} s in all")
    print("MLflow's figures include a loopback HTTP round trip (runstore's are in process); "
          "CPU = the uvicorn process serving them")
    print(f"\n{'case':<66} {'p95':>8} {'p50':>8} {'min':>8} {'p95 CPU':>8}")
    for name, wall, cpu, median, fastest in results:
        print(f"{name:<66} {wall:8.1f} {median:8.1f} {fastest:8.1f} {cpu:8.1f}")
    print("(ms of wall-clock time per request unless marked CPU)")


if __name__ == "__main__":
    main()
