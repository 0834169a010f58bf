"""The store under concurrency, fork, network filesystems, and without a network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runstore as em
from runstore.schema import MIGRATIONS
from runstore.store import NetworkFilesystemWarning, Store, filesystem_type

WRITER = """
import sys, time, runstore as em
start_at = float(sys.argv[1]); n = int(sys.argv[2])
while time.time() < start_at:
    time.sleep(0.001)
run = em.create_run(name="w" + sys.argv[3], hparams={"rank": int(sys.argv[3])})
for i in range(n):
    run.log("train", {f"k{j}": i + j for j in range(10)}, step=i)
    if i % 100 == 0:
        run.hparams["last"] = i
run.finish()
"""

OPENER = """
import sys, time
from runstore.store import Store
start_at = float(sys.argv[1])
while time.time() < start_at:
    time.sleep(0.0005)
s = Store(sys.argv[2])
print(s.schema_version)
"""


def _spawn_at(code: str, args: list[str], n: int, tmp_path: Path, home: Path):
    script = tmp_path / "child.py"
    script.write_text(code)
    start_at = time.time() + 1.5
    env = {**os.environ, "RUNSTORE_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, str(script), str(start_at), *args, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(n)]
    return [(p.wait(timeout=240), *p.communicate()) for p in procs]


def test_eight_processes_log_into_one_store(tmp_path: Path):
    home = tmp_path / "home"
    results = _spawn_at(WRITER, ["2000"], 8, tmp_path, home)
    for code, _out, err in results:
        assert code == 0, err
        assert "locked" not in err
    store = Store(home)
    assert store.read("SELECT COUNT(*) FROM runs WHERE status = 'Complete'")[0][0] == 8
    per_run = store.read("SELECT run_id, COUNT(*), MAX(seq) FROM metrics GROUP BY run_id")
    assert [(n, mx) for _, n, mx in per_run] == [(20_000, 19_999)] * 8
    assert store.read("PRAGMA integrity_check")[0][0] == "ok"


def test_many_processes_open_a_new_store_at_once(tmp_path: Path):
    home = tmp_path / "fresh"
    results = _spawn_at(OPENER, [str(home)], 12, tmp_path, home)
    for code, out, err in results:
        assert code == 0, err
        assert out.strip() == str(len(MIGRATIONS))
    store = Store(home)
    names = [r[0] for r in store.read("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert len(names) == len(set(names)) and "runs" in names


def test_wal_and_pragmas(store: Store):
    conn = store.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_network_filesystem_is_named_with_the_fix(tmp_path: Path):
    mounts = tmp_path / "mounts"
    home = tmp_path / "scratch" / "store"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nnas:/export {tmp_path / 'scratch'} nfs4 rw 0 0\n")
    assert filesystem_type(home, str(mounts)) == "nfs4"
    with pytest.warns(NetworkFilesystemWarning, match=r"network filesystem \(nfs4\).*node-local"):
        Store(home, mounts_file=str(mounts))


def test_local_filesystem_gives_no_warning(tmp_path: Path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nnas:/export {tmp_path / 'other'} nfs rw 0 0\n")
    Store(tmp_path / "store", mounts_file=str(mounts))  # filterwarnings=error would fail here


def test_forked_child_never_writes_the_parents_buffer(store: Store):
    run = em.create_run(name="parent")
    for i in range(50):
        run.log("train", {"x": i}, step=i)  # buffered, not flushed yet
    pid = os.fork()
    if pid == 0:  # the child, like a DataLoader worker that logs its own run
        code = 0
        try:
            child = em.create_run(name="child")
            child.log("worker", {"y": 1.0}, step=0)
            child.finish()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run.finish()
    counts = dict(store.read("SELECT r.name, COUNT(m.seq) FROM runs r "
                             "LEFT JOIN metrics m ON m.run_id = r.id GROUP BY r.id"))
    assert counts == {"parent": 50, "child": 1}


def test_log_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, store: Store):
    """Promise 1: with auto_upload and a server configured but away, logging just works."""
    monkeypatch.setenv("RUNSTORE_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("RUNSTORE_TOKEN", "t")

    def no_network(*args, **kwargs):
        raise AssertionError("the logging path opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    run = em.create_run(name="offline", auto_upload=True, folder="proj", make_folder=True)
    for i in range(1000):
        run.log("train", {"loss": 1 / (i + 1)}, step=i)
    run.hparams["lr"] = 0.1
    run.finish()
    assert run.status == "Complete"
    row = store.read("SELECT r.metric_count, s.state FROM runs r JOIN sync_state s "
                     "ON s.run_id = r.id")[0]
    assert tuple(row) == (1000, "pending")


def test_bad_config_value_names_file_key_and_value(config_dir: Path):
    from runstore.config import ConfigError, load_config

    (config_dir / "config.toml").write_text('[server]\ntimeout_s = "two"\n')
    with pytest.raises(ConfigError, match=r"config.toml: server.timeout_s = 'two' is not of "
                                          r"type float; fix or remove it"):
        load_config()
    # [syncd] belongs to the daemon: syncd/settings.py parses it (tests/syncd/test_units.py).
    (config_dir / "config.toml").write_text('[syncd]\nconcurrency = "two"\n')
    load_config()
    (config_dir / "config.toml").write_text('[upload]\nfolder = "my folder"\n')
    with pytest.raises(ConfigError, match="upload.folder: invalid folder 'my folder'"):
        load_config()
    (config_dir / "config.toml").write_text('[upload]\nconflict_strategy = "merge"\n')
    with pytest.raises(ConfigError, match="upload.conflict_strategy 'merge' is not one of"):
        load_config()
    (config_dir / "config.toml").write_text('[server]\ntimeout_s = 5\n[upload]\nfolder = "p"\n')
    cfg = load_config()
    assert (cfg.timeout_s, cfg.folder, cfg.conflict_strategy) == (5.0, "p", "new")
