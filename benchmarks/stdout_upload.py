"""What stdout.log adds to uploading a run: upload_run of small runs (200 rows) to a real local
`runstore serve`, without a log, with a 64 KB log, and with a 20 MB one; each figure beside
the same upload without a log, measured in the same run (a ratio).

    .venv/bin/python benchmarks/stdout_upload.py [--runs 30]

Targets: a run with a 64 KB log uploads within 1.5x the time of one without (three more
small requests: blob status, its bytes, the PUT); uploaded again unchanged (syncd with a live
run) within 1.1x (no request for the log); a 20 MB log goes at blob speed (MB/s printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from runstore.remote import Client, upload_run  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.remote.rs_fixtures import make_run  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402


def _log(store: Store, run: str, size: int) -> None:
    local = Path(store.read("SELECT local_dir FROM runs WHERE uuid = ?", (run,))[0][0])
    local.mkdir(parents=True, exist_ok=True)
    line = b"epoch 12: loss=0.1234 acc=0.9876 lr=0.001 time=1.23s\n"
    (local / "stdout.log").write_bytes((line * (size // len(line) + 1))[:size - 1] + b"\n")


def _upload(store: Store, client: Client, name: str, log_bytes: int) -> tuple[float, float]:
    """(first upload, the same run uploaded again unchanged: what syncd does to a live run)."""
    run = make_run(store, name, n_metrics=200)
    if log_bytes:
        _log(store, run, log_bytes)
    start = time.perf_counter()
    assert upload_run(store, run, client).complete
    first = time.perf_counter() - start
    start = time.perf_counter()
    upload_run(store, run, client)
    return first, time.perf_counter() - start


def _pairs(store: Store, client: Client, runs: int, log_bytes: int
           ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Runs without and with a log, alternating (a slower moment hits both alike); each log's
    bytes differ (no dedup)."""
    plain, logged = [], []
    for i in range(runs):
        plain.append(_upload(store, client, f"plain-{log_bytes}-{i}", 0))
        logged.append(_upload(store, client, f"log-{log_bytes}-{i}", log_bytes - i))
    return plain, logged


def _p50(pairs: list[tuple[float, float]], which: int) -> float:
    return statistics.median(p[which] for p in pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "srv") as server:
        token = server.add_user("alice")
        store = Store(Path(tmp) / "home")
        with Client(server.url, token) as client:
            _pairs(store, client, 3, 1000)  # warm up
            plain, small = _pairs(store, client, args.runs, 64 * 1024)
            big_plain, big = _pairs(store, client, max(3, args.runs // 10), 20 << 20)
        store.close()
    base, log = _p50(plain, 0), _p50(small, 0)
    print(f"upload_run, 200 rows, no stdout.log: p50 {base * 1000:.1f} ms; "
          f"with a 64 KB one: p50 {log * 1000:.1f} ms (ratio {log / base:.2f}, "
          "target <= 1.50)")
    base, log = _p50(plain, 1), _p50(small, 1)
    print(f"uploaded again unchanged: p50 {base * 1000:.1f} ms; with the 64 KB log: "
          f"p50 {log * 1000:.1f} ms (ratio {log / base:.2f}, target <= 1.10)")
    base, log = _p50(big_plain, 0), _p50(big, 0)
    print(f"with a 20 MB log: p50 {log * 1000:.1f} ms, {20 / max(log - base, 1e-9):.0f} MB/s "
          f"for the log ({len(big)} runs)")
    print(f"machine load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
