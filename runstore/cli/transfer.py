"""`runstore export` and `runstore import`: runs across an air gap (docs/AIRGAP.md).

Parsing and rendering only; the work is in runstore.bundle. `import` dispatches on what each
PATH is: a bundle (or a directory of bundles) goes to runstore.bundle; anything else is a t9k
`.em` directory (a whole .em/, a run or an artifact directory) for runstore.emimport.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from runstore.cli.base import main
from runstore.errors import RunstoreError


@main.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("runs", nargs=-1)
@click.option("--since-last", "mode", flag_value="since-last", default=True,
              help="What changed since the last export from this store (the default).")
@click.option("--all", "mode", flag_value="all", help="Every run, from its first row.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def export_cmd(directory: Path, runs: tuple[str, ...], mode: str, as_json: bool) -> None:
    """Write a bundle of runs into DIRECTORY, to carry across an air gap."""
    from runstore.api import default_store
    from runstore.bundle import export_bundle

    if runs and mode == "all":
        raise click.UsageError("give RUN names or --all, not both. Try: runstore export DIR "
                               "RUN... (those runs, whole)")
    try:
        result = export_bundle(default_store(), directory, mode="runs" if runs else mode,
                               runs=runs)
    except RunstoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if result is None:
        if as_json:
            click.echo(json.dumps({"bundle": None, "reason": "nothing new since the last "
                                   "export"}))
        else:
            click.echo("nothing new since the last export; no bundle written")
        return
    m = result.manifest
    if as_json:
        click.echo(json.dumps({
            "bundle": str(result.path), "bundle_id": m.bundle_id,
            "source_store": m.source_store, "sequence": m.sequence,
            "runs": [vars(r) for r in result.runs], "metric_rows": result.metric_rows,
            "blobs": result.blobs, "bytes": result.bytes}))
        return
    click.echo(f"bundle {m.sequence} of store {m.source_store[:12]}: {result.path}")
    for r in result.runs:
        click.echo(f"  {r.alternative_name}  {r.status}  rows {r.rows_from}-{r.rows_to}")
    click.echo(f"{len(result.runs)} run(s), {result.metric_rows} metric row(s), "
               f"{result.blobs} blob(s), {result.bytes} bytes")


@main.command("import")
@click.argument("paths", nargs=-1, required=True)
@click.option("--into-store", is_flag=True,
              help="Bundles: merge into the local store; upload nothing (no server needed). "
                   "t9k .em directories always go into the local store.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def import_cmd(paths: tuple[str, ...], into_store: bool, as_json: bool) -> None:
    """Import bundles (upload their runs), or t9k `.em` directories."""
    from runstore.bundle import find_bundles

    bundles: list[Path] = []
    em_dirs: list[Path] = []
    for path in paths:
        where = Path(path).expanduser()
        if not where.exists():
            raise click.ClickException(f"{path!r} does not exist. Try: the path of a bundle "
                                       "directory (or of the directory holding bundles), or of "
                                       "a t9k .em directory.")
        found = find_bundles(where)
        if found:
            bundles.extend(found)
        elif where.is_dir():
            em_dirs.append(where)
        else:
            raise click.ClickException(
                f"{path!r} is neither a runstore bundle nor a t9k .em directory. Try: a "
                "directory written by `runstore export`, or a .em, run or artifact directory.")
    if bundles and em_dirs:
        raise click.UsageError(
            f"{str(em_dirs[0])!r} is a t9k .em directory and {str(bundles[0])!r} a bundle: "
            "give one kind per call. Try: two `runstore import` calls.")
    if em_dirs:
        _import_em(tuple(em_dirs), as_json)
    else:
        _import_bundles(bundles, into_store, as_json)


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


def _import_bundles(bundles: list[Path], into_store: bool, as_json: bool) -> None:
    from runstore.api import default_store
    from runstore.bundle import import_bundles, staging_store

    client = None
    try:
        if into_store:
            store = default_store()
        else:
            from runstore.remote import Client

            client = Client.from_config()
            store = staging_store()
        report = import_bundles(bundles, store=store, client=client)
    except RunstoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if client is not None:
            client.close()
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        for b in report.bundles:
            if b.error:
                click.echo(f"refused {b.path}: {b.error}", err=True)
            else:
                what = "merged" if b.merged else "already imported"
                click.echo(f"bundle {b.sequence} of store {(b.source_store or '')[:12]}: "
                           f"{b.runs} run(s) {what}")
        for r in report.runs:
            if r.outcome == "held":
                click.echo(f"Run held: {r.alternative_name} {r.detail}")
            elif r.outcome == "failed":
                click.echo(f"Run failed: {r.alternative_name}: {r.detail}", err=True)
            elif r.outcome == "merged":
                click.echo(f"Run merged: {r.alternative_name}")
            else:
                note = "" if r.complete else " (not final: the run was still running)"
                click.echo(f"Run {r.outcome}: {r.remote_path}{note}")
        for gap in report.gaps:
            click.echo(f"gap: {gap}")
    if not report.ok:
        raise SystemExit(1)
