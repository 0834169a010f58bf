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


def _times(store: Store, client: Client, runs: int, log_bytes: int,
           again: list[float] | None = None) -> list[float]:
    out = []
    for i in range(runs):
        run = make_run(store, f"r{log_bytes}-{i}", n_metrics=200)
        if log_bytes:
            _log(store, run, log_bytes - i)  # other bytes each time: no dedup
        start = time.perf_counter()
        assert upload_run(store, run, client).complete
        out.append(time.perf_counter() - start)
        if again is not None:  # uploaded again unchanged (what syncd does to a live run)
            start = time.perf_counter()
            upload_run(store, run, client)
            again.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "srv") as server:
        token = server.add_user("alice")
        store = Store(Path(tmp) / "home")
        with Client(server.url, token) as client:
            _times(store, client, 3, 0)  # warm up
            plain_again: list[float] = []
            small_again: list[float] = []
            plain = statistics.median(_times(store, client, args.runs, 0, plain_again))
            small = statistics.median(_times(store, client, args.runs, 64 * 1024,
                                             small_again))
            big_runs = max(3, args.runs // 10)
            big = statistics.median(_times(store, client, big_runs, 20 << 20))
        store.close()
    print(f"upload_run, 200 rows, no stdout.log:   p50 {plain * 1000:.1f} ms ({args.runs} runs)")
    print(f"                     64 KB stdout.log: p50 {small * 1000:.1f} ms "
          f"(ratio {small / plain:.2f}, target <= 1.50)")
    again, again_log = statistics.median(plain_again), statistics.median(small_again)
    print(f"again, unchanged, no stdout.log:       p50 {again * 1000:.1f} ms")
    print(f"                  64 KB stdout.log:    p50 {again_log * 1000:.1f} ms "
          f"(ratio {again_log / again:.2f}, target <= 1.10)")
    print(f"                     20 MB stdout.log: p50 {big * 1000:.1f} ms "
          f"({20 / max(big - plain, 1e-9):.0f} MB/s for the log, {big_runs} runs)")
    print(f"machine load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
