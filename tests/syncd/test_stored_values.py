"""Runs ALREADY in a store that break the server's rules (written before runstore.rules, or by
hand): the real syncd names the field and the value, marks the run failed and never retries it
on its own; `runstore upload` says the same; `runstore doctor` lists them all with a fix; a
fixed run syncs. The bad rows are written with sqlite3 directly, as an old SDK would have."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import runstore as em
from tests.factories import node_env, syncd_cli
from tests.server_harness import run_cli
from tests.syncd.helpers import REPO_ROOT


def _env(home: Path, config_dir: Path, url: str, token: str) -> dict[str, str]:
    return node_env(home, config_dir=config_dir, server_url=url, token=token)


def _syncd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return syncd_cli(*args, env=env, timeout_s=120)


def _run(name: str) -> em.Run:
    run = em.create_run(name=name)
    run.log("train", {"loss": 0.5}, step=1)
    return run


def test_stored_values_the_server_refuses_fail_once_with_the_field_and_doctor_fixes(
        server, token, home, config_dir, tmp_path) -> None:
    good, desc, key, folder, obj = (_run(n) for n in ("good", "desc", "key", "folder", "obj"))
    data = tmp_path / "w.bin"
    data.write_bytes(b"weights")
    art = em.create_artifact("model")
    art.add_file(data, "w.bin")
    obj.mark_output(art)
    for run in (good, desc, key, folder, obj):
        run.finish()
    db = sqlite3.connect(home / "runstore.db")
    with db:
        db.execute("UPDATE runs SET description = ? WHERE id = ?", ("bad\x00text", desc.id))
        db.execute("UPDATE metrics SET key = ? WHERE run_id = ?", ("k" * 300, key.id))
        db.execute("UPDATE runs SET folder = ? WHERE id = ?", ("my folder", folder.id))
        db.execute("UPDATE artifact_objects SET path = ? WHERE artifact_id = ?",
                   ("a%20b.txt", art.id))
    db.close()
    env = _env(home, config_dir, server.url, token)

    first = _syncd("once", env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "synced 1, failed 4, retrying 0" in first.stdout
    failed = {line.split()[1].rstrip(":"): line for line in first.stdout.splitlines()
              if line.startswith("failed ")}
    assert "its description breaks the server's rules" in failed[desc.uuid]
    assert r"'bad\x00text'" in failed[desc.uuid]
    assert "its metric key breaks" in failed[key.uuid] and "longer than 256" in failed[key.uuid]
    assert "its folder breaks" in failed[folder.uuid] and "'my folder'" in failed[folder.uuid]
    assert "its object path breaks" in failed[obj.uuid] and "'a%20b.txt'" in failed[obj.uuid]
    assert all("Try: `runstore doctor`" in line for line in failed.values())

    # Failed is final: the next pass leaves them alone (no endless retry) ...
    second = _syncd("once", env=env)
    assert second.returncode == 0 and "synced 0, failed 0, retrying 0" in second.stdout
    status = json.loads(_syncd("status", "--json", env=env).stdout)
    states = {r["uuid"]: (r["state"], r["attempts"]) for r in status["runs"]}
    assert {states[r.uuid][0] for r in (desc, key, folder, obj)} == {"failed"}
    # ... and the server holds only the good run.
    listed = server_runs(server.url, token)
    assert good.uuid in listed and desc.uuid not in listed

    # `runstore upload` says the same, at once, in one line.
    up = run_cli("upload", desc.alternative_name, extra_env=env)
    assert up.returncode == 1 and up.stderr.count("\n") == 1
    assert "its description breaks the server's rules" in up.stderr

    # `runstore doctor` lists each problem with the field, the value and a fix.
    doc = run_cli("doctor", extra_env=env)
    assert doc.returncode == 1
    lines = doc.stdout.splitlines()
    assert any(desc.uuid in x and "description:" in x and "Try: python -c" in x for x in lines)
    assert any(key.uuid in x and "metric key:" in x and "log them again" in x for x in lines)
    assert any(folder.uuid in x and "folder:" in x and "folder='default'" in x for x in lines)
    assert any(art.uuid in x and "object path:" in x and "obj_path='a b.txt'" in x
               for x in lines)
    assert "4 problem(s)" in lines[-1]

    # Fixed as doctor says, the runs sync.
    for fix in (f"r = em.load_run('{desc.uuid}'); r.description = 'fixed'; r.finish()",
                f"em.load_run('{folder.uuid}', folder='default', make_folder=True).finish()"):
        done = subprocess.run([sys.executable, "-c", f"import runstore as em; {fix}"], env=env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    third = _syncd("once", env=env)
    assert "synced 2, failed 0" in third.stdout, third.stdout
    assert {desc.uuid, folder.uuid} <= set(server_runs(server.url, token))
    after = run_cli("doctor", extra_env=env).stdout
    assert "2 problem(s)" in after and desc.uuid not in after and folder.uuid not in after


def server_runs(url: str, token: str) -> set[str]:
    from runstore.remote import Client

    with Client(url, token) as client:
        return {n["uuid"] for n in client.request("GET", "/runs")}


def test_doctor_on_a_clean_store_says_so(home, config_dir) -> None:
    run = _run("fine")
    run.finish()
    out = run_cli("doctor", extra_env={"RUNSTORE_HOME": str(home),
                                       "RUNSTORE_CONFIG_DIR": str(config_dir)})
    assert out.returncode == 0 and out.stdout == f"no problems: everything in {home} can be " \
        "uploaded.\n"
