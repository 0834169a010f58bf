"""`runstore import PATH` for t9k .em directories: whole, one run, one artifact; twice (nothing
changes); broken (imported as far as valid, one line per problem); a failure mid-run (nothing
of it written); real t9k-made directories; syncd uploads an imported run exactly once."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from runstore.emimport import artifact_uuid, import_path, run_uuid
from runstore.store import Store
from tests.server_harness import run_cli
from tests.syncd.helpers import Daemon, wait_for
from tests.t9k.emdirs import expected_rows, stamp, write_artifact, write_run
from tests.t9k.harness import run_t9k


def cli_import(home: Path, *args: str):
    return run_cli("import", *args, extra_env={"RUNSTORE_HOME": str(home)})


def dump(store: Store) -> dict[str, list]:
    """Every row of every table that an import writes."""
    return {t: [tuple(r) for r in store.read(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in ("runs", "metrics", "artifacts", "artifact_objects", "blobs",
                      "associations", "remote_history", "sync_state")}


def run_row(store: Store, alt: str):
    [row] = store.read("SELECT * FROM runs WHERE alternative_name = ?", (alt,))
    return row


def metric_rows(store: Store, run_id: int) -> list[tuple]:
    return [tuple(r) for r in store.read(
        "SELECT type, key, step, epoch, value FROM metrics WHERE run_id = ? ORDER BY seq",
        (run_id,))]


def test_import_a_whole_em_then_again_changes_nothing(store, home, tmp_path):
    em = tmp_path / ".em"
    data_in = write_artifact(em, "data", files={"a/x.bin": b"\x00\x01" * 500},
                             refs={"raw": "s3://bucket/raw"})
    model_out = write_artifact(em, "model", files={"w.pt": b"weights"})
    old = {"action": "upload", "timestamp": stamp(5), "host": "http://aistore",
           "path": "/u/f/train", "id": "abc"}
    alt = write_run(em, "train", rows=12, types=("train", "val"), inputs=(data_in,),
                    outputs=(model_out,), remote=[old], hparams={"lr": math.inf, "opt": "sgd"})
    empty = write_run(em, "empty", rows=0)

    done = cli_import(home, str(em))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("imported 2 run(s) and 2 artifact(s); already in the store: "
                                   "0 run(s), 0 artifact(s); 0 problem(s)")
    assert done.stderr == ""
    row = run_row(store, alt)
    assert row["uuid"] == run_uuid(alt)
    assert (row["name"], row["status"], row["end_timestamp"]) == ("train", "Complete", stamp(999))
    assert json.loads(row["labels"]) == ["em"] and row["description"] == "run train"
    assert json.loads(row["hparams"]) == {"lr": "Infinity", "opt": "sgd"}
    assert json.loads(row["platform"])["framework"] == "PyTorch"
    assert row["hostname"] == "t9k-host" and row["pid"] is None
    got = metric_rows(store, row["id"])
    assert got == expected_rows(12, ("train", "val")) and row["metric_count"] == len(got)
    links = store.read("SELECT a.direction, ar.uuid FROM associations a JOIN artifacts ar "
                       "ON ar.id = a.artifact_id WHERE a.run_id = ? ORDER BY a.direction",
                       (row["id"],))
    assert [tuple(r) for r in links] == [("input", artifact_uuid(data_in)),
                                         ("output", artifact_uuid(model_out))]
    [hist] = store.read("SELECT action, host, path, remote_id FROM remote_history "
                        "WHERE entity_uuid = ?", (row["uuid"],))
    assert tuple(hist) == ("upload", "http://aistore", "/u/f/train", "abc")
    objects = {r["path"]: r for r in store.read(
        "SELECT o.* FROM artifact_objects o JOIN artifacts a ON a.id = o.artifact_id "
        "WHERE a.alternative_name = ?", (data_in,))}
    assert store.blob_path(objects["a/x.bin"]["sha256"]).read_bytes() == b"\x00\x01" * 500
    assert objects["raw"]["uri"] == "s3://bucket/raw"
    assert (store.run_dir(alt) / "stdout.log").read_text() == "epoch 1 done\n"
    states = {r[0] for r in store.read("SELECT state FROM sync_state")}
    assert states == {"pending"}  # syncd uploads them like any finished run
    assert run_row(store, empty)["metric_count"] == 0

    before = dump(store)
    again = cli_import(home, str(em), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["imported_runs"] == report["imported_artifacts"] == report["problems"] == []
    assert sorted(report["already_runs"]) == sorted([alt, empty])
    assert dump(store) == before


def test_one_artifact_dir_then_one_run_dir(store, home, tmp_path):
    em = tmp_path / ".em"
    art = write_artifact(em, "ds", files={"f": b"1"})
    alt = write_run(em, "r", rows=2, inputs=(art,))
    gone = write_artifact(em, "gone")
    lonely = write_run(em, "lonely", rows=1, inputs=(gone,))
    assert cli_import(home, str(em / "artifacts" / art)).returncode == 0
    assert cli_import(home, str(em / "runs" / alt)).returncode == 0
    [link] = store.read("SELECT ar.alternative_name FROM associations a JOIN artifacts ar "
                        "ON ar.id = a.artifact_id")
    assert link[0] == art
    done = cli_import(home, str(em / "runs" / lonely))
    assert done.returncode == 0
    assert done.stderr.strip().splitlines() == [
        f"problem: run {lonely}: input artifact {gone} was not imported (import its "
        "directory too): the link is kept without it"]
    row = run_row(store, lonely)
    [assoc] = store.read("SELECT kind, artifact_id FROM associations WHERE run_id = ?",
                         (row["id"],))
    assert tuple(assoc) == ("Artifact", None)


def test_broken_directories_are_imported_as_far_as_valid(store, home, tmp_path):
    em = tmp_path / ".em"
    cut = write_run(em, "cut", rows=6)
    text = (em / "runs" / cut / "metrics" / "train.yaml").read_text()
    (em / "runs" / cut / "metrics" / "train.yaml").write_text(text[:len(text) - 30])
    nohp = write_run(em, "nohp", rows=1)
    (em / "runs" / nohp / "hyperparameters.yaml").unlink()
    badplat = write_run(em, "badplat", rows=1)
    (em / "runs" / badplat / "platform.yaml").write_text("{{{ not yaml")
    running = write_run(em, "running", rows=3, status="Running")
    nometa = write_run(em, "nometa", rows=1)
    (em / "runs" / nometa / "metadata.yaml").unlink()
    halfmeta = write_run(em, "halfmeta", rows=1)
    meta = (em / "runs" / halfmeta / "metadata.yaml").read_text()
    (em / "runs" / halfmeta / "metadata.yaml").write_text(meta[:40])
    badart = write_artifact(em, "badart", files={"f": b"x"})
    (em / "artifacts" / badart / "metadata.yaml").write_text("")

    done = cli_import(home, str(em))
    assert done.returncode == 0, done.stderr
    problems = done.stderr.strip().splitlines()
    assert all(p.startswith("problem: ") for p in problems)
    assert len(problems) == 7
    expect = ["metrics/train.yaml is cut short or invalid after record 5: imported 5",
              f"run {nohp}: hyperparameters.yaml is missing or invalid: imported empty",
              f"run {badplat}: platform.yaml is missing or invalid: imported empty",
              f"run {running}: still Running in its directory",
              f"runs/{nometa}: metadata.yaml is missing or invalid: not imported",
              f"runs/{halfmeta}: metadata.yaml is missing or invalid: not imported",
              f"artifacts/{badart}: metadata.yaml is missing or invalid: not imported"]
    for text in expect:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert done.stdout.strip().startswith("imported 4 run(s) and 0 artifact(s)")
    assert metric_rows(store, run_row(store, cut)["id"]) == [r[:5] for r in expected_rows(5)]
    assert json.loads(run_row(store, nohp)["hparams"]) == {}
    assert json.loads(run_row(store, badplat)["platform"]) == {}
    killed = run_row(store, running)
    assert (killed["status"], killed["end_timestamp"]) == ("Error", stamp(2))
    assert not store.read("SELECT 1 FROM runs WHERE alternative_name IN (?, ?)",
                          (nometa, halfmeta))


def test_a_failure_inside_a_run_leaves_nothing_of_it(store, tmp_path):
    """A real SQLite error in the middle of a run's transaction (a trigger refuses its remote
    record, written after its metrics and lineage): none of its rows, no stdout.log."""
    em = tmp_path / ".em"
    first = write_run(em, "a_first", rows=3)
    doomed = write_run(em, "b_doomed", rows=50, remote=[{
        "action": "upload", "timestamp": stamp(), "host": "h", "path": "/boom", "id": "1"}])
    with store.write() as conn:
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON remote_history WHEN NEW.path = "
                     "'/boom' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk trouble"):
        import_path(em, store)
    assert run_row(store, first)["metric_count"] == 6  # the run before it is whole
    assert not store.read("SELECT 1 FROM runs WHERE alternative_name = ?", (doomed,))
    assert store.read("SELECT COUNT(*) FROM metrics")[0][0] == 6
    assert not (store.run_dir(doomed) / "stdout.log").exists()
    assert not list((store.home / "runs").glob(".import-*"))
    with store.write() as conn:
        conn.execute("DROP TRIGGER boom")
    report = import_path(em, store)
    assert (report.imported_runs, report.already_runs) == ([doomed], [first])
    assert run_row(store, doomed)["metric_count"] == 100


MAKE_EM = """
    import math, os, sys
    from t9k import em
    data = em.create_artifact(name='data')
    open('d.txt', 'w').write('rows')
    data.add_file('d.txt')
    run = em.create_run(name='real', hparams={'lr': 0.5})
    run.mark_input(data)
    for step in range(5):
        run.log('train', {'loss': math.nan if step == 2 else 1.0 / (step + 1)}, step=step)
    print('hello from t9k')
    run.finish()
    killed = em.create_run(name='killed')
    killed.log('train', {'loss': 3.0}, step=1)
    sys.stdout.flush()
    os._exit(0)  # like SIGKILL: t9k's monitor never marks it Error
    """


def test_real_t9k_directories(store, home, tmp_path, t9k_server):
    made = run_t9k(t9k_server.python, MAKE_EM, tmp_path / "job", host="", key="")
    assert made.returncode == 0, made.stderr
    done = cli_import(home, str(tmp_path / "job" / ".em"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 2 run(s) and 1 artifact(s)")
    [problem] = done.stderr.strip().splitlines()
    assert "still Running in its directory" in problem
    real = store.read("SELECT * FROM runs WHERE name = 'real'")[0]
    assert json.loads(real["hparams"]) == {"lr": 0.5} and real["status"] == "Complete"
    values = [r[4] for r in metric_rows(store, real["id"])]
    assert values[:2] == [1.0, 0.5] and values[2] is None and len(values) == 5
    assert "hello from t9k" in (Path(real["local_dir"]) / "stdout.log").read_text()
    [link] = store.read("SELECT ar.name FROM associations a JOIN artifacts ar "
                        "ON ar.id = a.artifact_id WHERE a.run_id = ?", (real["id"],))
    assert link[0] == "data"
    assert store.read("SELECT status FROM runs WHERE name = 'killed'")[0][0] == "Error"


def test_syncd_uploads_an_imported_run_exactly_once(store, home, tmp_path, t9k_server):
    em = tmp_path / ".em"
    art = write_artifact(em, "out", files={"o.bin": b"o" * 3000})
    alt = write_run(em, "synced-em", rows=30, outputs=(art,))
    assert cli_import(home, str(em)).returncode == 0
    daemon = Daemon(home, tmp_path / "cfg", t9k_server.url, t9k_server.tokens["alice"],
                    tmp_path / "syncd.log", concurrency=1, fallback_interval_s=1)
    daemon.start()
    try:
        def synced() -> bool:
            return store.read("SELECT state FROM sync_state")[0][0] == "synced"
        wait_for(synced, 60, "the imported run synced")
        assert cli_import(home, str(em)).returncode == 0  # again: nothing new to upload
        wait_for(synced, 30, "still synced")
    finally:
        daemon.terminate()
    db = sqlite3.connect(t9k_server.proc.data_dir / "server.db")
    copies = db.execute("SELECT id, metric_count, complete FROM runs WHERE uuid = ?",
                        (run_uuid(alt),)).fetchall()
    assert len(copies) == 1 and copies[0][1:] == (60, 1)
    assert db.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?",
                      (copies[0][0],)).fetchone()[0] == 60
    assert db.execute("SELECT COUNT(*) FROM lineage l JOIN artifacts a ON a.id = l.artifact_id "
                      "WHERE l.run_id = ? AND a.uuid = ?",
                      (copies[0][0], artifact_uuid(art))).fetchone()[0] == 1
