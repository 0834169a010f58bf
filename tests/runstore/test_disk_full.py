"""A full disk (a file-size limit, for real): clear error, integrity ok, logging resumes."""

from __future__ import annotations

from pathlib import Path

from runstore.store import Store
from tests.runstore.helpers import run_script

SCRIPT = """
import os, resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
import runstore as em
from runstore.errors import StoreFullError
run = em.create_run(name="full")
run.log("train", {"x": 0.0}, step=0)
run.flush()
wal = os.path.join(os.environ["RUNSTORE_HOME"], "runstore.db-wal")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(wal) + 4096, hard))
for i in range(1, 20001):
    run.log("train", {"x": float(i), "y": 2.0}, step=i)   # never raises
try:
    run.flush()
    print("FLUSH OK")
except StoreFullError as exc:
    print("REFUSED", exc)
print("BUFFERED", len(run._pending))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space returns
run.finish()
print("STATUS", run.status)
"""


def test_disk_full_keeps_rows_and_recovers(tmp_path: Path):
    home = tmp_path / "home"
    proc = run_script(SCRIPT, home)
    lines = proc.stdout.splitlines()
    refused = [x for x in lines if x.startswith("REFUSED")]
    assert refused and "disk full or a file-size limit" in refused[0]
    assert "Try: free space" in refused[0]
    assert int([x for x in lines if x.startswith("BUFFERED")][0].split()[1]) > 0
    assert "STATUS Complete" in lines
    # the background writer said so once, not once per attempt
    assert proc.stderr.count("cannot write metrics yet") <= 1
    store = Store(home)
    assert store.read("PRAGMA integrity_check")[0][0] == "ok"
    count, max_seq = store.read("SELECT COUNT(*), MAX(seq) FROM metrics")[0]
    assert count == 1 + 20000 * 2 and max_seq == count - 1
