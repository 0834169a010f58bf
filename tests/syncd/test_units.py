"""Unit-level tests of the daemon's parts: lock, settings precedence, sd_notify, backoff,
the unit file and the CLI's status/retry output. The daemon end to end is in test_daemon.py."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from runstore import syncstate
from runstore.errors import PermanentRemoteError, TransientRemoteError
from runstore.store import Store
from syncd import lock, logs, service
from syncd.cli import main
from syncd.daemon import Syncer, target_for
from syncd.errors import AlreadyRunningError, SettingsError
from syncd.notify import Notifier
from syncd.schedule import Backoff, ServerHealth
from syncd.settings import Settings, load_settings
from syncd.watch import StoreWatcher


def _finished_run(store: Store, name: str = "r", status: str = "Complete", **target) -> str:
    """A finished run inserted straight into the store (what the SDK leaves behind)."""
    import uuid as _uuid

    uuid = _uuid.uuid4().hex
    with store.write() as conn:
        conn.execute(
            "INSERT INTO runs (uuid, name, alternative_name, start_timestamp, local_dir, "
            "hostname, folder, make_folder, conflict_strategy, auto_upload) "
            "VALUES (?, ?, ?, '2024-01-01T00:00:00+00:00', '/x', 'h', ?, ?, ?, ?)",
            (uuid, name, f"{name}-{uuid[:6]}", target.get("folder", "default"),
             int(target.get("make_folder", False)), target.get("conflict_strategy", "new"),
             int(target.get("auto_upload", False))))
        if status != "Running":
            conn.execute("UPDATE runs SET status = ? WHERE uuid = ?", (status, uuid))
    return uuid


# -- lock ------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    held = lock.acquire(tmp_path)
    with pytest.raises(AlreadyRunningError, match=rf"pid {os.getpid()}.*{tmp_path.name}"):
        lock.acquire(tmp_path)
    assert lock.running_pid(tmp_path) == os.getpid()
    held.release()
    assert lock.running_pid(tmp_path) is None
    lock.acquire(tmp_path).release()


def test_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    code = ("import sys; from syncd import lock; lock.acquire(__import__('pathlib')"
            f".Path({str(tmp_path)!r})); print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunningError, match=f"pid {proc.pid}"):
            lock.acquire(tmp_path)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    lock.acquire(tmp_path).release()  # the kernel dropped the flock with the process


# -- settings --------------------------------------------------------------------------------
def test_settings_precedence_file_env_flags(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "cfgdir"
    cfg.mkdir()
    (cfg / "config.toml").write_text(
        '[server]\nhost = "http://file:1"\n[upload]\nfolder = "fromfile"\n'
        '[syncd]\nconcurrency = 3\nmax_backoff_s = 40\nlive_interval_s = 7\n')
    s = load_settings(directory=cfg, environ={"RUNSTORE_HOME": str(tmp_path / "h")})
    assert (s.host, s.folder, s.concurrency, s.max_backoff_s, s.live_interval_s) == \
        ("http://file:1", "fromfile", 3, 40.0, 7.0)
    assert s.home == tmp_path / "h"
    monkeypatch.setenv("RUNSTORE_SERVER", "http://env:2")
    env = {"RUNSTORE_HOME": str(tmp_path / "h"), "RUNSTORE_SYNCD_CONCURRENCY": "5",
           "RUNSTORE_SYNCD_ONLY_AUTO_UPLOAD": "yes"}
    s = load_settings(directory=cfg, environ=env)
    assert (s.host, s.concurrency, s.only_auto_upload, s.max_backoff_s) == \
        ("http://env:2", 5, True, 40.0)
    s = load_settings({"concurrency": 1, "host": "http://flag:3", "only_auto_upload": None},
                      directory=cfg, environ=env)
    assert (s.host, s.concurrency, s.only_auto_upload) == ("http://flag:3", 1, True)


def test_settings_reject_bad_values_by_name(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[syncd]\nconcurrency = 2\nwhatever = 1\n")
    with pytest.raises(SettingsError, match=r"unknown \[syncd\] keys \['whatever'\]"):
        load_settings(directory=tmp_path, environ={})
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(SettingsError, match="RUNSTORE_SYNCD_MAX_BACKOFF_S.*'soon'"):
        load_settings(directory=tmp_path, environ={"RUNSTORE_SYNCD_MAX_BACKOFF_S": "soon"})
    with pytest.raises(SettingsError, match="concurrency 0 must be >= 1"):
        load_settings({"concurrency": 0}, directory=tmp_path, environ={})


def test_cli_reports_bad_config_as_one_line(tmp_path: Path) -> None:
    cfg = Path(os.environ["RUNSTORE_CONFIG_DIR"])
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text("[syncd]\nconcurrency = 'many'\n")
    result = CliRunner().invoke(main, ["once"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "concurrency" in result.output


def test_run_without_server_says_how_to_log_in() -> None:
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 1
    assert "Error: no server configured" in result.output and "runstore login" in result.output


def test_run_target_falls_back_to_configured_defaults(store: Store, tmp_path: Path) -> None:
    own = _finished_run(store, "a", folder="proj/x", make_folder=True, conflict_strategy="skip")
    plain = _finished_run(store, "b")
    settings = Settings(home=tmp_path, folder="team", make_folder=True,
                        conflict_strategy="replace")
    entries = {e.run_uuid: e for e in syncstate.entries(store)}
    assert target_for(entries[own], settings) == {
        "folder": "proj/x", "make_folder": True, "conflict_strategy": "skip"}
    assert target_for(entries[plain], settings) == {
        "folder": "team", "make_folder": True, "conflict_strategy": "replace"}


# -- sd_notify -------------------------------------------------------------------------------
def test_notify_speaks_the_protocol_to_a_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert n.watchdog_interval_s == 2.0
        assert n.ready("pending 0")
        assert server.recv(4096) == b"READY=1\nSTATUS=pending 0"
        assert n.status("pending 3,\nuploading 1")
        assert server.recv(4096) == b"STATUS=pending 3, uploading 1"
        assert n.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        server.close()


def test_notify_abstract_socket_and_no_socket() -> None:
    name = f"syncd-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ready()
        assert server.recv(100) == b"READY=1"
    finally:
        notifier.close()
        server.close()
    silent = Notifier.from_env({})
    assert not silent.enabled and not silent.ready() and silent.watchdog_interval_s is None
    # WATCHDOG_PID naming another process: the watchdog is not ours to feed.
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10",
                              "WATCHDOG_PID": "1"}).watchdog_interval_s is None


# -- logging ---------------------------------------------------------------------------------
def test_logs_use_journald_priorities_under_systemd() -> None:
    import io

    out = io.StringIO()
    logger = logs.setup("INFO", stream=out, environ={"JOURNAL_STREAM": "8:1234"})
    logger.warning("server down\nsecond line")
    logger.info("synced")
    logger.debug("hidden")
    assert out.getvalue().splitlines() == ["<4>server down | second line", "<6>synced"]
    out = io.StringIO()
    logs.setup("INFO", stream=out, environ={}).error("boom")
    assert out.getvalue().rstrip().endswith("ERROR syncd: boom")


# -- schedule --------------------------------------------------------------------------------
def test_backoff_is_capped_jittered_exponential_and_honours_retry_after() -> None:
    b = Backoff(max_s=60)
    for attempt in range(1, 30):
        expo = min(2 ** (attempt - 1), 30)
        samples = [b.delay(attempt) for _ in range(50)]
        assert all(expo <= d <= 2 * expo for d in samples), (attempt, samples)
    assert len({round(b.delay(5), 6) for _ in range(20)}) > 1  # jittered
    assert b.delay(1, retry_after=45) == 45
    assert b.delay(1, retry_after=10**9) == 3600  # a silly Retry-After is capped


def test_server_health_reports_only_state_changes() -> None:
    now = [1000.0]
    h = ServerHealth(max_backoff_s=300, clock=lambda: now[0])
    assert h.failed("connection refused")  # unknown -> down: a change
    assert not h.failed("connection refused")  # still down: not a change
    assert h.failures == 2 and not h.may_dispatch(now[0])
    now[0] = h.probe_at
    assert h.may_dispatch(now[0])
    assert h.succeeded() and not h.succeeded()
    assert h.failed("slow down", retry_after=120) and h.probe_at >= now[0] + 120


def _syncer(store: Store, tmp_path: Path, upload, now, **kw) -> Syncer:
    settings = Settings(home=tmp_path, host="http://x", token="t", max_backoff_s=100,
                        live_interval_s=0, **kw)
    return Syncer(store, settings, upload=upload, client_factory=lambda s, sleep: object(),
                  clock=lambda: now[0])


def test_transient_failures_schedule_retries_and_permanent_ones_fail(store: Store,
                                                                     tmp_path: Path) -> None:
    good, refused, bad = (_finished_run(store, n) for n in ("good", "refused", "bad"))
    now = [time.time()]
    calls: list[str] = []

    def upload(store_, uuid, client, **kw):
        calls.append(uuid)
        if uuid == bad:
            raise TransientRemoteError("HTTP 503: maintenance", retry_after=30)
        if uuid == refused:
            raise PermanentRemoteError("folder 'x' does not exist", 404)
        with store_.write() as conn:
            syncstate.mark_synced(conn, uuid, "/u/default/good", 0)
        return type("R", (), {"complete": True, "remote_path": "/u/default/good"})()

    syncer = _syncer(store, tmp_path, upload, now, concurrency=1)
    try:
        result = syncer.sync_once(wait=True)
        states = {e.run_uuid: e for e in syncstate.entries(store)}
        assert states[refused].state == "failed"
        assert states[refused].last_error == "folder 'x' does not exist (HTTP 404)"
        assert states[bad].state == "pending" and "503" in states[bad].last_error
        assert states[bad].next_attempt_at >= now[0] + 30  # Retry-After honoured
        assert states[good].state == "synced"
        assert not result.ok and [u for u, _ in result.failed] == [refused]
        assert [u for u, _ in result.retrying] == [bad]
        # Nothing is due until the schedule says so; then only the bad run is tried again.
        calls.clear()
        assert syncer.sync_once(wait=True).ok and calls == []
        now[0] = states[bad].next_attempt_at + 0.001
        syncer.sync_once(wait=True)
        assert calls == [bad]
        assert syncstate.get(store, bad).attempts == 2
    finally:
        syncer.shutdown()


def test_while_the_server_is_down_one_probe_at_a_time(store: Store, tmp_path: Path) -> None:
    runs = [_finished_run(store, f"r{i}") for i in range(5)]
    now = [time.time()]
    inflight, peak, calls = [0], [0], []
    lock_ = threading.Lock()

    def upload(store_, uuid, client, **kw):
        with lock_:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
            calls.append(uuid)
        time.sleep(0.01)
        with lock_:
            inflight[0] -= 1
        raise TransientRemoteError("connection refused")

    syncer = _syncer(store, tmp_path, upload, now, concurrency=3)
    try:
        syncer.sync_once(wait=True)  # unknown: up to 3 at once, all fail, server now down
        assert syncer.health.state == "down" and len(calls) == 3
        # Every pending run now waits for the probe time, which the status can show.
        assert all(e.next_attempt_at is not None and e.next_attempt_at >= syncer.health.probe_at
                   for e in syncstate.entries(store, ("pending",)))
        calls.clear()
        peak[0] = 0
        for _ in range(4):
            now[0] = syncer.health.probe_at + 0.001
            syncer.sync_once(wait=True)
        assert len(calls) == 4 and peak[0] == 1
        assert {e.run_uuid for e in syncstate.entries(store, ("pending",))} == set(runs)
    finally:
        syncer.shutdown()


def test_a_bad_run_backs_off_on_its_own_while_others_go_on(store: Store,
                                                           tmp_path: Path) -> None:
    bad = _finished_run(store, "bad")
    now = [time.time()]

    def upload(store_, uuid, client, **kw):
        if uuid == bad:
            raise TransientRemoteError("HTTP 500")
        with store_.write() as conn:
            syncstate.mark_synced(conn, uuid, "/p", 0)
        return type("R", (), {"complete": True})()

    syncer = _syncer(store, tmp_path, upload, now, concurrency=2)
    try:
        syncer.health.succeeded()  # the server worked a moment ago
        for i in range(6):
            _finished_run(store, f"ok{i}")
            syncer.sync_once(wait=True)
            now[0] = max(now[0], syncer.health.probe_at) + 0.001
        assert syncstate.counts(store)["synced"] == 6
        assert syncstate.get(store, bad).state == "pending"
        # The bad run's own schedule grew beyond the server probe's.
        assert syncstate.get(store, bad).attempts < 6
    finally:
        syncer.shutdown()


def test_a_run_that_keeps_changing_under_its_upload_is_retried_with_backoff(
        store: Store, tmp_path: Path) -> None:
    """An upload that the run outran (not marked synced, complete=False) is retried at once,
    but not forever at once: whatever keeps a run from matching, syncd never spins."""
    run = _finished_run(store, "restless")
    now = [time.time()]
    calls: list[float] = []

    def upload(store_, uuid, client, **kw):
        calls.append(now[0])
        return type("R", (), {"complete": False})()

    syncer = _syncer(store, tmp_path, upload, now, concurrency=1)
    try:
        syncer.sync_once(wait=True)  # due again at once, twice; then it backs off
        entry = syncstate.get(store, run)
        assert len(calls) == 3 and entry.state == "pending"
        assert entry.next_attempt_at > now[0]
        assert entry.last_error == "the run changed while it went up"
        assert syncer.sync_once(wait=True).ok and len(calls) == 3  # not due: no 4th upload
    finally:
        syncer.shutdown()


def test_mark_uploading_never_overwrites_synced(store: Store) -> None:
    uuid = _finished_run(store)
    with store.write() as conn:
        syncstate.mark_synced(conn, uuid, "/p", 0)
    assert not syncstate.mark_uploading(store, uuid)
    assert syncstate.get(store, uuid).state == "synced"


# -- watcher ---------------------------------------------------------------------------------
def test_watcher_wakes_on_a_commit(store: Store) -> None:
    wake = threading.Event()
    with StoreWatcher(store.home, wake):
        # No wait needed: watchdog adds the inotify watch inside Observer.start() (the
        # emitter's on_thread_start), before StoreWatcher.start returns.
        wake.clear()
        _finished_run(store)
        assert wake.wait(5)
        while wake.wait(0.2):  # one commit is several writes to the -wal: let them pass
            wake.clear()
        store.read("SELECT COUNT(*) FROM runs")  # a read does not wake the daemon
        assert not wake.wait(0.3)


# -- unit file -------------------------------------------------------------------------------
def test_install_service_writes_a_unit_with_this_installs_exec_start(tmp_path: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(main, ["install-service", "--user"])
    assert result.exit_code == 0, result.output
    unit = tmp_path / "xdg" / "systemd" / "user" / "runstore-syncd.service"
    text = unit.read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    command = exec_line.removeprefix("ExecStart=").split()
    assert Path(command[0]).exists() and command[-1] == "run"
    assert Path(command[0]).parent == Path(sys.executable).parent
    for line in ("Type=notify", "Restart=on-failure", "WantedBy=default.target",
                 f"Environment=RUNSTORE_HOME={os.environ['RUNSTORE_HOME']}"):
        assert line in text.splitlines()
    assert "TOKEN" not in text
    assert result.output.splitlines()[0] == f"Wrote {unit}"
    assert "  systemctl --user enable --now runstore-syncd.service" in result.output


def test_install_service_system_unit_and_permission_error(tmp_path: Path) -> None:
    spec = service.UnitSpec(user_mode=False, exec_start=["/opt/my env/bin/syncd", "run"],
                            environment={"RUNSTORE_HOME": "/scratch/$USER"}, run_as="alice")
    text = service.render_unit(spec)
    assert 'ExecStart="/opt/my env/bin/syncd" run' in text
    assert 'Environment="RUNSTORE_HOME=/scratch/$$USER"' in text
    assert "User=alice" in text and "WantedBy=multi-user.target" in text
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        result = CliRunner().invoke(main, ["install-service", "--path", str(ro / "u.service")])
        assert result.exit_code == 1
        assert "permission denied. Try: sudo syncd install-service" in result.output
    finally:
        ro.chmod(0o700)


# -- status / retry --------------------------------------------------------------------------
def test_status_and_retry(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock `syncd status` reads for "(in Ns)" is pinned, so the wait it shows is exact.
    import syncd.cli

    now = 1_700_000_000.0
    monkeypatch.setattr(syncd.cli, "time", types.SimpleNamespace(time=lambda: now,
                                                                 sleep=time.sleep))
    failed = _finished_run(store, "broken")
    waiting = _finished_run(store, "waiting")
    done = _finished_run(store, "done")
    _finished_run(store, "live", status="Running")
    syncstate.mark_failed(store, failed, "folder 'x' does not exist (HTTP 404)")
    syncstate.mark_retry(store, waiting, "connection refused", now + 100)
    with store.write() as conn:
        syncstate.mark_synced(conn, done, "/alice/default/done", 10)
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"] == {"pending": 1, "uploading": 0, "synced": 1, "failed": 1,
                                "running": 1}
    assert report["daemon"] == {"running": False, "pid": None}
    by_uuid = {r["uuid"]: r for r in report["runs"]}
    assert set(by_uuid) == {failed, waiting}
    assert by_uuid[failed]["last_error"] == "folder 'x' does not exist (HTTP 404)"
    assert by_uuid[waiting]["next_attempt_at"] is not None
    text = runner.invoke(main, ["status"]).output
    assert "pending 1  uploading 0  synced 1  failed 1  (running 1)" in text
    assert "error: folder 'x' does not exist (HTTP 404)" in text
    when = datetime.datetime.fromtimestamp(now + 100).astimezone().isoformat(timespec="seconds")
    [line] = [line for line in text.splitlines() if "next retry" in line]
    assert line.endswith(f"  next retry {when} (in 100s)  error: connection refused"), line
    assert "syncd retry --all-failed" in text

    result = runner.invoke(main, ["retry"])
    assert result.exit_code == 2 and "give either RUN or --all-failed" in result.output
    result = runner.invoke(main, ["retry", "nosuchrun"])
    assert result.exit_code == 1 and "no run 'nosuchrun'" in result.output
    result = runner.invoke(main, ["retry", "--all-failed"])
    assert (result.exit_code, result.output) == (0, "requeued 1 run(s)\n")
    entry = syncstate.get(store, failed)
    assert (entry.state, entry.attempts, entry.next_attempt_at) == ("pending", 0, None)
    assert len(json.loads(runner.invoke(main, ["status", "--json", "--all"]).output)["runs"]) == 3
