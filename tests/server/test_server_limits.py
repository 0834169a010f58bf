"""Integers wider than the database's 64 bits are refused with 422, never a 500."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/api/v1/runs/{uuid}/metrics", {"params": {"offset": 2**64}}),
    ("PATCH", "/api/v1/uploads/" + "a" * 64, {"params": {"offset": 2**63, "size": 1},
                                             "content": b"x"}),
    ("POST", "/api/v1/uploads", {"json": {"sha256": "a" * 64, "size_bytes": 2**63}}),
    ("PUT", "/api/v1/runs/{uuid}/metrics",
     {"json": {"offset": 0, "rows": [["train", "x", 2**63, None, 1.0, "t"]]}}),
    ("PUT", "/api/v1/runs/{uuid}/metrics", {"json": {"offset": 2**63, "rows": []}}),
])
def test_wide_integers_get_422(server, alice, method, path, kwargs):
    uuid = "fd1a668aa6ea4e2eb6387db60d4a1251"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {alice}"}) as c:
        c.post("/api/v1/folders", json={"path": "/alice/default", "make_parents": False})
        c.post("/api/v1/runs/claim", json={
            "uuid": uuid, "name": "r", "alternative_name": "r_261126_000000_abcdef",
            "folder": "/alice/default", "conflict_strategy": "new",
            "metadata": {"status": "Running", "start_timestamp": "2026-01-01T00:00:00+00:00"}})
        response = c.request(method, path.format(uuid=uuid), **kwargs)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
