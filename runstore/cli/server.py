"""`runstore serve` and `runstore user ...`: running a server. Parsing only; the work is in
runstore.server."""

from __future__ import annotations

import json
from pathlib import Path

import click

from runstore.cli.base import main


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("runstore-server", appauthor=False))


data_option = click.option(
    "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Server data directory (database + blobs). Default: the user data dir.")


def _database(data_dir: Path | None):
    try:
        from runstore.server.db import Database
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise click.ClickException(
            f"the server needs its extra dependencies ({exc.name}). "
            "Try: pip install 'runstore[server]'") from exc
    data_dir = data_dir or _default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    return Database.for_data_dir(data_dir)


@main.command()
@data_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8750, show_default=True, type=int, help="Port to bind.")
@click.option("--database-url", default=None,
              help="SQLAlchemy URL of the database instead of <data>/server.db "
                   "(e.g. postgresql+psycopg://...).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(data_dir: Path | None, host: str, port: int, database_url: str | None,
          log_level: str) -> None:
    """Run the runstore server (FastAPI on uvicorn)."""
    try:
        import uvicorn

        from runstore.server.app import create_app
    except ImportError as exc:  # pragma: no cover
        raise click.ClickException(
            f"the server needs its extra dependencies ({exc.name}). "
            "Try: pip install 'runstore[server]'") from exc
    app = create_app(data_dir or _default_data_dir(), database_url)
    click.echo(f"runstore server on http://{host}:{port} (data: {data_dir or _default_data_dir()})",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30)


@main.group()
def user() -> None:
    """Manage the server's users and API tokens."""


@user.command("add")
@click.argument("name")
@data_option
def user_add(name: str, data_dir: Path | None) -> None:
    """Create a user and print its API token (shown only this once)."""
    from runstore.server import auth
    from runstore.server.paths import BadPath

    try:
        token = auth.add_user(_database(data_dir), name)
    except (BadPath, auth.UserExists) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)


@user.command("token")
@click.argument("name")
@data_option
def user_token(name: str, data_dir: Path | None) -> None:
    """Print a new additional API token for an existing user."""
    from runstore.server import auth

    try:
        click.echo(auth.new_token(_database(data_dir), name))
    except auth.NoSuchUser as exc:
        raise click.ClickException(str(exc)) from exc


@user.command("list")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def user_list(data_dir: Path | None, as_json: bool) -> None:
    """List users and their token ids."""
    from runstore.server import auth

    users = auth.list_users(_database(data_dir))
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
def user_revoke(name: str, token_id: str | None, data_dir: Path | None) -> None:
    """Revoke all tokens of a user (or one with --token-id)."""
    from runstore.server import auth

    try:
        n = auth.revoke(_database(data_dir), name, token_id)
    except auth.NoSuchUser as exc:
        raise click.ClickException(str(exc)) from exc
    if token_id is not None and n == 0:
        raise click.ClickException(f"user {name!r} has no active token {token_id!r}")
    click.echo(f"revoked {n} token(s) of {name}")
