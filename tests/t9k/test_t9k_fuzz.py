"""Hypothesis over the compat endpoints: hostile paths (escapes, encodings, other users' roots)
with bob's key never reach alice's nodes, never write outside the data directory, and never
make the server fail (5xx)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstore.remote import Client
from tests.t9k.compat_http import Compat

CI = os.environ.get("CI") == "true"
SEGMENTS = st.one_of(
    st.sampled_from(["alice", "bob", "..", ".", "", "%2e%2e", "%2F", "default", "proj", "r",
                     "metadata.yaml", "metrics", "..%2f", "\\..", "ａｌｉｃｅ", "alice\x00",
                     "bob/../alice", "~", "*", "stdout.log"]),
    st.text(max_size=12))
PATHS = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=6).map(lambda s: "/" + "/".join(s)),
    st.text(max_size=40))


def tree(server, user: str) -> dict:
    """Everything a user holds, through runstore's own API."""
    out = {}
    with Client(server.url, server.tokens[user]) as c:
        todo = [f"/{user}"]
        while todo:
            path = todo.pop()
            listing = c.request("GET", f"/folders{path}")
            out[path] = sorted((n["path"], n["uuid"], n["status"]) for n in listing["nodes"])
            todo.extend(listing["folders"])
        for run in c.request("GET", "/runs"):
            out[run["uuid"]] = c.request("GET", f"/runs/{run['uuid']}")
    return out


def files_under(root) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


def is_bobs(path: str) -> bool:
    return path == "/bob" or path.startswith("/bob/")


def test_hostile_paths_stay_in_their_users_tree(t9k_server):
    with Compat(t9k_server.url, t9k_server.keys["alice"]) as alice:
        alice.node("/alice", "proj", "Folder")
        alice.node("/alice/proj", "r", "Run", "r_240101_000000_aaaaaa")
        alice.put("/alice/proj/r/metadata.yaml", b"kind: Run\n")
        alice.put("/alice/proj/r/stdout.log", b"secret\n")
    before = tree(t9k_server, "alice")
    outside = t9k_server.proc.data_dir.parent
    others = files_under(outside) - files_under(t9k_server.proc.data_dir)

    @settings(max_examples=int(os.environ.get("RUNSTORE_T9K_FUZZ_EXAMPLES", "25" if CI else "100")),
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=PATHS, name=SEGMENTS, kind=st.sampled_from(["Folder", "Run", "Artifact"]))
    def probe(path, name, kind):
        with Compat(t9k_server.url, t9k_server.keys["bob"]) as bob:
            answers = [
                bob.get("/apis/v1/nodes/info", node=path),
                bob.get("/apis/v1/nodes", parent=path),
                bob.get("/apis/v1/objects", path=path),
                bob.get("/apis/v1/objects/ls", path=path),
                bob.get("/apis/v1/graphs", current=path),
                bob.node(path, name, kind),
                bob.put(path, b"x"),
                bob.put(f"{path}/{name}", b"y"),
                bob.http.post("/apis/v1/objects/multipart", params={"path": path}),
                bob.delete(path),
            ]
        for answer in answers:
            assert answer.status_code < 500, (path, answer.request.url, answer.text)
            assert not 300 <= answer.status_code < 400
            if answer.is_success:
                assert is_bobs(path) or not path.startswith("/"), (path, answer.request.url)
            assert "secret" not in answer.text
            if path.startswith("/alice"):
                assert answer.status_code == 403 and answer.text == "permission denied"

    probe()
    assert tree(t9k_server, "alice") == before
    assert files_under(outside) - files_under(t9k_server.proc.data_dir) == others
