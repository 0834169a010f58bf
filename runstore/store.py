"""The local store: one SQLite database per machine, plus content-addressed blobs.

Layout of a store directory (``RUNSTORE_HOME`` or the user data dir)::

    runstore.db (+ -wal, -shm)   runs, metrics, artifacts, lineage, sync state
    blobs/ab/abcdef...           file contents, named by sha256
    runs/<alternative_name>/     per-run files (stdout.log)
    artifacts/<alternative_name>/

Connections are per process and per thread: a connection opened before ``fork()`` is never
used by the child (PyTorch DataLoader workers fork after the parent logged).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from runstore.errors import StoreError, StoreFullError
from runstore.schema import MIGRATIONS
from runstore.timeutil import iso_from_unix

DB_NAME = "runstore.db"
BUSY_TIMEOUT_MS = 30_000
# Filesystems on which SQLite's WAL (shared memory between processes) is unsafe.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb", "smb2", "smb3", "smbfs", "ceph",
     "fuse.sshfs", "beegfs", "fuse.glusterfs", "glusterfs", "afs", "9p", "panfs", "fuse.s3fs",
     "fuse.juicefs", "fuse.gcsfuse", "wekafs", "orangefs", "pvfs2"}
)


class NetworkFilesystemWarning(UserWarning):
    """The store sits on a network filesystem where SQLite locking is unreliable."""


def default_home() -> Path:
    """RUNSTORE_HOME if set, else the user data dir (~/.local/share/runstore on Linux)."""
    env = os.environ.get("RUNSTORE_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("runstore", appauthor=False))


def filesystem_type(path: Path, mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` per /proc/mounts (None if unknown)."""
    try:
        mounts = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_disk_full(exc: BaseException) -> bool:
    # SQLite reports ENOSPC as "database or disk is full", EFBIG (RLIMIT_FSIZE) as I/O error.
    text = str(exc).lower()
    return "full" in text or "disk i/o error" in text


class Store:
    """A store directory: the database, its blobs and per-run directories."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 check_filesystem: bool = True, mounts_file: str = "/proc/mounts") -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.db_path = self.home / DB_NAME
        self.blobs_dir = self.home / "blobs"
        self._local = threading.local()
        self._lock = threading.Lock()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            self.blobs_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store directory {str(self.home)!r}: {exc.strerror}. "
                "Try: set RUNSTORE_HOME to a writable node-local directory."
            ) from exc
        if check_filesystem:
            fstype = filesystem_type(self.home, mounts_file)
            if fstype in NETWORK_FILESYSTEMS:
                warnings.warn(
                    f"runstore: the store {str(self.home)!r} is on a network filesystem "
                    f"({fstype}); SQLite's WAL locking is unsafe there and the database can "
                    "be corrupted. Try: RUNSTORE_HOME=/local/scratch/$USER/runstore "
                    "(a node-local disk); syncd uploads the runs to the server from there.",
                    NetworkFilesystemWarning,
                    stacklevel=2,
                )
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.home)!r})"

    # -- connections ---------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened anew in a forked child."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            # A connection inherited through fork() is never touched (not even closed):
            # closing it could disturb the parent's locks.
            conn = self._open()
            local.conn, local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @staticmethod
    def _retry_locked(fn, deadline_s: float = 120.0):
        """Run fn, retrying 'database is locked' (which busy_timeout does not always cover)."""
        start = time.monotonic()
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() - start > deadline_s:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on error."""
        conn = self.connection()
        try:
            self._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
                self._retry_locked(lambda: conn.execute("COMMIT"))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if _is_disk_full(exc):
                raise StoreFullError(
                    f"the disk holding {str(self.db_path)!r} refused a write ({exc}: disk full "
                    "or a file-size limit); nothing of this transaction was written. "
                    "Try: free space there, or move RUNSTORE_HOME to a disk with room."
                ) from exc
            raise

    def read(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query, as sqlite3.Row."""
        conn = self.connection()
        cur = conn.execute(sql, params)
        cur.row_factory = sqlite3.Row  # type: ignore[assignment]
        return cur.fetchall()

    # -- schema --------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Apply pending migrations; safe when many processes open a new store at once."""
        conn = self.connection()
        if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
            return
        try:
            with self.write() as conn:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in _split_sql(script):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot prepare the database {str(self.db_path)!r}: {exc}. "
                "Try: check that the file is a runstore database and the disk is writable."
            ) from exc

    @property
    def schema_version(self) -> int:
        return int(self.connection().execute("PRAGMA user_version").fetchone()[0])

    # -- directories and blobs -----------------------------------------------------------
    def run_dir(self, alternative_name: str) -> Path:
        return self.home / "runs" / alternative_name

    def artifact_dir(self, alternative_name: str) -> Path:
        return self.home / "artifacts" / alternative_name

    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.blobs_dir / sha256[:2] / sha256

    def put_blob_file(self, source: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy a file into the blob store; returns (sha256, size). Identical files kept once.

        The copy is hashed while written to a temporary name, fsynced, then renamed, so a
        blob under its final name is always complete.
        """
        source = Path(source)
        tmp_dir = self.blobs_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.blob_path(sha)
            if final.exists():
                os.unlink(tmp_name)
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp_name, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return sha, size

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).exists()


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (triggers contain ';' inside BEGIN..END)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not current and (not line.strip() or line.strip().startswith("--")):
            continue
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        raise ValueError("incomplete statement at the end of a migration")
    return statements


def hostname() -> str:
    return socket.gethostname()


def process_start_id(pid: int) -> str | None:
    """An identity of a live process that survives pid reuse (Linux: start time in ticks)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces and ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start_id: str | None) -> bool:
    """True if the process that registered as (pid, start_id) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start_id is not None:
        current = process_start_id(pid)
        if current is not None and current != start_id:
            return False
    return True



# A run whose owner lives on another host (a store shared across hosts, which is unsupported
# but happens) is considered dead when it showed no sign of life for this long.
FOREIGN_HOST_STALE_S = 3600.0


def reap_dead_runs(store: Store, *, host: str | None = None,
                   now: float | None = None) -> list[str]:
    """Mark Running runs whose process is gone as Error, ending at their last sign of life.

    Returns the alternative names of the runs marked. Everything flushed before the death is
    kept; the trigger on runs makes them pending for sync.
    """

    host = host or hostname()
    now = time.time() if now is None else now
    rows = store.read(
        "SELECT id, alternative_name, hostname, pid, pid_start, heartbeat_at, start_timestamp "
        "FROM runs WHERE status = 'Running'")
    dead = []
    for row in rows:
        if row["pid"] is None:
            continue  # no process of this store's: a copy downloaded while it ran elsewhere
        if row["hostname"] == host:
            alive = row["pid"] is not None and process_alive(row["pid"], row["pid_start"])
        else:
            alive = row["heartbeat_at"] is not None and now - row["heartbeat_at"] < \
                FOREIGN_HOST_STALE_S
        if not alive:
            dead.append(row)
    marked = []
    for row in dead:
        end = (iso_from_unix(row["heartbeat_at"]) if row["heartbeat_at"] is not None
               else row["start_timestamp"])
        with store.write() as conn:
            # Re-check inside the write lock: the run may have finished meanwhile.
            cur = conn.execute(
                "UPDATE runs SET status = 'Error', end_timestamp = ? "
                "WHERE id = ? AND status = 'Running' AND pid IS ? AND pid_start IS ?",
                (end, row["id"], row["pid"], row["pid_start"]))
            if cur.rowcount:
                marked.append(row["alternative_name"])
    return marked
