"""API abuse (promises 5 and 7): schemathesis fuzzes every operation of the server's own
OpenAPI description, with valid data and with data that breaks the schema, as a user with a
valid token. No request may get a 5xx, and no answer may carry another user's data.

Another user (bob) holds a run, an artifact and a blob, each carrying a marker string; the
fuzzing user (alice) has data of her own, so that valid requests reach the handlers' deeper
paths. A targeted test then aims alice's token at each of bob's identifiers directly.
RUNSTORE_FUZZ_EXAMPLES sets the examples per operation and mode (default 25).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.server_harness import ServerProcess
from tests.syncd.helpers import run_python

EXAMPLES = int(os.environ.get("RUNSTORE_FUZZ_EXAMPLES", "25"))
MARKER = "BOB-PRIVATE-7f3a9c"

OWN_DATA = """
import runstore as em
with open("weights.bin", "wb") as fh:
    fh.write(b"{marker}" * 100)
art = em.create_artifact("{name}-weights", description="{marker}")
art.add_file("weights.bin")
run = em.create_run(name="{name}", hparams={{"note": "{marker}"}}, description="{marker}",
                    folder="projects/{marker}", make_folder=True)
for i in range(50):
    run.log("train", {{"loss": 1.0 / (i + 1)}}, step=i)
run.mark_output(art)
run.finish()
print(run.uuid, art.uuid)
"""


def _populate(home: Path, server: ServerProcess, token: str, name: str, marker: str
              ) -> dict[str, str]:
    """A finished run with an output artifact in ``home``, uploaded with ``token``."""
    home.mkdir(parents=True)
    out = run_python(f"import os; os.chdir({str(home)!r})\n"
                     + OWN_DATA.format(name=name, marker=marker), home)
    run_uuid, art_uuid = out.stdout.split()
    store = Store(home)
    try:
        with Client(server.url, token) as client:
            result = upload_run(store, run_uuid, client)
        sha = store.read("SELECT sha256 FROM artifact_objects")[0][0]
    finally:
        store.close()
    assert result.complete
    return {"run": run_uuid, "artifact": art_uuid, "sha256": sha,
            "path": result.remote_path, "folder": result.remote_path.rsplit("/", 1)[0]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("fuzz")
    with ServerProcess(base / "srv") as server:
        alice, bob = server.add_user("alice"), server.add_user("bob")
        bobs = _populate(base / "bob", server, bob, "bobrun", MARKER)
        alices = _populate(base / "alice", server, alice, "alicerun", "alice-own-data")
        raw = httpx.get(f"{server.url}/api/v1/openapi.json", timeout=10).json()
        yield {"server": server, "alice": alice, "bob": bob, "bobs": bobs,
               "alices": alices, "schema": schemathesis.openapi.from_dict(raw)}


def _leaks(body: bytes, bobs: dict[str, str], asked: str = "") -> list[str]:
    """Bob's secrets in an answer (an identifier the request itself sent may be echoed)."""
    text = body.decode("utf-8", "replace")
    return [what for what in (MARKER, bobs["run"], bobs["artifact"], bobs["sha256"])
            if what in text and what not in asked]


def _operations(schema) -> list[Any]:
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 15, [op.label for op in ops]
    return ops


def _aimed(op, mode, alices: dict[str, str]):
    """Cases of ``op``; in half of them the identifiers point at alice's real data (her run,
    artifact, blob, folder), so that valid requests get past the lookups into the handlers."""
    pinned = {"uuid": alices["artifact"] if "/artifacts/" in op.path else alices["run"],
              "sha256": alices["sha256"], "path": alices["folder"].lstrip("/")}
    names = [p.name for p in op.path_parameters] if hasattr(op, "path_parameters") else []
    free = op.as_strategy(generation_mode=mode)
    if mode is not schemathesis.GenerationMode.POSITIVE:
        return free
    aimed = op.as_strategy(generation_mode=mode, path_parameters={
        k: v for k, v in pinned.items() if k in names}) if names else free

    def retarget(case):
        if isinstance(case.body, dict):
            if "folder" in case.body:
                case.body["folder"] = alices["folder"]
            if isinstance(case.body.get("path"), str):
                case.body["path"] = alices["folder"] + "/fuzz"
        if case.query and "path" in case.query:
            case.query["path"] = alices["path"]
        return case

    return st.one_of(free, aimed.map(retarget))


