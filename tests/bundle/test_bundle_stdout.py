"""A run's stdout.log crosses the air gap in bundles (as a verified blob) and reaches the
server through the import's upload: bundles out of order never shorten it, a log that only
grew is carried again, and a bundle naming a log it does not hold is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runstore.bundle import export_bundle, import_bundles
from runstore.bundle.format import BundleCorruptError, verify
from runstore.bundle.importer import staging_store
from runstore.store import Store
from tests.remote.rs_fixtures import add_metrics, finish, make_run


def log_of(store: Store, run: str) -> Path:
    local = Path(store.read("SELECT local_dir FROM runs WHERE uuid = ?", (run,))[0][0])
    local.mkdir(parents=True, exist_ok=True)
    return local / "stdout.log"


def on_server(client, run: str) -> bytes:
    return client.request("GET", f"/runs/{run}/files/stdout.log")


def test_stdout_goes_through_bundles_in_any_order(tmp_path: Path, client):
    source = Store(tmp_path / "node")
    run = make_run(source, "trained-offline", n_metrics=10, status="Running")
    quiet = make_run(source, "quiet", n_metrics=5)
    log = log_of(source, run)
    log.write_bytes(b"epoch 0\n")
    usb = tmp_path / "usb"
    one = export_bundle(source, usb)
    with log.open("ab") as fh:
        fh.write(b"epoch 1\n")
    add_metrics(source, run, 10)
    finish(source, run)
    two = export_bundle(source, usb)
    with log.open("ab") as fh:  # printed after the last rows: only the log changed
        fh.write("done \u00e9\n".encode())
    three = export_bundle(source, usb)
    assert one and two and three
    sizes = {e.uuid: (e.rows_from, e.rows_to, e.stdout_size) for e in three.runs}
    assert sizes == {run: (20, 20, len(log.read_bytes()))}
    assert {e.uuid: e.stdout_sha256 for e in one.runs}[quiet] is None

    staging = staging_store(tmp_path / "gateway")
    try:
        report = import_bundles([three.path, two.path, one.path], store=staging,
                                client=client)
        assert report.ok, report.to_json()
        assert on_server(client, run) == log.read_bytes()
        staged = log_of(staging, run)
        assert staged.read_bytes() == log.read_bytes()  # the older bundles did not shorten it
        import_bundles([one.path], store=staging, client=client)  # again: nothing changes
        assert on_server(client, run) == log.read_bytes()
    finally:
        staging.close()
    source.close()


def test_a_bundle_naming_a_log_it_does_not_hold_is_refused(tmp_path: Path):
    source = Store(tmp_path / "node")
    run = make_run(source, "r", n_metrics=3)
    log_of(source, run).write_bytes(b"hello\n")
    bundle = export_bundle(source, tmp_path / "usb")
    source.close()
    assert bundle
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["runs"][0]["stdout_size"] = 999
    raw = json.dumps(manifest).encode()
    (bundle.path / "manifest.json").write_bytes(raw)
    import hashlib

    (bundle.path / "COMMIT").write_text(json.dumps(
        {"manifest_sha256": hashlib.sha256(raw).hexdigest()}))
    with pytest.raises(BundleCorruptError, match="stdout.log .* is not among the bundle's"):
        verify(bundle.path)
