"""Power loss: the local database comes back as an earlier snapshot, after the server already
holds later data. The next sync must delete nothing on the server and duplicate nothing.

A snapshot is taken with SQLite's online backup (a consistent state at a transaction
boundary, which is what a power cut leaves of a WAL database with synchronous=NORMAL), and put
back in place of runstore.db (its -wal and -shm removed) while no process has the store open.
Syncing is the real `syncd once` against the real server.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from runstore.store import Store
from tests.factories import node_env, syncd_cli
from tests.server_harness import ServerProcess
from tests.syncd.helpers import make_runs, run_python


def snapshot(home: Path, dest: Path) -> Path:
    """A consistent copy of the store's database as it is now (writers may be live)."""
    src = sqlite3.connect(home / "runstore.db", timeout=30)
    out = sqlite3.connect(dest)
    try:
        src.backup(out)
    finally:
        out.close()
        src.close()
    return dest


def power_loss(home: Path, snap: Path) -> None:
    """The machine comes back with the database as it was at the snapshot."""
    for suffix in ("-wal", "-shm"):
        Path(f"{home / 'runstore.db'}{suffix}").unlink(missing_ok=True)
    (home / "runstore.db").write_bytes(snap.read_bytes())


def syncd_once(home: Path, server: ServerProcess, token: str) -> subprocess.CompletedProcess:
    return syncd_cli("once", env=node_env(home, server_url=server.url, token=token),
                     timeout_s=120)


def server_state(data_dir: Path) -> dict[str, Any]:
    """Every run on the server with its rows (a list per UUID: duplicates would show)."""
    conn = sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True)
    try:
        out: dict[str, Any] = {}
        for rid, uuid, name, status, end, count, complete in conn.execute(
                "SELECT id, uuid, name, status, end_timestamp, metric_count, complete "
                "FROM runs ORDER BY id"):
            rows = conn.execute("SELECT seq, type, key, step, epoch, value, timestamp FROM "
                                "metrics WHERE run_id = ? ORDER BY seq", (rid,)).fetchall()
            out.setdefault(uuid, []).append({"name": name, "status": status, "end": end,
                                             "metric_count": count, "complete": complete,
                                             "rows": rows})
        return out
    finally:
        conn.close()


