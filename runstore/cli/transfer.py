"""`runstore import PATH`: bring runs from elsewhere into the local store.

PATH decides what it is: a bundle (a directory holding manifest.json, made by `runstore
export`) or t9k `.em` directories (runstore.emimport). Parsing and printing only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from runstore.cli.base import main


@main.command("import")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON.")
def import_(paths: tuple[Path, ...], as_json: bool) -> None:
    """Import bundles, or t9k .em directories (a whole .em/, or run/artifact directories)."""
    for path in paths:
        if (path / "manifest.json").is_file():
            raise click.ClickException(
                f"{path} is a runstore bundle; importing bundles is not in this build yet. "
                "Try: a runstore version with `runstore export`")
    _import_em(paths, as_json)


def _import_em(paths: tuple[Path, ...], as_json: bool) -> None:
    from runstore.emimport import ImportError_, ImportReport, import_path

    report = ImportReport()
    try:
        for path in paths:
            report.merge(import_path(path))
    except ImportError_ as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    click.echo(
        f"imported {len(report.imported_runs)} run(s) and {len(report.imported_artifacts)} "
        f"artifact(s); already in the store: {len(report.already_runs)} run(s), "
        f"{len(report.already_artifacts)} artifact(s); {len(report.problems)} problem(s)")
