"""syncd drop mode, with real daemons on both sides of the gap and a real server.

The node's daemon (`[syncd] target = "dir:..."`) writes bundles as runs finish and, on a
schedule, while a run is live; the gateway's (`syncd run --from-dir`) imports what is copied
into its drop dir, files the bundles under done/ or failed/ (with a reason), and uploads:
the server ends up with each run exactly once.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.syncd.helpers import (
    REPO_ROOT,
    Daemon,
    local_runs,
    make_runs,
    run_python,
    server_runs,
    wait_for,
)

LIVE = """
import time
import runstore as em
run = em.create_run(name="live")
for step in range(300):
    run.log("train", {"loss": 1.0 / (step + 1)}, step=step)
    if step % 50 == 0:
        run.flush()
        time.sleep(0.6)
run.finish()
print(run.uuid)
"""


def _committed(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if (p / "COMMIT").exists()) if path.exists() else []


def _bundle_statuses(bundle: Path) -> list[str]:
    conn = sqlite3.connect(bundle / "records.sqlite")
    try:
        return [s for (s,) in conn.execute("SELECT status FROM runs")]
    finally:
        conn.close()


def _status(home: Path, config_dir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "syncd.cli", "status", "--home", str(home)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                          env={"RUNSTORE_CONFIG_DIR": str(config_dir), "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_drop_mode_across_the_gap_exactly_once(tmp_path: Path, home: Path, config_dir: Path,
                                               server, token):
    transfer = tmp_path / "transfer"
    node = Daemon(home, config_dir, None, None, tmp_path / "node.log",
                  target=f"dir:{transfer}", bundle_interval_s=1, live_interval_s=0).start()
    try:
        finished = set(make_runs(home, 2, rows=40))
        wait_for(lambda: len(_committed(transfer)) >= 1, 20, "a bundle of the finished runs")
        live = run_python(LIVE, home, background=True)
        assert isinstance(live, subprocess.Popen)
        wait_for(lambda: any("Running" in _bundle_statuses(b) for b in _committed(transfer)),
                 20, "a bundle with the live run's rows so far")
        out, err = live.communicate(timeout=60)
        assert live.returncode == 0, err
        live_uuid = out.split()[0]
        wait_for(lambda: any("Complete" in _bundle_statuses(b)
                             for b in _committed(transfer)[1:]), 20,
                 "a bundle with the live run's end")
        node_status = _status(home, config_dir)
    finally:
        node.terminate()
    assert "exported in bundles (this store):" in node_status
    assert node_status.count("exported in bundle ") == 3
    local = local_runs(home)
    assert set(local) == finished | {live_uuid}
    assert all(r["state"] == "pending" for r in local.values())  # nothing was uploaded here

    # carried by hand: every bundle (latest first), one twice under another name, a damaged
    # one and a copy still in progress (no COMMIT yet)
    drop = tmp_path / "drop"
    drop.mkdir()
    bundles = _committed(transfer)
    for b in reversed(bundles):
        shutil.copytree(b, drop / b.name)
    shutil.copytree(bundles[0], drop / (bundles[0].name + "-again"))
    damaged = drop / (bundles[-1].name + "-damaged")
    shutil.copytree(bundles[-1], damaged)
    records = damaged / "records.sqlite"
    data = bytearray(records.read_bytes())
    data[len(data) // 2] ^= 0xFF
    records.write_bytes(bytes(data))
    in_progress = drop / "rsb-copying"
    shutil.copytree(bundles[0], in_progress)
    (in_progress / "COMMIT").unlink()

    gateway_home = tmp_path / "gateway"
    gateway = Daemon(gateway_home, config_dir, server.url, token, tmp_path / "gw.log")
    gateway.extra_args = ["--from-dir", str(drop)]
    gateway.start()
    try:
        everything = finished | {live_uuid}

        def all_up() -> bool:
            remote = server_runs(server.data_dir)
            return set(remote) == everything and all(
                c[0]["complete"] for c in remote.values())

        wait_for(all_up, 60, "every run complete on the server")
        wait_for(lambda: len(list((drop / "done").iterdir())) == len(bundles) + 1, 20,
                 "the bundles filed under done/")
        gateway_status = _status(gateway_home, config_dir)
    finally:
        gateway.terminate()
    remote = server_runs(server.data_dir)
    for uuid in everything:
        [copy] = remote[uuid]
        assert copy["rows"] == copy["distinct_seq"] == local[uuid]["rows"]
    assert sorted(p.name for p in (drop / "failed").iterdir()) == [
        damaged.name, damaged.name + ".reason"]
    reason = (drop / "failed" / (damaged.name + ".reason")).read_text()
    assert "records.sqlite: sha256" in reason and "(the file is damaged)" in reason
    assert in_progress.exists()  # never imported, never moved: it has no COMMIT
    assert gateway_status.count(" synced  /alice/") == 3
    assert "imported from bundles (imports/):" in gateway_status


def test_syncd_once_in_drop_mode_writes_one_bundle(tmp_path: Path, home: Path,
                                                   config_dir: Path):
    make_runs(home, 1, rows=10)
    (config_dir / "config.toml").write_text(f'[syncd]\ntarget = "dir:{tmp_path / "usb"}"\n')
    env = {"RUNSTORE_HOME": str(home), "RUNSTORE_CONFIG_DIR": str(config_dir),
           "PATH": "/usr/bin"}

    def once() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "syncd.cli", "once"], capture_output=True,
                              text=True, cwd=REPO_ROOT, timeout=60, env=env)

    first = once()
    assert first.returncode == 0, first.stderr
    [bundle] = _committed(tmp_path / "usb")
    assert first.stdout == f"bundle written: {bundle}\n"
    second = once()
    assert (second.returncode, second.stdout) == (
        0, "nothing new since the last export; no bundle written\n")
    (config_dir / "config.toml").write_text('[syncd]\ntarget = "/mnt/usb"\n')
    bad = once()
    assert bad.returncode == 1
    assert bad.stderr == ("Error: target '/mnt/usb' is not a drop directory. Try: target = "
                          '"dir:/mnt/transfer" (or leave it out to upload to the server)\n')