def _fuzzer(op, mode, base_url: str, headers: dict[str, str], bobs: dict[str, str],
            alices: dict[str, str], failures: list[str], calls: list[int], statuses: Counter):
    """A hypothesis test sending ``op``'s generated requests; it records what goes wrong."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck),
              derandomize=os.environ.get("CI") == "true")  # CI: the same draws each time
    @given(case=_aimed(op, mode, alices))
    def fuzz(case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        calls[0] += 1
        statuses[(op.label, response.status_code // 100)] += 1
        where = f"{op.label} [{mode.value}] {case.method} {response.request.url}"
        if response.status_code >= 500:
            failures.append(f"{where}: HTTP {response.status_code} {response.text[:300]}"
                            f" body={str(case.body)[:300]}")
        leaked = _leaks(response.content, bobs)
        if leaked:
            failures.append(f"{where}: answer carries bob's {leaked}")

    return fuzz


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_every_operation_no_5xx_no_leak(world) -> None:
    server, bobs = world["server"], world["bobs"]
    headers = {"Authorization": f"Bearer {world['alice']}"}
    failures: list[str] = []
    calls = [0]
    statuses: Counter = Counter()
    skipped = []
    for op in _operations(world["schema"]):
        for mode in schemathesis.GenerationMode:
            try:
                _fuzzer(op, mode, server.url, headers, bobs, world["alices"], failures, calls,
                        statuses)()
            except Unsatisfiable:
                # NEGATIVE mode where no input can break the schema (no parameters, or only
                # unconstrained strings): nothing to send.
                assert mode is schemathesis.GenerationMode.NEGATIVE, op.label
                skipped.append(op.label)
    assert len(skipped) < len(_operations(world["schema"])) // 2, skipped
    assert calls[0] >= len(_operations(world["schema"])) * EXAMPLES, calls
    assert not failures, "\n".join(failures[:30])
    answered = {label for (label, klass) in statuses if klass == 2}
    print(f"{calls[0]} requests; by class: "
          f"{dict(Counter(klass for (_, klass) in statuses.elements()))}; "
          f"{len(answered)} operations answered 2xx at least once")
    assert len(answered) >= 8, sorted(answered)  # the fuzzing reached the handlers
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
    # The server is still well and bob's data untouched after the fuzzing.
    with Client(server.url, world["bob"]) as client:
        detail = client.request("GET", f"/runs/{bobs['run']}")
    assert detail["metric_count"] == 50 and detail["complete"]


def _attempts(bobs: dict[str, str], alices: dict[str, str]) -> list[tuple[str, str, Any]]:
    run, art, sha = bobs["run"], bobs["artifact"], bobs["sha256"]
    meta = {"status": "Complete", "start_timestamp": "2026-01-01T00:00:00+00:00"}
    return [
        ("GET", f"/runs/{run}", None),
        ("GET", f"/runs/{run}/metrics", None),
        ("PUT", f"/runs/{run}/metrics", {"offset": 50, "rows": [["t", "k", 1, None, 1.0,
                                                                  "2026-01-01T00:00:00"]]}),
        ("PUT", f"/runs/{run}/lineage", {"input": [], "output": []}),
        ("POST", f"/runs/{run}/finalize", {"metric_count": 50, "metadata": meta}),
        ("GET", f"/artifacts/{art}", None),
        ("GET", f"/blobs/{sha}", None),
        ("GET", f"/folders{bobs['folder']}", None),
        ("GET", "/folders/bob", None),
        ("GET", "/resolve?path=" + bobs["path"], None),
        ("POST", "/folders", {"path": "/bob/mine-now", "make_parents": True}),
        ("POST", "/runs/claim", {"uuid": "0" * 32, "name": "bobrun", "alternative_name": "x2",
                                 "folder": bobs["folder"], "conflict_strategy": "replace",
                                 "metadata": meta}),
        ("POST", "/artifacts/claim", {"uuid": art, "name": "w", "alternative_name": "w1",
                                      "folder": alices["folder"], "conflict_strategy": "new",
                                      "metadata": {"created_timestamp": "2026-01-01"},
                                      "objects": [{"path": "w.bin", "kind": "file",
                                                   "sha256": sha, "size_bytes": 1}]}),
        ("POST", "/blobs/missing", {"sha256": [sha]}),
        ("POST", "/uploads", {"sha256": sha, "size_bytes": 1}),
    ]


def test_another_users_identifiers_get_nothing(world) -> None:
    """Each of bob's UUIDs, paths and blob hashes, used with alice's valid token."""
    server, bobs = world["server"], world["bobs"]
    headers = {"Authorization": f"Bearer {world['alice']}"}
    for method, path, body in _attempts(bobs, world["alices"]):
        r = httpx.request(method, f"{server.url}/api/v1{path}", json=body, headers=headers,
                          timeout=10)
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        if path == "/blobs/missing":  # answered, but only about alice's own blobs
            assert r.json() == {"missing": [bobs["sha256"]]}
            continue
        if path == "/uploads":  # alice may upload the same bytes herself, from offset 0
            assert r.json()["offset"] == 0 and not r.json()["complete"], r.text
            continue
        assert r.status_code in (403, 404, 409, 422), (method, path, r.status_code, r.text)
        asked = path + json.dumps(body)
        assert not _leaks(r.content, bobs, asked), (method, path, r.text)
    # A UUID names a run within its owner's runs: alice may claim bob's UUID for a run of her
    # own, in her folder, and that touches nothing of bob's.
    r = httpx.post(f"{server.url}/api/v1/runs/claim", headers=headers, timeout=10, json={
        "uuid": bobs["run"], "name": "bobrun", "alternative_name": "x1",
        "folder": world["alices"]["folder"], "conflict_strategy": "replace",
        "metadata": {"status": "Complete", "start_timestamp": "2026-01-01T00:00:00+00:00"}})
    assert r.status_code == 200 and r.json()["remote_path"].startswith("/alice/"), r.text
    assert r.json()["metric_count"] == 0
    # Bob's run is exactly as it was, still in his folder.
    with Client(server.url, world["bob"]) as client:
        detail = client.request("GET", f"/runs/{bobs['run']}")
    assert (detail["path"], detail["metric_count"], detail["complete"]) == \
        (bobs["path"], 50, True)


def test_without_a_valid_token_every_route_is_refused(world) -> None:
    server = world["server"]
    for op in _operations(world["schema"]):
        path = op.path.replace("{uuid}", world["alices"]["run"]).replace(
            "{sha256}", world["alices"]["sha256"]).replace("{path}", "alice")
        for auth in ({}, {"Authorization": "Bearer nope"},
                     {"Authorization": f"Bearer {world['alice']}x"}):
            r = httpx.request(op.method.upper(), f"{server.url}{path}", headers=auth,
                              timeout=10)
            if path.endswith("/health"):
                assert r.status_code == 200
                continue
            assert r.status_code == 401, (op.label, auth, r.status_code, r.text)
            assert "alice-own-data" not in r.text
