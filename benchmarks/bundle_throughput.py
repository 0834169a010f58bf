"""Bundle throughput: export and import of a finished run with 1,000,000 metric points and a
100 MB artifact, each against a limit measured in the same run on the same bytes.

    .venv/bin/python benchmarks/bundle_throughput.py [--points 1000000] [--mb 100] [--runs 100]

- export vs `cp -r` of the bundle's bytes followed by fsync of every copied file (the export
  fsyncs what it writes before COMMIT; cp alone is printed too), medians of --repeat
  alternating rounds. Target: ratio >= 0.50.
- import (verify every hash, merge into the staging store, upload to a real local
  `runstore serve`) vs uploading the same run over the network from its own store
  (runstore.remote.upload_run to a second fresh server). Target: ratio >= 0.70.
- incremental export: 1,000 new points of one live run in a store of --runs runs, all
  exported before. Target: under 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "remote"))
sys.path.insert(0, str(REPO / "benchmarks"))

from rs_fixtures import add_metrics, finish, link, make_run  # noqa: E402
from upload_throughput import make_artifact  # noqa: E402

from runstore.bundle import export_bundle, import_bundles, staging_store  # noqa: E402
from runstore.remote import Client, upload_run  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def bench_export(store: Store, tmp: Path, repeat: int) -> tuple[Path, float, float, float]:
    """Medians of ``repeat`` alternating rounds (the machine is shared: one round is noise)."""
    exports, cps, cp_syncs = [], [], []
    bundle = None
    for i in range(repeat):
        t0 = time.perf_counter()
        made = export_bundle(store, tmp / f"usb{i}", mode="all")
        exports.append(time.perf_counter() - t0)
        assert made is not None
        bundle = made.path
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(made.path), str(tmp / "cp-copy")], check=True)
        cps.append(time.perf_counter() - t0)
        _fsync_tree(tmp / "cp-copy")
        cp_syncs.append(time.perf_counter() - t0)
        shutil.rmtree(tmp / "cp-copy")
        if i < repeat - 1:
            shutil.rmtree(made.path)
    assert bundle is not None
    return bundle, statistics.median(exports), statistics.median(cps), \
        statistics.median(cp_syncs)


def bench_import(store: Store, run_uuid: str, bundle: Path, tmp: Path) -> tuple[float, float]:
    with ServerProcess(tmp / "srv-import") as server:
        token = server.add_user("bench")
        with Client(server.url, token) as client:
            t0 = time.perf_counter()
            report = import_bundles([bundle], store=staging_store(tmp / "gateway"),
                                    client=client)
            t_import = time.perf_counter() - t0
    assert report.ok and all(r.complete for r in report.runs), report.to_json()
    with ServerProcess(tmp / "srv-upload") as server:
        token = server.add_user("bench")
        with Client(server.url, token) as client:
            t0 = time.perf_counter()
            result = upload_run(store, run_uuid, client)
            t_upload = time.perf_counter() - t0
    assert result.complete
    return t_import, t_upload


def bench_incremental(tmp: Path, runs: int, points_per_run: int) -> float:
    store = Store(tmp / "many")
    uuids = [make_run(store, f"r{i}", n_metrics=points_per_run) for i in range(runs - 1)]
    live = make_run(store, "live", n_metrics=points_per_run, status="Running")
    assert export_bundle(store, tmp / "usb-many") is not None
    add_metrics(store, live, 1000)
    t0 = time.perf_counter()
    made = export_bundle(store, tmp / "usb-many")
    took = time.perf_counter() - t0
    assert made is not None and made.metric_rows == 1000 and len(made.runs) == 1
    del uuids
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points-per-run", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="Export/cp rounds (median).")
    parser.add_argument("--export-only", action="store_true",
                        help="Skip the import and incremental parts (quick re-measure).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store = Store(tmp / "node")
        run = make_run(store, "big", n_metrics=0, status="Running")
        add_metrics(store, run, args.points)
        art = make_artifact(store, tmp, args.mb)
        link(store, run, art, "output")
        finish(store, run)
        bundle, t_export, t_cp, t_cp_sync = bench_export(store, tmp, args.repeat)
        size_mb = _tree_bytes(bundle) / 1e6
        if args.export_only:
            t_import = t_upload = t_incr = float("nan")
        else:
            t_import, t_upload = bench_import(store, run, bundle, tmp)
            t_incr = bench_incremental(tmp, args.runs, args.points_per_run)

    print(f"bundle: {args.points:,} points + {args.mb} MB artifact = {size_mb:.1f} MB on disk")
    print(f"export          {t_export:6.2f} s  ({size_mb / t_export:6.1f} MB/s)")
    print(f"cp -r           {t_cp:6.2f} s  ({size_mb / t_cp:6.1f} MB/s)")
    print(f"cp -r + fsync   {t_cp_sync:6.2f} s  ({size_mb / t_cp_sync:6.1f} MB/s)")
    print(f"  export speed / (cp + fsync) speed = {t_cp_sync / t_export:.2f}  (target >= 0.50)")
    print(f"  export speed / cp speed           = {t_cp / t_export:.2f}")
    print(f"import (verify + merge + upload)  {t_import:6.2f} s  "
          f"({args.points / t_import:,.0f} points/s)")
    print(f"network upload of the same run    {t_upload:6.2f} s  "
          f"({args.points / t_upload:,.0f} points/s)")
    print(f"  import rate / upload rate = {t_upload / t_import:.2f}  (target >= 0.70)")
    print(f"incremental export, 1,000 new points, store of {args.runs} runs "
          f"({args.runs * args.points_per_run:,} points): {t_incr:.3f} s  (target < 1 s, "
          f"ratio {t_incr / 1.0:.2f} of the limit)")


if __name__ == "__main__":
    main()
