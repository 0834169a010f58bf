"""Bad input gets a clear error naming what is wrong, and leaves nothing half-written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import runstore as em
from runstore.store import Store


def counts(store: Store) -> dict[str, int]:
    tables = ("runs", "metrics", "artifacts", "artifact_objects", "blobs", "associations")
    return {t: store.read(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


def test_nan_and_inf_round_trip_exactly(store: Store):
    run = em.create_run(name="diverge")
    run.log("train", {"loss": float("nan"), "up": float("inf"), "down": -math.inf,
                      "np": np.float64("nan")}, step=1)
    run.finish()
    values = run.metrics["train"][0]["value"]
    assert math.isnan(values["loss"]) and math.isnan(values["np"])
    assert values["up"] == math.inf and values["down"] == -math.inf
    # In SQL: NaN is NULL (SQLite has no NaN) and is_nan says so; inf is a REAL.
    rows = {r["key"]: (r["value"], r["is_nan"]) for r in store.read(
        "SELECT key, value, is_nan FROM metric_values")}
    assert rows == {"loss": (None, 1), "up": (math.inf, 0), "down": (-math.inf, 0),
                    "np": (None, 1)}


@pytest.mark.parametrize("value", ["0.5", None, {"a": 1}, b"1", [1.0, 2.0],
                                   np.array([1.0, 2.0])])
def test_non_numeric_metric_value_names_the_key(value, store: Store):
    run = em.create_run(name="r")
    run.log("train", {"ok": 1.0}, step=0)
    with pytest.raises(TypeError, match="'bad'"):
        run.log("train", {"ok": 2.0, "bad": value}, step=1)
    run.finish()
    # the refused call wrote nothing, not even its good key
    assert [r["value"] for r in run.metrics["train"]] == [{"ok": 1.0}]


def test_numpy_scalars_and_one_element_arrays_accepted():
    run = em.create_run(name="r")
    run.log("train", {"f32": np.float32(0.5), "i64": np.int64(3), "arr": np.array([2.5]),
                      "arr0": np.array(1.5), "b": np.bool_(True)}, step=np.int64(7),
            epoch=np.int32(1))
    run.finish()
    rec = run.metrics["train"][0]
    assert rec["value"] == {"f32": 0.5, "i64": 3.0, "arr": 2.5, "arr0": 1.5, "b": 1.0}
    assert rec["sequence"]["step"] == 7 and rec["sequence"]["epoch"] == 1


def test_bad_step_and_type():
    run = em.create_run(name="r")
    with pytest.raises(TypeError, match="step must be an int"):
        run.log("train", {"x": 1.0}, step=1.5)
    with pytest.raises(ValueError, match="metric type '' is empty"):
        run.log("", {"x": 1.0}, step=1)
    with pytest.raises(TypeError, match="metric type must be a str"):
        run.log(3, {"x": 1.0}, step=1)
    with pytest.raises(TypeError, match="metrics must be a dict"):
        run.log("train", [1.0], step=1)
    run.finish()
    assert run.metrics == {}


@pytest.mark.parametrize("name", ["", "-lead", "trail_", "a" * 41, "has space", "ümlaut",
                                  "a/b", "../x", None, 3])
def test_invalid_run_and_artifact_names(name, store: Store):
    before = counts(store)
    with pytest.raises(ValueError, match=r"must match \^\[a-zA-Z0-9\]"):
        em.create_run(name=name)
    with pytest.raises(ValueError, match="invalid Artifact name"):
        em.create_artifact(name)
    assert counts(store) == before


def test_valid_edge_names(store: Store):
    names = ("a", "A1", "a" * 40, "x_y-z9")
    for name in names:
        run = em.create_run(name=name)
        run.finish()
        assert run.name == name and run.alternative_name.startswith(f"{name}_")
        art = em.create_artifact(name)
        assert art.name == name
    assert [r["name"] for r in store.read("SELECT name FROM runs ORDER BY id")] == list(names)


def test_non_json_hparams_type_error_names_key(store: Store):
    with pytest.raises(TypeError, match="hyperparameter 'fn'"):
        em.create_run(name="r", hparams={"lr": 0.1, "fn": object()})
    with pytest.raises(TypeError, match="hyperparameter 'nan'"):
        em.create_run(name="r", hparams={"nan": float("nan")})
    assert counts(store)["runs"] == 0
    run = em.create_run(name="r", hparams={"lr": 0.1})
    with pytest.raises(TypeError, match="hyperparameter 'dev'"):
        run.hparams["dev"] = {1, 2}
    with pytest.raises(TypeError, match="hyperparameter 'x'"):
        run.hparams.update({"ok": 1, "x": b"bytes"})
    assert run.hparams == {"lr": 0.1}
    run.finish()
    assert store.read("SELECT hparams FROM runs")[0][0] == '{"lr": 0.1}'


def test_unknown_conflict_strategy(store: Store):
    with pytest.raises(ValueError, match="conflict_strategy 'merge' is not one of"):
        em.create_run(name="r", conflict_strategy="merge")
    assert counts(store)["runs"] == 0


@pytest.mark.parametrize("obj_path, problem", [
    ("../x", "'..' segment"), ("a/../../x", "'..' segment"), ("//etc/passwd", "absolute"),
    ("a\\b", "backslash"), ("a\x00b", "NUL"), ("./a", "or '..' segment"), ("a//b", "an empty"),
])
def test_escaping_object_paths(obj_path, problem, tmp_path: Path, store: Store):
    f = tmp_path / "f.txt"
    f.write_text("x")
    art = em.create_artifact("a")
    before = counts(store)
    with pytest.raises(ValueError, match=f"invalid object path.*{problem}"):
        art.add_file(f, obj_path)
    with pytest.raises(ValueError, match="invalid object path"):
        art.add_reference("s3://b/k", obj_path)
    assert counts(store) == before


def test_missing_source_file_and_dir(tmp_path: Path, store: Store):
    art = em.create_artifact("a")
    before = counts(store)
    with pytest.raises(FileNotFoundError, match="no such file"):
        art.add_file(tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        art.add_dir(tmp_path / "missing")
    assert counts(store) == before


def test_add_dir_is_all_or_nothing(tmp_path: Path, store: Store):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("a")
    (d / "b.txt").write_text("b")
    art = em.create_artifact("a")
    art.add_reference("s3://x/y", "d/b.txt")  # makes the second file of the dir conflict
    with pytest.raises(ValueError, match="already holds a reference"):
        art.add_dir(d)
    assert sorted(art.objects) == ["d/b.txt"]  # a.txt was not added either


def test_steps_and_values_beyond_64_bits(store: Store):
    run = em.create_run(name="r")
    with pytest.raises(ValueError, match="must fit in a 64-bit integer"):
        run.log("train", {"x": 1.0}, step=2**63)
    with pytest.raises(ValueError, match="must fit in a 64-bit integer"):
        run.log("train", {"x": 1.0}, step=1, epoch=-(2**63) - 1)
    with pytest.raises(TypeError, match="metric 'big' is an integer too large"):
        run.log("train", {"big": 10**400}, step=1)
    run.log("train", {"x": 1.0}, step=2**63 - 1)
    run.finish()  # the buffer still flushes: nothing unstorable got in
    assert store.read("SELECT step FROM metrics")[0][0] == 2**63 - 1
