"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, `postgres` on
127.0.0.1 and a free port, a fresh database per test, `pg_ctl stop -m immediate` at the end.

    from tests.pg_harness import PostgresProcess

    with PostgresProcess(tmp_dir) as pg:          # initdb + start; waits for pg_isready
        url = pg.create_database()                # 'postgresql+psycopg://runstore@127.0.0.1:<port>/db1'
        pg.url                                    # the URL of the default database
        pg.log_text()                             # what postgres printed

The binaries come from /usr/lib/postgresql/<version>/bin (Debian's `postgresql` package; the
highest version wins) or from PATH. initdb refuses to run as root, so as root every command runs
as the `postgres` system user (`runuser -u postgres --`) in a directory it owns; otherwise as
the current user. Authentication is `trust`, which is acceptable only because the server binds
127.0.0.1 alone (and its Unix socket lives in its private data directory). fsync is off: the
tests are about SQL semantics, not about surviving power loss.

If no PostgreSQL is installed, PostgresNotInstalled is raised (tests fail, they do not skip):
`make test` installs it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.server_harness import free_port

SUPERUSER = "runstore"
SYSTEM_USER = "postgres"  # the unprivileged account used when the tests run as root


class PostgresNotInstalled(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """The directory holding initdb, postgres, pg_ctl, pg_isready and createdb."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresNotInstalled(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH). "
        "Try: apt-get install -y postgresql  (make test does this when run as root)")


class PostgresProcess:
    """A private PostgreSQL cluster on 127.0.0.1 for the duration of a test session."""

    def __init__(self, tmp_dir: str | os.PathLike[str], port: int | None = None, *,
                 startup_timeout_s: float = 60.0, settings: dict[str, str] | None = None
                 ) -> None:
        self.bin_dir = find_bin_dir()
        # Server settings over the defaults below, e.g. {"synchronous_commit": "on"} for a
        # test that crashes PostgreSQL and expects every acknowledged commit back.
        self.settings = dict(settings or {})
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                import pwd

                pw = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresNotInstalled(
                    f"running as root needs the {SYSTEM_USER!r} system user to run initdb as "
                    "(Debian's postgresql package creates it)") from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            # pytest's tmp dirs are root-only (0700): the cluster lives in its own directory
            # under the system temp dir, owned by the postgres user.
            self.base = Path(tempfile.mkdtemp(prefix="runstore-pg-"))
            os.chown(self.base, self._uid, self._gid)
        else:
            self.base = Path(tmp_dir) / "postgres"
            self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)

    # -- commands --------------------------------------------------------------------------
    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", SYSTEM_USER, "--", *cmd] if self.as_root else cmd

    def _run(self, tool: str, *args: str, timeout_s: float = 60.0) -> str:
        done = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True,
                              timeout=timeout_s, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n"
                               f"{self.log_text()[-2000:]}")
        return done.stdout

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""

    # -- lifecycle -------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(SUPERUSER)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> PostgresProcess:
        if self.running():
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync", timeout_s=120)
        log = self.log_path.open("ab")
        if self.as_root:
            os.chown(self.log_path, self._uid, self._gid)
        try:
            self.proc = subprocess.Popen(
                self._cmd("postgres", "-D", str(self.data_dir), "-p", str(self.port),
                          "-c", f"listen_addresses={self.host}",
                          "-c", f"unix_socket_directories={self.data_dir}",
                          "-c", "fsync=off", "-c", "synchronous_commit=off",
                          "-c", "full_page_writes=off", "-c", "max_connections=200",
                          *[a for k, v in self.settings.items() for a in ("-c", f"{k}={v}")]),
                stdout=log, stderr=subprocess.STDOUT, cwd=self.base, start_new_session=True)
        finally:
            log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll pg_isready until the server accepts connections, with a deadline."""
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.02
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-4000:]}")
            ready = subprocess.run(
                self._cmd("pg_isready", "-q", "-h", self.host, "-p", str(self.port),
                          "-U", SUPERUSER, "-d", "postgres", "-t", "2"),
                capture_output=True, timeout=30, cwd=self.base)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres not ready after {self.startup_timeout_s}s:\n"
                                   f"{self.log_text()[-4000:]}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (a fresh, empty one); returns its URL."""
        name = name or f"db{next(self._names)}"
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url_for(name)

    def stop(self) -> None:
        """`pg_ctl stop -m immediate` (nothing here is worth a clean shutdown), then reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            subprocess.run(self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m",
                                     "immediate", "-w", "-t", "30"),
                           capture_output=True, timeout=60, cwd=self.base)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        """Stop, and remove the cluster directory when it is ours (outside pytest's tmp)."""
        self.stop()
        if self.as_root:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
