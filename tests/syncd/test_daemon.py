"""The REAL daemon (`python -m syncd.cli run`) against the REAL server (`runstore serve`)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

from tests.factories import node_env, syncd_cli
from tests.syncd.helpers import (
    all_synced,
    assert_exactly_once,
    local_runs,
    make_runs,
    run_python,
    server_runs,
    wait_for,
)


def test_finished_and_crashed_runs_reach_the_server(server, token, daemons, home) -> None:
    daemon = daemons(server.url, token).start()
    uuids = set(make_runs(home, 3, rows=50, folder="proj/sub", make_folder=True))
    # A training process SIGKILLed mid-run: the daemon's reaper marks it Error, it still syncs.
    proc = run_python("""
        import runstore as em, sys
        run = em.create_run(name='crashy')
        for step in range(30):
            run.log('train', {'loss': step}, step=step)
        run.flush()
        print(run.uuid, flush=True)
        sys.stdin.read()
    """, home, background=True)
    crashed = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    uuids.add(crashed)
    wait_for(lambda: all_synced(home, uuids), 30, "all runs synced")
    assert local_runs(home)[crashed]["status"] == "Error"
    assert_exactly_once(home, server.data_dir, uuids)
    assert server_runs(server.data_dir)[crashed][0]["rows"] == 30
    assert daemon.alive()
    # READY came with queue figures in STATUS, and the figures follow the queue.
    assert "STATUS=pending" in daemon.wait_message("READY=1")
    daemon.wait_message("STATUS=pending 0, uploading 0, synced 4")


def test_second_daemon_on_the_same_store_exits_with_a_clear_message(
        server, token, daemons, home, config_dir) -> None:
    first = daemons(server.url, token).start()
    env = dict(first.env)
    env.pop("NOTIFY_SOCKET")
    second = syncd_cli("run", env=env)
    assert second.returncode == 1
    assert f"another syncd (pid {first.pid}) is already running" in second.stderr
    once = syncd_cli("once", env=env)
    assert once.returncode == 1 and "already running" in once.stderr
    assert first.alive()


def test_sigterm_stops_within_5s_mid_upload_and_nothing_is_lost(server, token, daemons,
                                                                home) -> None:
    uuids = set(make_runs(home, 2, rows=60_000))
    daemon = daemons(server.url, token, concurrency=2).start()
    # Wait until an upload is under way (rows arriving on the server), then stop.
    wait_for(lambda: any(c[0]["rows"] > 0 for c in server_runs(server.data_dir).values()),
             30, "an upload in progress", interval_s=0.01)
    took = daemon.terminate()
    assert took < 5.0, took
    assert daemon.proc.returncode == 0
    assert "stopping" in daemon.log()
    states = {local_runs(home)[u]["state"] for u in uuids}
    assert states <= {"uploading", "synced", "pending"}
    daemons(server.url, token).start()
    wait_for(lambda: all_synced(home, uuids), 60, "all runs synced after restart")
    assert_exactly_once(home, server.data_dir, uuids)


def test_a_running_run_is_never_uploaded_as_complete(server, token, daemons, home,
                                                     tmp_path: Path) -> None:
    go = tmp_path / "finish-now"
    daemon = daemons(server.url, token, live_interval_s=0.2).start()
    proc = run_python(f"""
        import os, time, runstore as em
        live = em.create_run(name='live', auto_upload=True)
        quiet = em.create_run(name='quiet')
        print(live.uuid, quiet.uuid, flush=True)
        step = 0
        while not os.path.exists({str(go)!r}):
            live.log('train', {{'loss': step}}, step=step)
            quiet.log('train', {{'loss': step}}, step=step)
            step += 1
            time.sleep(0.01)
        live.finish()
        quiet.finish()
    """, home, background=True)
    try:
        live, quiet = proc.stdout.readline().split()
        # The auto_upload run's rows go up while it is live, but never as complete.
        wait_for(lambda: server_runs(server.data_dir).get(live, [{}])[0].get("rows", 0) > 20,
                 30, "live rows on the server")
        snapshot = server_runs(server.data_dir)
        assert [c["complete"] for c in snapshot[live]] == [False]
        assert quiet not in snapshot  # not auto_upload: only once it has finished
        assert local_runs(home)[live]["state"] is None
        go.touch()
        assert proc.wait(60) == 0
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    wait_for(lambda: all_synced(home, {live, quiet}), 30, "both synced after finish")
    assert_exactly_once(home, server.data_dir, {live, quiet})
    assert daemon.alive()


def test_only_auto_upload_setting(server, token, daemons, home) -> None:
    daemons(server.url, token, only_auto_upload="true").start()
    plain = set(make_runs(home, 2, prefix="plain"))
    auto = set(make_runs(home, 2, prefix="auto", auto_upload=True))
    wait_for(lambda: all_synced(home, auto), 30, "auto_upload runs synced")
    remote = server_runs(server.data_dir)
    assert set(remote) == auto
    assert {local_runs(home)[u]["state"] for u in plain} == {"pending"}


def test_a_4xx_fails_one_run_with_the_message_and_the_rest_sync(server, token, daemons,
                                                                home) -> None:
    bad = make_runs(home, 1, prefix="bad", folder="missing/folder", make_folder=False)[0]
    good = set(make_runs(home, 3, prefix="good"))
    daemon = daemons(server.url, token).start()
    wait_for(lambda: all_synced(home, good), 30, "the good runs synced")
    wait_for(lambda: local_runs(home)[bad]["state"] == "failed", 30, "the bad run failed")
    error = local_runs(home)[bad]["error"]
    assert "missing/folder" in error and "HTTP 4" in error, error
    assert bad not in server_runs(server.data_dir)
    assert "run bad0_" in daemon.log() and "refused by the server" in daemon.log()
    status = syncd_cli("status", "--json", env=daemon.env)
    report = json.loads(status.stdout)
    assert report["daemon"] == {"running": True, "pid": daemon.pid}
    assert report["counts"]["failed"] == 1 and report["counts"]["synced"] == 3
    assert [r["last_error"] for r in report["runs"] if r["uuid"] == bad] == [error]


def test_server_down_then_up_everything_arrives(server, token, daemons, home) -> None:
    server.stop()
    daemon = daemons(server.url, token, max_backoff_s=2, log_level="DEBUG").start()
    uuids = set(make_runs(home, 4))
    wait_for(lambda: "unavailable" in daemon.log(), 30, "the daemon noticing the outage")
    # While the server is away: a few probes (each later one a DEBUG 'still failing' line,
    # waited for rather than slept for), one warning, the runs wait.
    wait_for(lambda: daemon.log().count("still failing") >= 2, 30, "two more probes")
    assert daemon.log().count("unavailable") == 1
    assert not all_synced(home, uuids)
    server.start()
    wait_for(lambda: all_synced(home, uuids), 30, "everything synced after the server came up")
    assert_exactly_once(home, server.data_dir, uuids)
    log = daemon.log()
    assert log.count("unavailable") == 1 and log.count("reachable again") == 1, log


def test_syncd_once_exit_codes(server, token, home, config_dir) -> None:
    env = node_env(home, config_dir=config_dir, server_url=server.url, token=token)

    def once() -> subprocess.CompletedProcess:
        return syncd_cli("once", env=env)

    good = set(make_runs(home, 2))
    result = once()
    assert (result.returncode, result.stdout.splitlines()[0]) == \
        (0, "synced 2, failed 0, retrying 0"), result.stderr
    bad = make_runs(home, 1, prefix="bad", folder="nope/x")[0]
    result = once()
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "synced 0, failed 1, retrying 0"
    assert f"failed {bad}: " in result.stdout
    remote = server_runs(server.data_dir)
    assert set(remote) == good
    assert all(len(remote[u]) == 1 and remote[u][0]["complete"] for u in good)
    assert local_runs(home)[bad]["state"] == "failed"


def test_a_finished_run_edited_after_its_sync_is_synced_again(server, token, daemons,
                                                             home) -> None:
    """run.description / labels / hparams changed after finish() and after the run went up:
    syncd notices (the run is pending again) and the server gets the change."""
    daemons(server.url, token).start()
    proc = run_python("""
        import os, sqlite3, time
        import runstore as em
        run = em.create_run(name='edited', hparams={'lr': 0.1})
        run.log('train', {'loss': 1.0}, step=1)
        run.finish()
        db = sqlite3.connect(os.path.join(os.environ['RUNSTORE_HOME'], 'runstore.db'))
        deadline = time.monotonic() + 30
        while db.execute("SELECT state FROM sync_state").fetchone() != ('synced',):
            assert time.monotonic() < deadline, 'not synced in 30 s'
            time.sleep(0.05)
        run.description = 'best so far'
        run.hparams['lr'] = 0.5
        run.labels = ['keep']
        print(run.uuid)
    """, home)
    uuid = proc.stdout.strip()
    wait_for(lambda: _server_meta(server.data_dir, uuid)[0] == "best so far"
             and all_synced(home, {uuid}), 30, "the edit on the server")
    assert _server_meta(server.data_dir, uuid) == ("best so far", 0.5, '["keep"]')
    assert_exactly_once(home, server.data_dir, {uuid})


def _server_meta(data_dir: Path, uuid: str) -> tuple[str, float, str]:
    conn = sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT description, json_extract(hparams, '$.lr'), labels "
                            "FROM runs WHERE uuid = ?", (uuid,)).fetchone()
    finally:
        conn.close()


def server_stdout(data_dir: Path, uuid: str) -> bytes | None:
    """The stdout.log the server holds for the run (its blob's bytes), None if none."""
    conn = sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT f.sha256 FROM t9k_run_files f JOIN runs r ON r.id = f.run_id "
            "WHERE r.uuid = ? AND f.path = 'stdout.log'", (uuid,)).fetchone()
    finally:
        conn.close()
    return None if row is None else (data_dir / "blobs" / row[0][:2] / row[0]).read_bytes()


