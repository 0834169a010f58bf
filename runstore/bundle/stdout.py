"""A run's stdout.log across the air gap.

Export copies each carried run's stdout.log (its bytes at that moment, hashed while copied)
into the bundle as a blob (``blobs/ab/<sha>``: an older importer verifies and ignores it) and
names it in the run's manifest entry. Import places it in the importing store's run directory,
where upload_run finds it like the log of any run (runstore/remote/runfiles.py). Bundles may
arrive in any order, so as on the server the longer copy wins: stdout.log only ever grows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid as uuidlib
from pathlib import Path

from runstore.bundle.format import Manifest, RunEntry
from runstore.store import Store

STDOUT = "stdout.log"
_READ = 1 << 20


def stdout_size(local_dir: str) -> int:
    """The size of a run's stdout.log (0 if it has none): part of what makes a run worth
    carrying again (export._state), so a log that grew goes out in the next bundle."""
    try:
        return os.stat(Path(local_dir) / STDOUT).st_size
    except OSError:
        return 0


def _copy_hashed(source: Path, partial: Path) -> tuple[str, int] | None:
    """Copy the file's bytes now into the bundle under their sha256; None if it has none."""
    try:
        src = source.open("rb")
    except OSError:
        return None
    with src:
        left = os.fstat(src.fileno()).st_size
        if left == 0:
            return None
        digest = hashlib.sha256()
        size = 0
        tmp = partial / f".stdout-{uuidlib.uuid4().hex}"
        with tmp.open("wb") as out:
            while left > 0 and (block := src.read(min(_READ, left))):
                digest.update(block)
                out.write(block)
                size += len(block)
                left -= len(block)
            out.flush()
            os.fsync(out.fileno())  # the export fsyncs the directories before COMMIT
    sha = digest.hexdigest()
    target = partial / "blobs" / sha[:2] / sha
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return sha, size


def carry(store: Store, partial: Path, entries: list[RunEntry]
          ) -> tuple[list[RunEntry], dict[str, tuple[str, int]]]:
    """Each run's stdout.log into the bundle: the entries naming it, and the files to list
    (bundle path -> (sha256, size))."""
    out: list[RunEntry] = []
    files: dict[str, tuple[str, int]] = {}
    for entry in entries:
        local = store.read("SELECT local_dir FROM runs WHERE uuid = ?", (entry.uuid,))[0][0]
        got = _copy_hashed(Path(local) / STDOUT, partial)
        if got is None:
            out.append(entry)
            continue
        sha, size = got
        files[f"blobs/{sha[:2]}/{sha}"] = (sha, size)
        out.append(dataclasses.replace(entry, stdout_sha256=sha, stdout_size=size))
    return out, files


def place(store: Store, bundle: Path, manifest: Manifest) -> None:
    """Each carried stdout.log into its run's directory in ``store`` (after the merge),
    unless the directory holds as long a copy already. Written to a temporary name, fsynced,
    then renamed: a reader never sees half of it. Repeating an import repeats nothing."""
    for entry in manifest.runs:
        sha = entry.stdout_sha256
        if sha is None:
            continue
        rows = store.read("SELECT local_dir FROM runs WHERE uuid = ?", (entry.uuid,))
        if not rows:
            continue
        target = Path(rows[0][0]) / STDOUT
        if stdout_size(str(target.parent)) >= entry.stdout_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{STDOUT}.{uuidlib.uuid4().hex}.tmp")
        shutil.copyfile(bundle / "blobs" / sha[:2] / sha, tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
