"""`runstore login`, `logout`, `upload`: talking to a server. Parsing only; the work is in
runstore.remote, whose errors become one-line click errors."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from runstore.cli.base import main, user_errors
from runstore.rules import CONFLICT_STRATEGIES

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # click's own annotations import it from here

PROGRESS_MIN_UNITS = 1_000_000  # show a bar when an upload moves more than this many units


@main.command()
@click.option("--host", required=True, help="Server URL, e.g. http://127.0.0.1:8750")
@click.option("--token", required=True, help="API token from `runstore user add`.")
@click.option("--timeout", type=float, default=None, help="Request timeout in seconds.")
@user_errors
def login(host: str, token: str, timeout: float | None) -> None:
    """Check a server token and store it (credentials.toml, mode 0600)."""
    from runstore import remote

    remote.login(host, token, timeout)
    click.echo(f"logged in to {host}")


@main.command()
def logout() -> None:
    """Forget the stored server credentials."""
    from runstore import remote

    remote.logout()
    click.echo("logged out")


class _Bar:
    """A click progress bar that appears only for large uploads."""

    def __init__(self) -> None:
        self.bar: ProgressBar[int] | None = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < PROGRESS_MIN_UNITS:
                return
            self.bar = click.progressbar(length=total, label="uploading",
                                         file=sys.stderr)
            self.bar.__enter__()
        self.bar.length = max(self.bar.length or 0, total)
        if done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.shown = None, 0


@main.command()
@click.argument("path")
@click.option("-f", "--folder", default="default", show_default=True,
              help="Remote folder; without a leading '/' it is under /<user>/.")
@click.option("-m", "--make-folder", is_flag=True, help="Create the folder (with parents).")
@click.option("-c", "--conflict-strategy", default="new", show_default=True,
              type=click.Choice(CONFLICT_STRATEGIES),
              help="When the folder already holds that name.")
@user_errors
def upload(path: str, folder: str, make_folder: bool, conflict_strategy: str) -> None:
    """Upload a run or artifact (a local dir, a parent dir of several, or a name)."""
    from runstore import remote

    bar = _Bar()
    try:
        results = remote.upload(path, folder, make_folder, conflict_strategy, progress=bar)
    finally:
        bar.close()
    for r in results:
        note = "" if r.complete else (
            " (not final: the run is running, or changed while it went up; "
            "it goes up again when it ends, or upload it again)")
        click.echo(f"{r.kind} {r.outcome}: {r.remote_path}{note}")
