"""The t9k.em surface: `import runstore as em` behaves as t9k.em documents."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import runstore as em
from runstore.store import Store
from tests.runstore.helpers import run_script

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$")


def test_create_run_defaults_and_metadata_shape():
    run = em.create_run(name="cnn_keras", labels=["mnist"], description="d")
    assert run.name == "cnn_keras"
    assert run.status == "Running"
    assert re.fullmatch(r"cnn_keras_\d{6}_\d{6}_[a-z0-9]{6}", run.alternative_name)
    assert ISO.match(run.start_timestamp) and run.end_timestamp is None
    run.finish()
    assert run.status == "Complete" and ISO.match(run.end_timestamp)
    d = run.to_dict()
    assert list(d) == ["kind", "name", "labels", "description", "startTimestamp",
                       "endTimestamp", "status", "alternativeName", "associations", "remote"]
    assert d["kind"] == "Run" and d["labels"] == ["mnist"] and d["description"] == "d"
    assert d["associations"] == {"input": [], "output": []} and d["remote"] == []


def test_finish_twice_raises():
    run = em.create_run(name="r")
    run.finish()
    with pytest.raises(RuntimeError, match="already finished"):
        run.finish()


def test_config_path_overrides_arguments(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: from-yaml\nhparams:\n  lr: 0.01\nlabels: [a, b]\n"
                   "folder: proj\nmake_folder: true\nconflict_strategy: replace\n")
    run = em.create_run(config_path=cfg, name="from-arg", hparams={"lr": 1})
    assert run.name == "from-yaml"
    assert run.hparams == {"lr": 0.01}
    assert run.labels == ["a", "b"]
    row = Store().read("SELECT folder, make_folder, conflict_strategy FROM runs")[0]
    assert tuple(row) == ("proj", 1, "replace")
    run.finish()


def test_config_path_unknown_key_is_value_error(tmp_path: Path, store: Store):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\nepochs: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['epochs'\]"):
        em.create_run(config_path=cfg)
    assert store.read("SELECT COUNT(*) FROM runs")[0][0] == 0


def test_log_shape_and_type_strings_kept():
    run = em.create_run(name="r")
    run.log("training", {"loss": 1, "acc": 0.5}, step=1, epoch=1)
    run.log("validation", {"loss": 0.9}, step=1)
    run.log("my-custom", {"x": True}, step=2, epoch=3)
    m = run.metrics
    assert set(m) == {"training", "validation", "my-custom"}
    rec = m["training"][0]
    assert rec["value"] == {"loss": 1.0, "acc": 0.5}
    assert isinstance(rec["value"]["loss"], float)
    assert rec["sequence"]["step"] == 1 and rec["sequence"]["epoch"] == 1
    assert ISO.match(rec["sequence"]["timestamp"])
    assert m["validation"][0]["sequence"]["epoch"] is None
    assert m["my-custom"][0]["value"] == {"x": 1.0}
    run.finish()
    # the SQL view offers a normalised type beside the given string
    rows = Store().read("SELECT DISTINCT type, type_normalized FROM metric_values ORDER BY type")
    assert [tuple(r) for r in rows] == [("my-custom", "my-custom"), ("training", "train"),
                                        ("validation", "val")]


def test_two_logs_same_step_stay_two_records():
    run = em.create_run(name="r")
    run.log("train", {"loss": 1.0}, step=1)
    run.log("train", {"loss": 2.0}, step=1)
    assert [r["value"]["loss"] for r in run.metrics["train"]] == [1.0, 2.0]
    run.finish()


def test_hparams_persist_every_change(store: Store):
    run = em.create_run(name="r", hparams={"lr": 0.1, "opt": {"name": "adam"}})

    def stored():
        return json.loads(store.read("SELECT hparams FROM runs WHERE id = ?", (run.id,))[0][0])

    run.hparams["bs"] = 32
    assert stored()["bs"] == 32
    run.hparams.update({"lr": 0.5, "new": 1}, override=False)
    assert stored() == {"lr": 0.1, "opt": {"name": "adam"}, "bs": 32, "new": 1}
    run.hparams.update({"lr": 0.5})
    assert stored()["lr"] == 0.5
    del run.hparams["new"]
    assert "new" not in stored()
    run.hparams["opt"]["name"] = "sgd"  # nested in-place change: written at finish()
    run.finish()
    assert stored()["opt"] == {"name": "sgd"}
    assert run.hparams.as_dict() == stored()
    flat = {r["key"]: r["value"] for r in store.read(
        "SELECT key, value FROM run_hparams WHERE run_id = ?", (run.id,))}
    assert flat == {"lr": 0.5, "opt.name": "sgd", "bs": 32}


def test_mark_input_output_shapes_and_duplicates(tmp_path: Path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"w")
    art = em.create_artifact("model", labels=["x"])
    art.add_file(f)
    run = em.create_run(name="r")
    run.mark_input(art)
    run.mark_input(art)

    class Model:
        id, path = "m1", "/alice/models/m"

    run.mark_output(Model())
    run.mark_output({"kind": "commit", "id": "a1:abc", "path": "/alice/ds:abc"})
    assert run.associations == {
        "input": [{"kind": "Artifact", "name": art.alternative_name, "localDir": art.local}],
        "output": [{"kind": "Model", "id": "m1", "path": "/alice/models/m"},
                   {"kind": "commit", "id": "a1:abc", "path": "/alice/ds:abc"}],
    }
    assert run.asso == run.associations
    with pytest.raises(TypeError, match="cannot mark"):
        run.mark_input("not-a-resource")
    run.finish()


def test_changes_after_the_end_start_a_new_generation_and_make_it_pending(store):
    """What the server keeps of a run, changed after it ended, is a newer state of it (schema
    migration 2); an unchanged parse_from_dict round trip is not a change."""
    run = em.create_run(name="ended", hparams={"lr": 0.1})
    art = em.create_artifact("data")
    run.mark_input(art)
    run.finish()

    def state() -> tuple[int, str]:
        return tuple(store.read("SELECT r.generation, s.state FROM runs r "
                                "JOIN sync_state s ON s.run_id = r.id")[0])

    def synced() -> None:
        with store.write() as conn:
            conn.execute("UPDATE sync_state SET state = 'synced'")

    generation = state()[0]
    synced()
    run.parse_from_dict(run.to_dict())
    assert state() == (generation, "synced")
    run.hparams["lr"] = 0.1  # the same value: not a change
    assert state() == (generation, "synced")
    changes = [lambda: setattr(run, "description", "annotated"),
               lambda: run.hparams.update({"note": "x"}),
               lambda: run.mark_output(em.create_artifact("model")),
               lambda: run.parse_from_dict({"status": "Error"})]
    for change in changes:
        change()
        generation += 1
        assert state() == (generation, "pending")
        synced()
    with store.write() as conn:  # rows a forked worker flushed after the parent's finish()
        conn.execute("UPDATE runs SET metric_count = metric_count + 1")
    assert state() == (generation + 1, "pending")
    with pytest.raises(ValueError, match="use load_run"):
        run.parse_from_dict({"status": "Running"})


def test_parse_from_dict_ending_a_run_keeps_its_buffered_rows(store):
    run = em.create_run(name="ended-by-dict")
    for step in range(10):
        run.log("train", {"loss": 1.0}, step=step)
    run.parse_from_dict({"status": "Complete"})
    assert store.read("SELECT status, metric_count FROM runs")[0][:] == ("Complete", 10)
    assert store.read("SELECT COUNT(*) FROM metrics")[0][0] == 10


def test_to_dict_parse_from_dict_round_trip():
    run = em.create_run(name="r", labels=["a"])
    run.finish()
    d = run.to_dict()
    d.update(labels=["b", "c"], description="changed", name="renamed")
    run.parse_from_dict(d)
    assert run.to_dict() == d
    assert em.load_run(run.uuid).to_dict() == {**d, "status": "Running", "endTimestamp": None}
    other = em.create_run(name="other")
    with pytest.raises(ValueError, match="belongs to another run"):
        other.parse_from_dict(d)
    other.finish()


def test_artifact_objects_content_addressed(tmp_path: Path, store: Store):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("same")
    (tmp_path / "d" / "sub" / "b.txt").write_text("same")
    (tmp_path / "c.txt").write_text("other")
    art = em.create_artifact("data")
    art.add_dir(tmp_path / "d")
    art.add_file(tmp_path / "c.txt", "/top/")
    art.add_file(tmp_path / "c.txt", "renamed.txt")
    art.add_reference("s3://bucket/path/big.parquet")
    objs = art.objects
    assert sorted(objs) == ["big.parquet", "d/a.txt", "d/sub/b.txt", "renamed.txt",
                            "top/c.txt"]
    assert objs["d/a.txt"]["checksum"] == objs["d/sub/b.txt"]["checksum"]
    assert objs["d/a.txt"]["size_bytes"] == 4
    assert objs["big.parquet"] == {"path": "big.parquet", "uri": "s3://bucket/path/big.parquet"}
    blobs = [p for p in (store.home / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2  # identical files are kept once
    assert Path(objs["top/c.txt"]["path"]).read_text() == "other"
    with pytest.raises(ValueError, match="reference cannot share"):
        art.add_reference("s3://x/y", "renamed.txt")
    assert list(art.to_dict()) == ["kind", "name", "labels", "description",
                                   "createdTimestamp", "alternativeName", "remote"]


def test_load_run_sets_running_again_and_keeps_logging(store: Store):
    run = em.create_run(name="resumable")
    run.log("train", {"loss": 1.0}, step=1)
    run.finish()
    again = em.load_run("resumable")
    assert again.alternative_name == run.alternative_name
    assert again.status == "Running" and again.end_timestamp is None
    again.log("train", {"loss": 0.5}, step=2)
    again.finish()
    assert [r["value"]["loss"] for r in again.metrics["train"]] == [1.0, 0.5]
    assert em.load_run(run.local).alternative_name == run.alternative_name
    assert em.load_run(run.uuid).name == "resumable"


def test_platform_records_imported_ml_packages(tmp_path: Path):
    home = tmp_path / "h"
    proc = run_script("""
        import numpy, json
        import runstore as em
        run = em.create_run(name="p")
        run.finish()
        print(json.dumps(run.platform))
    """, home)
    platform = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(platform) == {"hostname", "os", "python", "pypkgs", "framework"}
    assert platform["pypkgs"]["numpy"] == __import__("numpy").__version__


def test_git_of_the_users_script_and_stdout_log(tmp_path: Path):
    repo = tmp_path / "proj"
    (repo / "src").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    script = repo / "src" / "train.py"
    script.write_text("x")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    home = tmp_path / "h"
    proc = run_script("""
        import json
        import runstore as em
        run = em.create_run(name="g")
        print("epoch 1 loss 0.5")
        run.finish()
        print("after finish")
        print("GIT=" + json.dumps(run.git) + " LOCAL=" + run.local)
    """, home, script_path=script)
    out = proc.stdout.strip().splitlines()[-1]
    git_info = json.loads(out.split("GIT=")[1].split(" LOCAL=")[0])
    local = out.split(" LOCAL=")[1]
    assert git_info == {"repo_path": str(repo.resolve()), "remote_url": None, "branch": "main",
                        "commit": commit, "is_dirty": True, "entrypoint": "src/train.py"}
    log = (Path(local) / "stdout.log").read_text()
    assert "epoch 1 loss 0.5" in log and "after finish" not in log
