"""`runstore server migrate`: SQLite + a blob directory -> PostgreSQL + a bucket. Parsing only;
the copy itself is runstore.server.migrate. (`serve --workers N` is in server.py.) See
docs/SCALING.md."""

from __future__ import annotations

from pathlib import Path

import click

from runstore.cli.base import main


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
