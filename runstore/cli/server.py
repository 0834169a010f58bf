"""`runstore serve` and `runstore user ...`: running a server. Parsing only; the work is in
runstore.server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from runstore.cli.base import main, user_errors


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("runstore-server", appauthor=False))


data_option = click.option(
    "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Server data directory (database + blobs). Default: the user data dir.")

database_option = click.option(
    "--database", "--database-url", "database_url", envvar="RUNSTORE_DATABASE_URL",
    default=None, metavar="URL",
    help="SQLAlchemy URL of the database instead of <data>/server.db, e.g. "
         "postgresql+psycopg://user@host:5432/runstore (env RUNSTORE_DATABASE_URL). "
         "Blobs stay in --data.")


def _open_database(url: str | None, data_dir: Path | None):
    """The server's Database: the URL's, or SQLite in the data dir."""
    try:
        from runstore.server.db import Database
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise click.ClickException(
            f"the server needs its extra dependencies ({exc.name}). "
            "Try: pip install 'runstore[server]'") from exc
    if url is None:
        data_dir = data_dir or _default_data_dir()
        data_dir.mkdir(parents=True, exist_ok=True)
        return Database.for_data_dir(data_dir)
    try:
        return Database(url)
    except ImportError as exc:
        raise click.ClickException(
            f"the database driver is not installed ({exc.name}). "
            "Try: pip install 'runstore[postgres]'") from exc
    except Exception as exc:
        from sqlalchemy.exc import ArgumentError, OperationalError

        if isinstance(exc, (ArgumentError, OperationalError)):
            raise click.ClickException(f"cannot open the database: {exc}") from exc
        raise


def _database(data_dir: Path | None, url: str | None = None):
    return _open_database(url, data_dir)


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
    uvicorn.run("runstore.cli.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, timeout_keep_alive=30)


def app_from_env():
    """The app of one worker process, configured through the environment by serve_workers."""
    from runstore.server.app import create_app

    data = Path(os.environ[_ENV_DATA])
    database = _open_database(os.environ[_ENV_DB], data)
    return _checked_app(create_app, data, database, os.environ.get(_ENV_BLOBS))


@main.command()
@data_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8750, show_default=True, type=int, help="Port to bind.")
@database_option
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--blobs", "blobs", envvar="RUNSTORE_BLOBS", default=None, metavar="LOCATION",
              help="Where blobs live: a directory (default: --data) or s3://BUCKET/PREFIX "
                   "(AWS_* environment variables; env RUNSTORE_BLOBS). See docs/SCALING.md.")
@click.option("--workers", envvar="RUNSTORE_WORKERS", default=1, show_default=True,
              type=click.IntRange(1, 256),
              help="Server processes on this port (needs --database postgresql://...; "
                   "env RUNSTORE_WORKERS).")
def serve(data_dir: Path | None, host: str, port: int, database_url: str | None,
          log_level: str, blobs: str | None, workers: int) -> None:
    """Run the runstore server (FastAPI on uvicorn)."""
    if workers > 1:
        serve_workers(data_dir or _default_data_dir(), host, port, database_url, log_level,
                      blobs, workers)
        return
    try:
        import uvicorn

        from runstore.server.app import create_app
    except ImportError as exc:  # pragma: no cover
        raise click.ClickException(
            f"the server needs its extra dependencies ({exc.name}). "
            "Try: pip install 'runstore[server]'") from exc
    from runstore.server.db import display_url

    data = data_dir or _default_data_dir()
    database = _open_database(database_url, data) if database_url else None
    app = _checked_app(create_app, data, database, blobs)
    where = f"data: {data}" + (f", database: {display_url(database_url)}" if database_url else "")
    where += f", blobs: {app.state.blobs.backend.description}"
    click.echo(f"runstore server on http://{host}:{port} ({where})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30)


def _checked_app(create_app, data: Path, database, blobs: str | None):
    """create_app, with a bad --blobs value as a one-line error."""
    from runstore.server.errors import Invalid

    try:
        return create_app(data, database=database, blobs=blobs)
    except Invalid as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def user() -> None:
    """Manage the server's users and API tokens."""


@user.command("add")
@click.argument("name")
@data_option
@database_option
@user_errors
def user_add(name: str, data_dir: Path | None, database_url: str | None) -> None:
    """Create a user and print its API token (shown only this once)."""
    from runstore.server import auth

    click.echo(auth.add_user(_database(data_dir, database_url), name))


@user.command("token")
@click.argument("name")
@click.option("--t9k", "t9k_key", is_flag=True,
              help="A t9k API key (a UUID) for unmodified t9k clients (see docs/T9K.md).")
@data_option
@database_option
@user_errors
def user_token(name: str, t9k_key: bool, data_dir: Path | None, database_url: str | None) -> None:
    """Print a new additional API token (or t9k API key) for an existing user."""
    from runstore.server import auth

    new = auth.new_t9k_key if t9k_key else auth.new_token
    click.echo(new(_database(data_dir, database_url), name))


@user.command("list")
@data_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def user_list(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """List users and their token ids."""
    from runstore.server import auth

    users = auth.list_users(_database(data_dir, database_url))
    if as_json:
        click.echo(json.dumps(users, indent=2))
        return
    for u in users:
        active = [t["id"] for t in u["tokens"] if not t["revoked"]]
        revoked = [t["id"] for t in u["tokens"] if t["revoked"]]
        click.echo(f"{u['name']}\tactive: {','.join(active) or '-'}\t"
                   f"revoked: {','.join(revoked) or '-'}")


@user.command("revoke")
@click.argument("name")
@click.option("--token-id", default=None, help="Revoke only this token (see `user list`).")
@data_option
@database_option
@user_errors
def user_revoke(name: str, token_id: str | None, data_dir: Path | None,
                database_url: str | None) -> None:
    """Revoke all tokens of a user (or one with --token-id)."""
    from runstore.server import auth

    n = auth.revoke(_database(data_dir, database_url), name, token_id)
    if token_id is not None and n == 0:
        raise click.ClickException(f"user {name!r} has no active token {token_id!r}")
    click.echo(f"revoked {n} token(s) of {name}")