def local_rows(home: Path, uuid: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{home / 'runstore.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT m.seq, m.type, m.key, m.step, m.epoch, m.value, "
                            "m.timestamp FROM metrics m JOIN runs r ON r.id = m.run_id "
                            "WHERE r.uuid = ? ORDER BY m.seq", (uuid,)).fetchall()
    finally:
        conn.close()


def local_state(home: Path, uuid: str) -> tuple[str, str | None, str | None]:
    conn = sqlite3.connect(f"file:{home / 'runstore.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT r.status, s.state, s.last_error FROM runs r LEFT JOIN "
                            "sync_state s ON s.run_id = r.id WHERE r.uuid = ?",
                            (uuid,)).fetchone()
    finally:
        conn.close()


LIVE_RUN = """
import sys, runstore as em
run = em.create_run(name="victim")
for i in range({first}):
    run.log("train", {{"loss": 1.0 / (i + 1)}}, step=i)
run.flush()
print(run.uuid, flush=True)
sys.stdin.readline()          # the test takes the snapshot here
for i in range({first}, {total}):
    run.log("train", {{"loss": 1.0 / (i + 1)}}, step=i)
run.finish()
"""


def log_with_a_snapshot(home: Path, snap: Path, first: int, total: int) -> str:
    """A run that logs ``first`` rows (flushed), is snapshotted, then logs to ``total`` and
    finishes; returns its UUID."""
    env = node_env(home)
    proc = subprocess.Popen([sys.executable, "-c", LIVE_RUN.format(first=first, total=total)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    uuid = proc.stdout.readline().strip()
    assert len(uuid) == 32, uuid
    snapshot(home, snap)
    proc.stdin.write("go\n")
    proc.stdin.close()
    assert proc.wait(60) == 0
    proc.stdout.close()
    return uuid


def test_rolled_back_to_before_the_sync_resyncs_without_duplicates(server, token, home,
                                                                   tmp_path):
    uuids = make_runs(home, 3, rows=2500)  # finished, pending
    snap = snapshot(home, tmp_path / "before-sync.db")
    assert syncd_once(home, server, token).returncode == 0
    before = server_state(server.data_dir)
    assert set(before) == set(uuids)
    power_loss(home, snap)
    assert all(local_state(home, u)[1] == "pending" for u in uuids)  # the sync is forgotten
    done = syncd_once(home, server, token)
    assert done.returncode == 0, done.stdout + done.stderr
    after = server_state(server.data_dir)
    assert after == before  # nothing deleted, nothing twice, not even a metadata change
    for uuid in uuids:
        assert local_state(home, uuid)[1] == "synced"
        assert after[uuid][0]["rows"] == local_rows(home, uuid)


def test_rolled_back_to_mid_run_keeps_the_servers_later_rows(server, token, home, tmp_path):
    snap = tmp_path / "mid-run.db"
    uuid = log_with_a_snapshot(home, snap, first=1000, total=3000)
    assert syncd_once(home, server, token).returncode == 0
    before = server_state(server.data_dir)
    assert before[uuid][0]["metric_count"] == 3000 and before[uuid][0]["complete"]
    power_loss(home, snap)  # locally: Running, 1000 rows, its process long gone
    done = syncd_once(home, server, token)  # reaps it as Error, then uploads
    assert done.returncode == 0, done.stdout + done.stderr
    after = server_state(server.data_dir)
    assert list(after) == [uuid] and len(after[uuid]) == 1
    # Nothing deleted, nothing twice: the server's 3000 rows are untouched.
    assert after[uuid][0]["rows"] == before[uuid][0]["rows"]
    assert after[uuid][0]["metric_count"] == 3000 and after[uuid][0]["complete"]
    assert local_rows(home, uuid) == before[uuid][0]["rows"][:1000]
    assert local_state(home, uuid)[0] == "Error"


def test_rolled_back_store_does_not_overwrite_the_servers_later_state(server, token, home,
                                                                       tmp_path):
    """Regression (found by this file, fixed in runstore.remote by 2d8e797): the restored
    store's older metadata (Error, an earlier end) overwrote the server's Complete run."""
    snap = tmp_path / "mid-run.db"
    uuid = log_with_a_snapshot(home, snap, first=1000, total=3000)
    assert syncd_once(home, server, token).returncode == 0
    before = server_state(server.data_dir)[uuid][0]
    power_loss(home, snap)
    done = syncd_once(home, server, token)
    assert done.returncode == 0, done.stdout + done.stderr  # the server is ahead: nothing to do
    assert local_state(home, uuid)[1] == "synced"
    after = server_state(server.data_dir)[uuid][0]
    assert (after["status"], after["end"]) == (before["status"], before["end"]), (
        f"the server's run went from {before['status']} (ended {before['end']}) to "
        f"{after['status']} (ended {after['end']}) on the word of a store that is behind")


def test_rolled_back_before_a_run_existed_leaves_it_alone(server, token, home, tmp_path):
    Store(home).close()  # a new, empty store
    snap = snapshot(home, tmp_path / "empty.db")
    (old,) = make_runs(home, 1, rows=100, prefix="same")
    assert syncd_once(home, server, token).returncode == 0
    before = server_state(server.data_dir)
    power_loss(home, snap)
    (new,) = make_runs(home, 1, rows=50, prefix="same")  # the same name, a new run
    done = syncd_once(home, server, token)
    assert done.returncode == 0, done.stdout + done.stderr
    after = server_state(server.data_dir)
    assert after[old] == before[old]  # the lost run stays on the server as it was
    assert len(after[new]) == 1 and after[new][0]["rows"] == local_rows(home, new)
    assert after[new][0]["name"] != "same0"  # conflict strategy 'new': renamed, not replaced


def test_resumed_after_rollback_never_silently_diverges(server, token, home, tmp_path):
    """After the rollback the job is requeued and goes on logging (load_run). The rows it
    logs again at seq 1000.. differ from the server's lost ones. Either the server ends up
    with exactly the store's rows, or the run is refused with a reason; never 'synced' with
    different rows on each side.

    Regression (found by this file, fixed in runstore.remote by 2d8e797): rows are matched by
    offset, so the server kept its old rows 1000..2999, took the new ones from 3000 on, and
    the run was marked synced with a different history on each side."""
    snap = tmp_path / "mid-run.db"
    uuid = log_with_a_snapshot(home, snap, first=1000, total=3000)
    assert syncd_once(home, server, token).returncode == 0
    server_before = server_state(server.data_dir)[uuid][0]["rows"]
    power_loss(home, snap)
    run_python(f"""
        import runstore as em
        run = em.load_run({uuid!r})
        for i in range(1000, 4000):
            run.log("train", {{"loss": -1.0 * i}}, step=i)   # not what was lost
        run.finish()
    """, home)
    done = syncd_once(home, server, token)
    after = server_state(server.data_dir)[uuid]
    assert len(after) == 1
    assert after[0]["rows"][:3000] == server_before  # nothing deleted or rewritten
    mine = local_rows(home, uuid)
    _status, state, error = local_state(home, uuid)
    assert after[0]["rows"] == mine or (state == "failed" and error), (
        f"state {state}: the server holds {len(after[0]['rows'])} rows, the store "
        f"{len(mine)}, first difference at seq {_first_difference(after[0]['rows'], mine)}")
    if state == "failed":  # the reason names the run and what happened, with what to do
        assert uuid in error and "restored" in error and "Try:" in error, error
        assert done.returncode == 1, done.stdout


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))
