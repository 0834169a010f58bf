"""Auth on every route, hostile names and paths, bad blobs, oversized bodies: against the real
server process."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid as uuidlib
from pathlib import Path

import httpx
import pytest

from runstore.server.app import PUBLIC_PATHS, create_app

SHA_X = hashlib.sha256(b"alice's secret bytes").hexdigest()


def h(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def claim_body(folder: str, name: str = "r1", run_uuid: str | None = None, **kw) -> dict:
    body = {"uuid": run_uuid or str(uuidlib.uuid4()), "name": name,
            "alternative_name": f"{name}_240101_000000_abcdef", "folder": folder,
            "conflict_strategy": "new",
            "metadata": {"start_timestamp": "2024-01-01T00:00:00.000000+00:00"}}
    body.update(kw)
    return body


def put_blob(url: str, token: str, data: bytes) -> httpx.Response:
    sha = hashlib.sha256(data).hexdigest()
    httpx.post(f"{url}/api/v1/uploads", json={"sha256": sha, "size_bytes": len(data)},
               headers=h(token)).raise_for_status()
    return httpx.patch(f"{url}/api/v1/uploads/{sha}", params={"offset": 0, "size": len(data)},
                       content=data, headers=h(token))


@pytest.fixture
def world(server, alice):
    """alice owns a run, an artifact and a blob; bob exists; carol's token is revoked."""
    bob = server.add_user("bob")
    carol = server.add_user("carol")
    server.revoke_user("carol")
    url = f"{server.url}/api/v1"
    run_uuid = str(uuidlib.uuid4())
    art_uuid = str(uuidlib.uuid4())
    httpx.post(f"{url}/folders", json={"path": "/alice/default"},
               headers=h(alice)).raise_for_status()
    httpx.post(f"{url}/runs/claim", json=claim_body("/alice/default", run_uuid=run_uuid),
               headers=h(alice)).raise_for_status()
    assert put_blob(server.url, alice, b"alice's secret bytes").status_code == 200
    httpx.post(f"{url}/artifacts/claim", headers=h(alice), json={
        "uuid": art_uuid, "name": "data", "alternative_name": "data_240101_000000_abcdef",
        "folder": "/alice/default", "conflict_strategy": "new",
        "metadata": {"created_timestamp": "2024-01-01T00:00:00+00:00"},
        "objects": [{"path": "x.txt", "kind": "file", "sha256": SHA_X, "size_bytes": 20}]}
    ).raise_for_status()
    httpx.put(f"{url}/runs/{run_uuid}/files/stdout.log", headers=h(alice),
              json={"sha256": SHA_X, "size_bytes": 20}).raise_for_status()
    return {"alice": alice, "bob": bob, "carol": carol, "run": run_uuid, "art": art_uuid}


def route_table() -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, from its own route table."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        app = create_app(d)
        out = []
        for route in app.routes:
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    out.append((method, route.path))
        app.state.database.dispose()
    return out


# What bob (a valid token, another user) gets on each route aimed at alice's things.
# Reads answer 404 (as if absent), writes under /alice answer 403; routes about the caller
# himself answer 200 but must not show alice's data. A new route fails here until listed.
OTHER_USER = {
    ("GET", "/api/v1/whoami"): 200,
    ("POST", "/api/v1/folders"): 403,
    ("GET", "/api/v1/folders/{path:path}"): 404,
    ("GET", "/api/v1/resolve"): 404,
    ("GET", "/api/v1/runs"): 200,
    ("POST", "/api/v1/runs/claim"): 403,
    ("GET", "/api/v1/runs/{uuid}"): 404,
    ("PUT", "/api/v1/runs/{uuid}/metrics"): 404,
    ("GET", "/api/v1/runs/{uuid}/metrics"): 404,
    ("PUT", "/api/v1/runs/{uuid}/lineage"): 404,
    ("POST", "/api/v1/runs/{uuid}/finalize"): 404,
    ("PUT", "/api/v1/runs/{uuid}/files/{path}"): 404,
    ("GET", "/api/v1/runs/{uuid}/files/{path}"): 404,
    ("POST", "/api/v1/blobs/missing"): 200,
    ("GET", "/api/v1/blobs/{sha256}"): 404,
    ("POST", "/api/v1/uploads"): 200,
    ("PATCH", "/api/v1/uploads/{sha256}"): 422,  # his bytes do not match alice's sha
    ("POST", "/api/v1/artifacts/claim"): 403,
    ("GET", "/api/v1/artifacts/{uuid}"): 404,
}


