"""Unit tests pinning runstore.rules (object paths, names, folders, metric text, integers) and
the protocol's value codecs (NaN and infinities on the wire)."""

from __future__ import annotations

import math

import pytest

from runstore import protocol as p
from runstore import rules
from runstore.errors import InvalidInputError, InvalidTypeError, InvalidValueError

GOOD_OBJECT_PATHS = ["a.txt", "data/train.csv", "a/b/c/d.bin", "é.txt", "x" * 255,
                     "/".join(["d"] * 500)[:1023] + "e", "with space.txt", "a..b", ".hidden"]
BAD_OBJECT_PATHS = {
    "": "empty", "/abs.txt": "absolute", "a//b": "empty", "a/./b": "'.'", "a/../b": "'..'",
    "..": "'..'", "a/": "empty", "a\\b": "backslash", "a%20b.txt": "'%'",
    "ﬁle.txt": "NFKC", "ｆ.txt": "NFKC", "a\x00b": "NUL", "a\nb": "control",
    "a\x7fb": "control", "\ud800.txt": "surrogate", "x" * 1025: "longer than 1024",
    "y" * 256: "segment is longer than 255",
}


@pytest.mark.parametrize("path", GOOD_OBJECT_PATHS)
def test_object_paths_accepted(path):
    assert rules.check_object_path(path) == path
    assert rules.object_path(path, "base") == path


@pytest.mark.parametrize(("path", "reason"), BAD_OBJECT_PATHS.items())
def test_object_paths_refused_with_the_reason_and_the_value(path, reason):
    with pytest.raises(InvalidValueError) as info:
        rules.check_object_path(path)
    message = str(info.value)
    assert reason in message and rules.short(path) in message and "Try: " in message
    assert "\n" not in message


def test_t9k_object_path_conventions():
    assert rules.object_path(None, "f.txt") == "f.txt"
    assert rules.object_path("/lead.txt", "f.txt") == "lead.txt"
    assert rules.object_path("dir/", "f.txt") == "dir/f.txt"
    assert rules.object_path("", "f.txt") == "f.txt"
    with pytest.raises(InvalidValueError, match="'a%20b.txt'"):
        rules.object_path("a%20b.txt", "f")
    with pytest.raises(InvalidTypeError):
        rules.object_path(3, "f")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "ab", "mnist-cnn_2", "A" * 40])
def test_names_accepted(name):
    assert rules.check_name(name) == name
    assert rules.check_segment(name) == name  # every SDK name is a valid server name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a.b", "A" * 41, "é", "a b", 3, None,
                                  "ab\n"])
def test_names_refused(name):
    with pytest.raises(InvalidValueError, match="Try: "):
        rules.check_name(name)


@pytest.mark.parametrize(("folder", "path"), [
    ("default", "/alice/default"), ("proj/sub", "/alice/proj/sub"), ("proj/", "/alice/proj"),
    ("/bob/x", "/bob/x"), ("/alice/" + "/".join(["d"] * 16), "/alice/" + "/".join(["d"] * 16)),
])
def test_folders(folder, path):
    assert rules.folder_path(folder, "alice") == path


@pytest.mark.parametrize("folder", ["", "/", "a b", "a//b", "../x", "a/%41", "/Alice/x",
                                    "/".join(["d"] * 17), " default", "ﬁ"])
def test_folders_refused(folder):
    with pytest.raises(InvalidInputError) as info:
        rules.check_folder(folder)
    assert "Try: " in str(info.value)


@pytest.mark.parametrize("text", ["train", "a" * 256, "ключ", "a b/c", "\t"])
def test_metric_text_accepted(text):
    assert rules.check_metric_key(text) == text and rules.metric_text_ok(text)


@pytest.mark.parametrize("text", ["", "a" * 257, "a\x00", "\udc80", 3, None])
def test_metric_text_refused(text):
    assert not rules.metric_text_ok(text)
    with pytest.raises(InvalidInputError, match="metric key"):
        rules.check_metric_key(text)


