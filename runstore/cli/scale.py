"""Growing past one server process: `runstore serve --workers N` and `runstore server
migrate` (SQLite + a blob directory -> PostgreSQL + a bucket). Parsing only; the copy itself is
runstore.server.migrate. See docs/SCALING.md."""

from __future__ import annotations

import os
from pathlib import Path

import click

from runstore.cli.base import main

_ENV_DATA = "RUNSTORE_SERVE_DATA"
_ENV_DB = "RUNSTORE_DATABASE_URL"
_ENV_BLOBS = "RUNSTORE_BLOBS"


def serve_workers(data_dir: Path, host: str, port: int, database_url: str | None,
                  log_level: str, blobs: str | None, workers: int) -> None:
    """N uvicorn worker processes on one port. They share nothing but the database and the
    blob store, so the database must be PostgreSQL (SQLite's in-process write lock would not
    span processes)."""
    import uvicorn

    if not database_url or database_url.startswith("sqlite"):
        raise click.ClickException(
            f"--workers {workers} needs a shared database, not SQLite. "
            "Try: --database postgresql://USER@HOST/DB (or --workers 1)")
    os.environ[_ENV_DATA] = str(data_dir)
    os.environ[_ENV_DB] = database_url
    if blobs:
        os.environ[_ENV_BLOBS] = blobs
    else:
        os.environ.pop(_ENV_BLOBS, None)
    app_from_env()  # fail here, once, with a clear message (bad URL, bad --blobs)
    click.echo(f"runstore server on http://{host}:{port} ({workers} workers)", err=True)
    uvicorn.run("runstore.cli.scale:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, timeout_keep_alive=30)


def app_from_env():
    """The app of one worker process, configured through the environment by serve_workers."""
    from runstore.cli.server import _checked_app, _open_database
    from runstore.server.app import create_app

    data = Path(os.environ[_ENV_DATA])
    database = _open_database(os.environ[_ENV_DB], data)
    return _checked_app(create_app, data, database, os.environ.get(_ENV_BLOBS))


@main.group("server")
def server_group() -> None:
    """Server administration beyond `serve` and `user`."""


@server_group.command("migrate")
@click.option("--from-data", "from_data", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The old server's data directory (server.db + blobs/).")
@click.option("--from-database", "from_database", default=None, metavar="URL",
              help="The old server's database, if it was not <from-data>/server.db.")
@click.option("--to-database", "to_database", required=True, metavar="URL",
              help="The new, empty database, e.g. postgresql://USER@HOST/runstore.")
@click.option("--to-blobs", "to_blobs", required=True, metavar="LOCATION",
              help="The new blob store: s3://BUCKET/PREFIX (AWS_* variables) or a directory.")
def migrate(from_data: Path, from_database: str | None, to_database: str,
            to_blobs: str) -> None:
    """Copy a server's database and blobs to a new database and blob store (stop the old
    server first). Every table row keeps its id; every blob is re-verified by its sha256."""
    from runstore.server.errors import Invalid
    from runstore.server.migrate import MigrationError, migrate_server

    try:
        figures = migrate_server(from_data, from_database, to_database, to_blobs,
                                 progress=lambda msg: click.echo(msg, err=True))
    except (MigrationError, Invalid) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(" ".join(f"{k}={v}" for k, v in figures.items()))
