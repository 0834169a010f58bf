"""Promise 2: what was flushed before a crash survives it; crashed runs end as Error."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runstore.store import Store, reap_dead_runs

LOGGER = """
import sys, runstore as em
run = em.create_run(name="victim")
i = 0
while True:
    run.log("train", {"loss": 1.0 / (i + 1), "acc": i * 0.01}, step=i)
    i += 1
    if i % 500 == 0:
        n = run.flush()
        print("FLUSHED", run._metric_count, flush=True)
"""


def start_logger(home: Path, tmp: Path) -> subprocess.Popen:
    script = tmp / "logger.py"
    script.write_text(LOGGER)
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RUNSTORE_HOME": str(home)})


@pytest.mark.parametrize("trial", range(30))
def test_sigkill_keeps_every_flushed_point(trial: int, tmp_path: Path):
    home = tmp_path / "home"
    proc = start_logger(home, tmp_path)
    flushed = 0
    target = random.Random(trial).randint(1, 8)
    for _ in range(target):
        line = proc.stdout.readline()
        assert line.startswith("FLUSHED"), line
        flushed = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()

    store = Store(home)
    assert store.read("PRAGMA integrity_check")[0][0] == "ok"
    assert reap_dead_runs(store) != []
    run = store.read("SELECT * FROM runs")[0]
    assert run["status"] == "Error"
    assert run["end_timestamp"] is not None and run["end_timestamp"] >= run["start_timestamp"]
    rows = store.read("SELECT COUNT(*), MAX(seq) FROM metrics WHERE run_id = ?", (run["id"],))
    count, max_seq = rows[0]
    assert count >= flushed and count == run["metric_count"] == max_seq + 1
    # whole log() calls only: both keys of every call are there
    assert count % 2 == 0
    assert store.read("SELECT state FROM sync_state")[0][0] == "pending"


@pytest.mark.parametrize("ending, code", [
    ("raise RuntimeError('boom')", 1),
    ("import sys; sys.exit(3)", 3),
    ("pass", 0),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 143),
])
def test_script_ending_without_finish_marks_error(ending: str, code: int, tmp_path: Path):
    home = tmp_path / "home"
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(f"""
        import runstore as em
        run = em.create_run(name="unfinished")
        for i in range(100):
            run.log("train", {{"loss": i}}, step=i)
        {ending}
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "RUNSTORE_HOME": str(home)}, timeout=60)
    assert proc.returncode == code, proc.stderr
    store = Store(home)
    run = store.read("SELECT status, end_timestamp, metric_count FROM runs")[0]
    assert run["status"] == "Error" and run["end_timestamp"] is not None
    assert run["metric_count"] == 100


def test_opening_the_store_reaps_a_killed_run(tmp_path: Path):
    home = tmp_path / "home"
    proc = start_logger(home, tmp_path)
    assert proc.stdout.readline().startswith("FLUSHED")
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    # whoever opens the store next through the SDK marks it
    out = subprocess.run(
        [sys.executable, "-c", "import runstore as em; r = em.load_run('victim'); "
         "print(r.status); r.finish()"],
        capture_output=True, text=True, env={**os.environ, "RUNSTORE_HOME": str(home)},
        timeout=60, check=True)
    assert out.stdout.strip() == "Running"  # load_run re-opened the Error run
    store = Store(home)
    assert store.read("SELECT status FROM runs")[0][0] == "Complete"


def test_live_run_is_not_reaped(tmp_path: Path):
    home = tmp_path / "home"
    proc = start_logger(home, tmp_path)
    try:
        assert proc.stdout.readline().startswith("FLUSHED")
        store = Store(home)
        assert reap_dead_runs(store) == []
        assert store.read("SELECT status FROM runs")[0][0] == "Running"
        # a run of another host is judged by its heartbeat, which the live logger keeps fresh
        # (so the test moves `now` on instead of ageing a heartbeat the logger would renew)
        with store.write() as conn:
            conn.execute("UPDATE runs SET hostname = 'elsewhere'")
        assert reap_dead_runs(store) == []
        assert reap_dead_runs(store, now=time.time() + 7200) == [
            store.read("SELECT alternative_name FROM runs")[0][0]]
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