def test_a_runs_stdout_grows_on_the_server_while_live_and_arrives_whole(
        server, token, daemons, home, tmp_path: Path) -> None:
    """The daemon sends a live run's stdout.log with each upload (a prefix of what it becomes)
    and, after finish(), all of it: the last words too, printed without a newline."""
    go = tmp_path / "finish-now"
    daemon = daemons(server.url, token, live_interval_s=0.2).start()
    proc = run_python(f"""
        import os, sys, time, runstore as em
        run = em.create_run(name='chatty', auto_upload=True)
        sys.__stdout__.write(run.uuid + ' ' + run.local + '\\n')
        sys.__stdout__.flush()
        step = 0
        while not os.path.exists({str(go)!r}):
            print(f'step {{step}}: loss={{1 / (step + 1):.4f}} <script>\\u202e')
            run.log('train', {{'loss': step}}, step=step)
            step += 1
            time.sleep(0.01)
        print('the end', end='')
        run.finish()
    """, home, background=True)
    try:
        uuid, local = proc.stdout.readline().split()
        log = Path(local) / "stdout.log"
        wait_for(lambda: (server_stdout(server.data_dir, uuid) or b"").count(b"\n") >= 20, 30,
                 "a live run's stdout.log on the server")
        live = server_stdout(server.data_dir, uuid)
        assert live is not None and log.read_bytes().startswith(live)
        go.touch()
        assert proc.wait(60) == 0
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    wait_for(lambda: all_synced(home, {uuid}), 30, "synced after finish")
    whole = log.read_bytes()
    assert whole.endswith(b"the end") and len(whole) > len(live)
    assert server_stdout(server.data_dir, uuid) == whole
    assert_exactly_once(home, server.data_dir, {uuid})
    assert daemon.alive()