def test_int64_bounds():
    assert rules.check_int64(2**63 - 1, "step") == 2**63 - 1
    assert rules.check_int64(-(2**63), "step") == -(2**63)
    with pytest.raises(InvalidValueError, match="step 9223372036854775808"):
        rules.check_int64(2**63, "step")
    with pytest.raises(InvalidTypeError, match="epoch must be an int"):
        rules.check_int64(1.5, "epoch")


def test_labels_and_description():
    assert rules.check_labels(None) == [] and rules.check_labels(("a", "b")) == ["a", "b"]
    for bad in ("abc", [1], b"x"):
        with pytest.raises(InvalidTypeError):
            rules.check_labels(bad)
    with pytest.raises(InvalidValueError, match="label"):
        rules.check_labels(["x" * 257])
    with pytest.raises(InvalidValueError, match="NUL"):
        rules.check_description("a\x00b")
    assert rules.check_description(None) == ""


def test_conflict_strategies():
    for s in ("skip", "error", "new", "replace"):
        assert rules.check_conflict_strategy(s) == s
    with pytest.raises(InvalidValueError, match="'merge'"):
        rules.check_conflict_strategy("merge")


# -- the protocol's codecs -------------------------------------------------------------------
@pytest.mark.parametrize(("value", "wire"), [
    (1.5, 1.5), (0.0, 0.0), (-2.0, -2.0), (math.inf, "Infinity"), (-math.inf, "-Infinity"),
    (math.nan, "NaN"), (None, "NaN"),
])
def test_value_codec(value, wire):
    assert p.encode_value(value) == wire
    back = p.decode_value(wire)
    if value is None or value != value:
        assert math.isnan(back)
    else:
        assert back == value


@pytest.mark.parametrize("wire", ["nan", "inf", "1.0", True, None, [1]])
def test_value_codec_refuses_anything_else(wire):
    with pytest.raises(ValueError, match="is not a number"):
        p.decode_value(wire)


def test_metric_rows_round_trip_and_nan_is_null():
    rows = [("train", "loss", 0, None, 0.5, "t"), ("val", "acc", 1, 2, None, "t"),
            ("train", "up", 2, None, math.inf, "t")]
    wire = [p.encode_metric_row(r) for r in rows]
    assert wire[1][4] == "NaN" and wire[2][4] == "Infinity"
    assert p.decode_metric_rows(wire) == rows


@pytest.mark.parametrize(("row", "what"), [
    (["train", "k" * 300, 0, None, 1.0, "t"], "longer than 256"),
    (["train", "", 0, None, 1.0, "t"], "empty"),
    (["tr\x00", "k", 0, None, 1.0, "t"], "NUL"),
    (["train", "k", 2**63, None, 1.0, "t"], "64 bits"),
    (["train", "k", 1.0, None, 1.0, "t"], "integers"),
    (["train", "k", 0, None, "x", "t"], "not a number"),
    (["train", "k", 0, None, 1.0], "must be"),
    ([["x"], "k", 0, None, 1.0, "t"], "metric type"),
])
def test_metric_rows_refused_naming_the_row(row, what):
    with pytest.raises(ValueError, match="metric row 0") as info:
        p.decode_metric_rows([row])
    assert what in str(info.value)


def test_request_models_apply_the_same_rules():
    base = {"uuid": "u1", "name": "r", "alternative_name": "r_1", "folder": "/alice/default",
            "conflict_strategy": "new",
            "metadata": {"start_timestamp": "t", "labels": ["a"], "description": ""}}
    p.RunClaim.model_validate(base)
    for field, value in (("name", "a b"), ("folder", "/alice/a%20b"), ("uuid", "-x")):
        with pytest.raises(ValueError):
            p.RunClaim.model_validate({**base, field: value})
    with pytest.raises(ValueError, match="NUL"):
        p.RunClaim.model_validate({**base, "metadata": {**base["metadata"],
                                                         "description": "\x00"}})
    art = {**base, "metadata": {"created_timestamp": "t"},
           "objects": [{"path": "a%20b.txt", "kind": "reference", "uri": "s3://x"}]}
    with pytest.raises(ValueError, match="a%20b.txt"):
        p.ArtifactClaim.model_validate(art)