def request_for(method: str, template: str, w: dict):
    path = (template.replace("{path:path}", "alice/default").replace("{uuid}", w["run"])
            .replace("{sha256}", SHA_X).replace("{path}", "stdout.log"))
    if template == "/api/v1/artifacts/{uuid}":
        path = template.replace("{uuid}", w["art"])
    kw: dict = {}
    if template == "/api/v1/folders":
        kw["json"] = {"path": "/alice/evil", "make_parents": True}
    elif template == "/api/v1/resolve":
        kw["params"] = {"path": "/alice/default/r1"}
    elif template == "/api/v1/runs/claim":
        kw["json"] = claim_body("/alice/default", run_uuid=w["run"])
    elif template.endswith("/metrics") and method == "PUT":
        kw["json"] = {"offset": 0, "rows": [["train", "loss", 1, None, 0.5, "t"]]}
    elif template.endswith("/lineage"):
        kw["json"] = {"input": [], "output": []}
    elif template.endswith("/files/{path}") and method == "PUT":
        kw["json"] = {"sha256": SHA_X, "size_bytes": 20}  # a blob bob does not own
    elif template.endswith("/finalize"):
        kw["json"] = {"metric_count": 0, "metadata": claim_body("/x")["metadata"]}
    elif template == "/api/v1/blobs/missing":
        kw["json"] = {"sha256": [SHA_X]}
    elif template == "/api/v1/uploads":
        kw["json"] = {"sha256": SHA_X, "size_bytes": 20}
    elif template == "/api/v1/uploads/{sha256}":
        kw["params"] = {"offset": 0, "size": 20}
        kw["content"] = b"not alice's bytes!!!"
    elif template == "/api/v1/artifacts/claim":
        kw["json"] = {"uuid": w["art"], "name": "data", "alternative_name": "d_1",
                      "folder": "/alice/default", "conflict_strategy": "replace",
                      "metadata": {"created_timestamp": "t"}, "objects": []}
    return path, kw


def test_every_route_requires_a_valid_token_of_the_owner(server, world):
    routes = route_table()
    public = {(m, p) for m, p in routes if p in PUBLIC_PATHS}
    assert {p for _, p in public} == {"/api/v1/health", "/api/v1/openapi.json",
                                      "/api/v1/docs"}
    private = [r for r in routes if r not in public]
    assert set(private) == set(OTHER_USER), "a route is missing from OTHER_USER"
    revoked, bad = world["carol"], world["alice"][:-4] + "AAAA"
    with httpx.Client(base_url=server.url) as http:
        for method, template in private:
            path, kw = request_for(method, template, world)
            for token in (None, bad, revoked, "rst_zzz", "Basic abc"):
                r = http.request(method, path, headers=h(token), **kw)
                assert r.status_code == 401, (method, template, token, r.text)
                assert "alice" not in r.text
            r = http.request(method, path, headers=h(world["bob"]), **kw)
            assert r.status_code == OTHER_USER[(method, template)], (method, template, r.text)
            assert "secret" not in r.text
            if r.status_code == 404:
                # Exactly the answer for something that does not exist at all: no leak.
                ghost = dict(world, run=str(uuidlib.uuid4()), art=str(uuidlib.uuid4()))
                gpath, gkw = request_for(method, template, ghost)
                g = http.request(method, gpath, headers=h(world["bob"]), **gkw)
                assert g.status_code == 404
                assert g.text.replace(ghost["run"], "X").replace(ghost["art"], "X") == \
                    r.text.replace(world["run"], "X").replace(world["art"], "X")
        assert http.get("/api/v1/runs", headers=h(world["bob"])).json() == []
        assert http.post("/api/v1/blobs/missing", json={"sha256": [SHA_X]},
                         headers=h(world["bob"])).json() == {"missing": [SHA_X]}
        # Bob's PATCH above sent other bytes under alice's sha: refused as a mismatch
        # (422) or still incomplete, and it never became a blob bob may read.
        assert http.get(f"/api/v1/blobs/{SHA_X}", headers=h(world["bob"])).status_code == 404
        # alice still reads everything of hers
        assert http.get(f"/api/v1/runs/{world['run']}",
                        headers=h(world["alice"])).status_code == 200
        assert http.get(f"/api/v1/blobs/{SHA_X}", headers=h(world["alice"])).content == \
            b"alice's secret bytes"
        assert http.get(f"/api/v1/runs/{world['run']}/files/stdout.log",
                        headers=h(world["alice"])).content == b"alice's secret bytes"
        assert http.get("/api/v1/health").status_code == 200
        assert "paths" in http.get("/api/v1/openapi.json").json()


def test_revoking_one_token_keeps_the_others(server, alice):
    second = server.new_token("alice")
    listed = server.cli("user", "list", "--json")
    token_ids = [t["id"] for t in __import__("json").loads(listed.stdout)[0]["tokens"]]
    assert len(token_ids) == 2 and alice.split("_")[1] == token_ids[0]
    server.revoke_user("alice", token_id=token_ids[0])
    assert httpx.get(f"{server.url}/api/v1/whoami", headers=h(alice)).status_code == 401
    assert httpx.get(f"{server.url}/api/v1/whoami", headers=h(second)).json()["user"] == "alice"
    db_bytes = (Path(server.data_dir) / "server.db").read_bytes()
    assert alice.encode() not in db_bytes and second.encode() not in db_bytes


