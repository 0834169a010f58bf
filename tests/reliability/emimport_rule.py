"""Issue 12's part of the model test: a t9k .em run directory (tests/t9k/emdirs.py, written
the way t9k writes it) imported into the training process's store with `runstore import`,
maybe twice, maybe with its metrics file cut short mid-record. syncd then uploads it like any
other run, and chain.final_check holds it to the same standard: on the server exactly once,
complete, with exactly the rows the store holds, whatever faults happen meanwhile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runstore.emimport import run_uuid
from tests.server_harness import CLI
from tests.t9k.emdirs import write_run

REPO_ROOT = Path(__file__).resolve().parents[2]


def import_em_run(base: Path, home: Path, name: str, rows: int, cut: bool,
                  twice: bool) -> tuple[str, str]:
    """Write and import one run directory; returns (uuid, alternative name)."""
    em = base / "em"
    alt = write_run(em, name, rows=rows)
    metrics = em / "runs" / alt / "metrics" / "train.yaml"
    if cut and metrics.exists():
        data = metrics.read_bytes()
        metrics.write_bytes(data[:max(0, len(data) - 25)])
    env = {**os.environ, "RUNSTORE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(2 if twice else 1):
        done = subprocess.run([*CLI, "import", str(em / "runs" / alt)], env=env, cwd=base,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"runstore import failed: {done.stderr}"
    return run_uuid(alt), alt
