"""One set of rules: whatever the SDK accepts, the REAL server accepts and the run syncs;
whatever the SDK refuses, it refuses at the call, with one line naming the value.

Hypothesis draws run names, labels, descriptions, folders, metric types, keys, values and
steps, artifact names, object paths and reference uris (wild text included: NUL, lone
surrogates, '%', NFKC look-alikes, long strings). Each example drives the SDK as a user would,
then uploads the run (and its output artifact) with runstore.remote to a real `runstore serve`
started once for the module. Examples: RUNSTORE_RULES_EXAMPLES (default 20 under CI=true,
else 60).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import runstore as em
from runstore.api import default_store
from runstore.remote import Client, upload_run
from runstore.rules import object_path, short
from tests.server_harness import ServerProcess

EXAMPLES = int(os.environ.get("RUNSTORE_RULES_EXAMPLES",
                              "20" if os.environ.get("CI") else "60"))

# Text that explores the edges: ASCII, Unicode (with surrogates and NUL), and the characters
# the rules single out.
_wild_char = st.one_of(st.characters(), st.sampled_from("%/\\.\x00 _-ﬁ．\ud800é"))
wild_text = st.one_of(st.text(_wild_char, max_size=12),
                      st.text("ab", min_size=250, max_size=300))


def mostly(valid, wild):
    """valid three times in four: an example refused at its first call tests little."""
    return st.sampled_from([False, False, False, True]).flatmap(
        lambda is_wild: wild if is_wild else valid)


names = mostly(st.from_regex(r"[a-z][a-z0-9_-]{0,8}[a-z0-9]", fullmatch=True), wild_text)
folders = mostly(st.sampled_from(["default", "proj/sub", "proj/"]), wild_text)
labels = mostly(st.lists(st.sampled_from(["cnn", "é label"]), max_size=2),
                st.lists(wild_text, max_size=2))
descriptions = mostly(st.text(max_size=20).filter(lambda t: "\x00" not in t), wild_text)
object_paths = st.one_of(
    st.none(),
    st.lists(st.one_of(st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True), wild_text),
             min_size=1, max_size=3).map("/".join),
    st.sampled_from(["a%20b.txt", "ﬁle.txt", "/lead.txt", "dir/", "a/../b", "x" * 1100]),
)
metric_values = st.one_of(st.floats(), st.integers(min_value=-(2**1100), max_value=2**1100),
                          st.just(math.nan))
steps = mostly(st.integers(-5, 10**6), st.integers(-(2**70), 2**70))
log_calls = st.lists(st.tuples(mostly(st.sampled_from(["train", "val"]), wild_text),
                               mostly(st.sampled_from(["loss", "acc"]), wild_text),
                               metric_values, steps), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def server_client(tmp_path_factory: pytest.TempPathFactory):
    """One real server for the module (not one per example), and a client as alice."""
    with ServerProcess(tmp_path_factory.mktemp("rules-server")) as server:
        token = server.add_user("alice")
        with Client(server.url, token, max_attempts=1) as client:
            yield client


def attempt(fn, *values):
    """(result, None) if the SDK accepts; else (None, message), checking that the refusal is a
    ValueError/TypeError at the call whose one-line message names one of values."""
    try:
        return fn(), None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert any(short(v) in message for v in values if v is not None), (message, values)
        return None, message


def _stored(obj_path: str | None, basename: str) -> str | None:
    """The object path t9k's conventions make of obj_path (None if the rules refuse it)."""
    try:
        return object_path(obj_path, basename)
    except ValueError:
        return None


def _fresh(tmp: Path, n: int) -> Path:
    path = tmp / f"f{n}.bin"
    path.write_bytes(f"content {n}".encode())
    return path


@settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=names, labels=labels, description=descriptions, folder=folders, calls=log_calls,
       art_name=names, obj_path=object_paths, ref_path=object_paths,
       uri=mostly(st.just("s3://bucket/key.bin"), wild_text))
# A name with a trailing newline (NAME_PATTERN's '$' matched before it; the server refused it).
@example(name="ab\n", labels=[], description="", folder="default", calls=[], art_name="a",
         obj_path=None, ref_path=None, uri="s3://b/k")
# The three cases the issue found (accepted by the SDK, refused by the server).
@example(name="r", labels=[], description="", folder="default", calls=[], art_name="a",
         obj_path="a%20b.txt", ref_path=None, uri="s3://b/k")
@example(name="r", labels=[], description="", folder="default", calls=[], art_name="a",
         obj_path="ﬁle.txt", ref_path=None, uri="s3://b/k")
@example(name="r", labels=[], description="", folder="default",
         calls=[("train", "k" * 300, 1.0, 0)], art_name="a", obj_path=None, ref_path=None,
         uri="s3://b/k")
def test_what_the_sdk_accepts_syncs_and_what_it_refuses_it_refuses_at_the_call(
        server_client, tmp_path, name, labels, description, folder, calls, art_name, obj_path,
        ref_path, uri):
    run, refused = attempt(lambda: em.create_run(name=name, labels=labels,
                                                 description=description, folder=folder,
                                                 make_folder=True),
                           name, *labels, description, folder)
    if run is None:
        event(f"run refused at create_run: {refused[:40]}")
        return
    logged = 0
    for type_, key, value, step in calls:
        _, refused = attempt(lambda t=type_, k=key, v=value, s=step: run.log(t, {k: v}, step=s),
                             type_, key, value, step)
        logged += refused is None
    art, _ = attempt(lambda: em.create_artifact(art_name), art_name)
    if art is not None:
        attempt(lambda: art.add_file(_fresh(tmp_path, 1), obj_path), obj_path)
        # (a reference at the file's path is refused naming the path as stored)
        attempt(lambda: art.add_reference(uri, ref_path), uri, ref_path,
                _stored(ref_path, uri.rstrip("/").rsplit("/", 1)[-1] or uri))
        run.mark_output(art)
    run.finish()

    event(f"synced: {logged} rows, artifact {'refused' if art is None else 'accepted'}")
    result = upload_run(default_store(), run.uuid, server_client)
    assert result.complete, result
    detail = server_client.request("GET", f"/runs/{run.uuid}")
    local_rows = sum(len(rec["value"]) for recs in run.metrics.values() for rec in recs)
    assert detail["metric_count"] == local_rows == logged
    assert detail["metadata"]["labels"] == labels
    assert detail["metadata"]["description"] == description
    if art is not None:
        served = server_client.request("GET", f"/artifacts/{art.uuid}")
        assert {o["path"] for o in served["objects"]} == set(art.objects)
