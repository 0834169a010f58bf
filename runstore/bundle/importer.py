"""Importing bundles: verify everything, merge into a store, upload through runstore.remote.

On a connected machine the bundle's runs are merged into a *staging store* (by default
``$RUNSTORE_HOME/imports``, an ordinary runstore store) and uploaded from there with
:func:`runstore.remote.upload_run`, the same code as ``runstore upload`` and syncd: the
server's exactly-once rests on run UUIDs, chunk offsets and finalize, and the staging store's
'synced' marks only save work. ``--into-store`` merges into the local store and uploads
nothing. One import at a time per store (a file lock), so two processes importing the same
bundle wait for each other; the second finds it merged and its runs synced.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstore.bundle import stdout
from runstore.bundle.export import _file_lock
from runstore.bundle.format import RECORDS, BundleError, Manifest, is_bundle, verify
from runstore.bundle.merge import check_records, copy_blobs, merge, readiness
from runstore.errors import RunstoreError, TransientRemoteError
from runstore.store import Store, default_home

STAGING_DIR = "imports"


@dataclass
class RunOutcome:
    uuid: str
    alternative_name: str
    outcome: str              # created|resumed|skipped|renamed|replaced|held|failed|merged
    remote_path: str | None = None
    complete: bool = False
    detail: str | None = None
    transient: bool = False   # failed for now (server away): the next import retries

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class BundleOutcome:
    path: str
    bundle_id: str | None = None
    source_store: str | None = None
    sequence: int | None = None
    merged: bool = False        # False: merged by an earlier import (or refused: see error)
    runs: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ImportReport:
    bundles: list[BundleOutcome] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(b.error for b in self.bundles) and \
            not any(r.outcome == "failed" for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "bundles": [b.to_json() for b in self.bundles],
                "runs": [r.to_json() for r in self.runs], "gaps": self.gaps}


def staging_store(home: str | os.PathLike[str] | None = None) -> Store:
    """The store that bundles are merged into before they go up to the server."""
    base = Path(home).expanduser() if home is not None else default_home()
    return Store(base / STAGING_DIR)


def find_bundles(path: Path) -> list[Path]:
    """The bundle at ``path``, or the bundles directly inside it (a drop directory)."""
    if is_bundle(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and is_bundle(p))
    return []


def gaps(store: Store) -> list[str]:
    """Sequence numbers missing per source store: bundles that never arrived (yet)."""
    out = []
    by_source: dict[str, set[int]] = {}
    for source, seq in store.read("SELECT source_store, sequence FROM bundle_imports"):
        by_source.setdefault(source, set()).add(seq)
    for source, seqs in sorted(by_source.items()):
        missing = sorted(set(range(1, max(seqs) + 1)) - seqs)
        ranges: list[list[int]] = []
        for n in missing:
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        for lo, hi in ranges:
            which = f"bundle {lo}" if lo == hi else f"bundles {lo}-{hi}"
            out.append(f"{which} from store {source[:12]} never arrived")
    return out


def merge_bundle(store: Store, bundle: Path) -> tuple[Manifest, bool]:
    """Verify every hash, then merge; (manifest, False) if it had been merged already."""
    manifest = verify(bundle)  # before anything is written
    try:
        check_records(bundle / RECORDS)
        copy_blobs(store, bundle, manifest)
        merged = merge(store, bundle, manifest)
        # after the merge (its runs exist now); again on every import of the bundle, so a
        # crash between the two is mended by importing it again
        stdout.place(store, bundle, manifest)
        return manifest, merged
    except sqlite3.DatabaseError as exc:  # hashes hold, yet not a records file we can read
        raise BundleError(
            f"{bundle / RECORDS} cannot be merged ({exc}); nothing of it was written. "
            "Try: export the bundle again with runstore (or check the tool that wrote it "
            "against docs/AIRGAP.md).") from exc
    except OSError as exc:
        raise BundleError(
            f"importing {bundle} into {str(store.home)!r} failed ({exc.strerror or exc}); "
            "no row of it was written. Try: free space there, then import again.") from exc


def import_bundles(paths: Iterable[Path], *, store: Store, client: Any | None = None,
                   upload: Callable[..., Any] | None = None) -> ImportReport:
    """Import bundles into ``store``; with a client, upload every run that is ready.

    A bundle that fails verification is refused (named in the report) and the others go on.
    ``upload`` defaults to runstore.remote.upload_run (a parameter, so tests can wrap it).
    """
    report = ImportReport()
    bundles = [b for p in paths for b in (find_bundles(Path(p)) or [Path(p)])]
    with _file_lock(store.home / "bundle-import.lock"):
        touched: list[str] = []
        for bundle in bundles:
            outcome = BundleOutcome(str(bundle))
            report.bundles.append(outcome)
            try:
                manifest, outcome.merged = merge_bundle(store, bundle)
            except RunstoreError as exc:
                outcome.error = str(exc)
                continue
            outcome.bundle_id, outcome.source_store = manifest.bundle_id, manifest.source_store
            outcome.sequence, outcome.runs = manifest.sequence, len(manifest.runs)
            touched.extend(r.uuid for r in manifest.runs)
        if client is None:
            for uuid in dict.fromkeys(touched):
                report.runs.append(_outcome(store, uuid, "merged"))
        else:
            report.runs.extend(upload_ready(store, client, upload=upload))
        report.gaps = gaps(store)
    return report


def _outcome(store: Store, uuid: str, outcome: str, **kw: Any) -> RunOutcome:
    alt = store.read("SELECT alternative_name FROM runs WHERE uuid = ?", (uuid,))[0][0]
    return RunOutcome(uuid, alt, outcome, **kw)


def upload_ready(store: Store, client: Any, *, upload: Callable[..., Any] | None = None
                 ) -> list[RunOutcome]:
    """Upload every run of the store not yet synced whose rows and blobs are all here.

    A run the server refused for good (a name conflict under 'error', a diverged copy) is
    marked failed and left alone until a newer bundle of it arrives (the merge makes it
    pending again), so one bad run does not fail every later import.
    """
    from runstore import syncstate
    from runstore.remote import upload_run

    upload = upload or upload_run
    out = []
    for (uuid,) in store.read(
            "SELECT r.uuid FROM runs r LEFT JOIN sync_state s ON s.run_id = r.id "
            "WHERE s.state IS NULL OR s.state IN ('pending', 'uploading') ORDER BY r.id"):
        reason = readiness(store, uuid)
        if reason is not None:
            out.append(_outcome(store, uuid, "held", detail=reason))
            continue
        try:
            result = upload(store, uuid, client)
        except TransientRemoteError as exc:
            out.append(_outcome(store, uuid, "failed", detail=str(exc), transient=True))
            continue
        except RunstoreError as exc:
            syncstate.mark_failed(store, uuid, str(exc))
            out.append(_outcome(store, uuid, "failed", detail=str(exc)))
            continue
        out.append(_outcome(store, uuid, result.outcome, remote_path=result.remote_path,
                            complete=result.complete))
    return out