HOSTILE = ["..", ".", "%2e%2e%2f", "%252e%252e%252f", "..%2f..%2fetc", "/etc/passwd", "a\\b",
           "..\\..\\x", "a\x00b", "\uff0e\uff0e", "\uff41lice", "x" * 10240, "a/../../b",
           "-rf", " x", "x\n", "é"]
# Object paths may hold any file name ('-rf', ' x', 'é' are fine), never an escape.
HOSTILE_OBJECT_PATHS = [b for b in HOSTILE if b not in ("-rf", " x", "é")]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not p.name.startswith("server.db") and p.name != "server.log"}


def test_hostile_names_are_refused_and_nothing_escapes(server, alice, tmp_path):
    alice2 = server.add_user("alice2")
    url = f"{server.url}/api/v1"
    before_outside = set(os.listdir(tmp_path))
    before = snapshot(server.data_dir)
    with httpx.Client(base_url=url, headers=h(alice)) as http:
        http.post("/folders", json={"path": "/alice/default"}).raise_for_status()
        for i, bad in enumerate(HOSTILE):
            r = http.post("/folders", json={"path": f"/alice/{bad}", "make_parents": True})
            assert r.status_code in (403, 422), (bad, r.status_code, r.text)
            r = http.post("/runs/claim", json=claim_body("/alice/default", name=bad))
            assert r.status_code == 422, (bad, r.text)
            r = http.post("/runs/claim", json=claim_body(f"/alice/{bad}"))
            assert r.status_code in (403, 404, 422), (bad, r.text)
            r = http.post("/artifacts/claim", json={
                "uuid": str(uuidlib.uuid4()), "name": "data", "alternative_name": f"d_{i}",
                "folder": "/alice/default", "conflict_strategy": "new",
                "metadata": {"created_timestamp": "t"},
                "objects": [{"path": bad, "kind": "reference", "uri": "s3://b/k"}]})
            assert r.status_code == (422 if bad in HOSTILE_OBJECT_PATHS else 200), (bad, r.text)
        for raw in ["/folders/alice/%2e%2e/%2e%2e/etc", "/folders/alice/..%2f..%2f",
                    "/folders/alice/%252e%252e", "/folders/alice2", "/folders/alice%00",
                    "/folders//etc/passwd", "/blobs/..%2f..%2fserver.db"]:
            r = http.get(raw)
            assert r.status_code in (404, 422), (raw, r.status_code)
            assert b"SQLite" not in r.content
        # alice2 is not under alice, nor alice under alice2
        assert http.post("/folders", json={"path": "/alice2/x"}).status_code == 403
        assert http.get("/folders/alice2").status_code == 404
        assert http.get("/folders/alice/default").status_code == 200
        listing = http.get("/folders/alice/default").json()
        assert len(listing["nodes"]) == 3 and listing["folders"] == []
    assert httpx.get(f"{url}/folders/alice", headers=h(alice2)).status_code == 404
    assert set(os.listdir(tmp_path)) == before_outside
    assert snapshot(server.data_dir) == before


def test_blob_with_wrong_bytes_is_refused_and_not_stored(server, alice):
    url = f"{server.url}/api/v1"
    claimed = hashlib.sha256(b"the real content").hexdigest()
    httpx.post(f"{url}/uploads", json={"sha256": claimed, "size_bytes": 16},
               headers=h(alice)).raise_for_status()
    r = httpx.patch(f"{url}/uploads/{claimed}", params={"offset": 0, "size": 16},
                    content=b"some fake bytes!", headers=h(alice))
    assert r.status_code == 422 and "do not match" in r.json()["detail"]
    blobs = list((server.data_dir / "blobs").rglob("*"))
    assert [p for p in blobs if p.is_file()] == []
    assert list((server.data_dir / "uploads").iterdir()) == []
    assert httpx.post(f"{url}/blobs/missing", json={"sha256": [claimed]},
                      headers=h(alice)).json() == {"missing": [claimed]}
    # More bytes than declared: refused too.
    r = httpx.patch(f"{url}/uploads/{claimed}", params={"offset": 0, "size": 16},
                    content=b"x" * 17, headers=h(alice))
    assert r.status_code == 413


def test_oversized_bodies_get_413_before_being_buffered(server, alice):
    # A Content-Length of 1 GB with no body sent: the answer comes at once.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/runs/claim HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 1000000000\r\nAuthorization: Bearer "
                  + alice.encode() + b"\r\n\r\n{")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")

    def chunks():  # chunked, no Content-Length: the limit holds while streaming
        for _ in range(40):
            yield b" " * (1 << 20)
    r = httpx.post(f"{server.url}/api/v1/runs/claim", content=chunks(),
                   headers={**h(alice), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/api/v1/health").status_code == 200
