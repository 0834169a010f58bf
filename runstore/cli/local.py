"""`runstore ls`, `describe` and `sql`: the local store (and `ls --remote`: a server folder).

The work is done in runstore.inspect and runstore.query; this module parses arguments,
renders the results and turns RunstoreError into `Error: ...` (exit 1).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import click

from runstore import inspect as runinfo
from runstore import query
from runstore.cli.base import main
from runstore.cli.base import user_errors as _user_errors
from runstore.lifecycle import default_store


def _store():
    """The local store, with runs whose process died marked Error (as the SDK does)."""
    return default_store()


# -- rendering -------------------------------------------------------------------------------
def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                 right: Sequence[bool] = (), indent: str = "", rule: bool = False) -> list[str]:
    """Columns aligned with two spaces; ``right`` marks right-aligned columns."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    right = list(right) or [False] * len(header)

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w)
                 for c, w, r in zip(cells, widths, right, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    lines = [line(header)]
    if rule:
        lines.append(line(["-" * w for w in widths]))
    lines.extend(line(row) for row in rows)
    return lines


def _number(value: Any) -> str:
    """A metric number for people: 6 significant digits, nan/inf spelled out."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _sql_text(value: Any) -> str:
    """A SQL result value in the table format: exact numbers, NULL spelled out."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return repr(value)
    return value


# -- ls --------------------------------------------------------------------------------------
@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array.")
@click.option("--status", type=click.Choice(runinfo.STATUSES, case_sensitive=False),
              help="Only runs with this status.")
@click.option("--label", "labels", multiple=True, metavar="LABEL",
              help="Only runs with this label (repeat: runs with all of them).")
@click.option("--name", "name_pattern", metavar="PATTERN",
              help="Only runs whose name or alternative name matches this glob, e.g. 'cnn*'.")
@click.option("-d", "--detail", is_flag=True,
              help="Also show the alternative name, labels and sync state.")
@click.option("--remote", "remote_folder", is_flag=False, flag_value="", default=None,
              metavar="[FOLDER]",
              help="List the runs in a folder on the server instead (no FOLDER: all your "
                   "runs there).")
@_user_errors
def ls_command(as_json: bool, status: str | None, labels: tuple[str, ...],
               name_pattern: str | None, detail: bool, remote_folder: str | None) -> None:
    """List runs (t9k `em ls`): NAME, STATUS, STARTED, DURATION."""
    if remote_folder is not None:
        try:
            from runstore.remote import list_remote
        except ModuleNotFoundError as exc:
            if exc.name != "runstore.remote":
                raise
            raise click.ClickException(
                "this runstore has no server client (runstore.remote); Try: upgrade "
                "runstore") from exc
        entries = list_remote(remote_folder or None, client=None)
        if as_json:
            entries = [e for e in entries if _remote_matches(e, status, labels, name_pattern)]
            click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
            return
        runs = runinfo.filter_runs([runinfo.RunSummary.from_remote(e) for e in entries],
                                   status=status, labels=labels, name=name_pattern)
    else:
        runs = runinfo.list_runs(_store(), status=status, labels=labels, name=name_pattern)
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in runs], indent=2, ensure_ascii=False))
            return
    if not runs:
        click.echo("No runs match." if (status or labels or name_pattern) else "No runs.",
                   err=True)
        return
    header = ["NAME", "STATUS", "STARTED", "DURATION"]
    if detail:
        header += ["ALTERNATIVE NAME", "LABELS", "PATH" if remote_folder is not None else "SYNC"]
    rows = []
    for r in runs:
        row = [r.name, r.status, runinfo.format_started(r.start_timestamp),
               runinfo.format_duration(r.duration_s)]
        if detail:
            last = r.remote_path if remote_folder is not None else r.sync_state
            row += [r.alternative_name, ",".join(r.labels), last or "-"]
        rows.append(row)
    for line in render_table(header, rows):
        click.echo(line)


def _remote_matches(entry: dict[str, Any], status: str | None, labels: Sequence[str],
                    name_pattern: str | None) -> bool:
    return bool(runinfo.filter_runs([runinfo.RunSummary.from_remote(entry)], status=status,
                                    labels=labels, name=name_pattern))


# -- describe --------------------------------------------------------------------------------
@main.command("describe")
@click.argument("run")
@click.option("-d", "--detail", is_flag=True,
              help="Also show hyperparameters, metrics, platform, git, lineage, artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--max-metric-rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows per metrics table with -d (first and last halves; 0: all).")
@_user_errors
def describe_command(run: str, detail: bool, as_json: bool, max_metric_rows: int) -> None:
    """Describe a RUN (t9k `em describe`): a name (its latest run), alternative name or UUID.

    A unique UUID prefix works too. NaN metric values print as nan (null in --json).
    """
    info = runinfo.describe_run(_store(), run, detail=detail)
    if as_json:
        click.echo(json.dumps(_json_safe(info), indent=2, ensure_ascii=False))
        return
    for line in describe_lines(info, max_metric_rows=max_metric_rows):
        click.echo(line)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _pairs(pairs: Sequence[tuple[str, Any]], indent: str = "  ") -> list[str]:
    if not pairs:
        return [f"{indent}(none)"]
    rows = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in pairs]
    return render_table(["", ""], rows, indent=indent)[1:]


def describe_lines(info: dict[str, Any], *, max_metric_rows: int = 20) -> list[str]:
    """The text of `runstore describe` for a describe_run() result."""
    target = info["target"]
    sync = info["sync"]
    if sync is None:
        sync_text = "not queued (the run has not finished)"
    else:
        sync_text = f"{sync['state']} ({sync['attempts']} attempts)"
        if sync["remote_path"]:
            sync_text += f", remote path {sync['remote_path']}"
        if sync["last_error"]:
            sync_text += f", last error: {sync['last_error']}"
    fields = [
        ("Name", info["name"]), ("Alternative name", info["alternative_name"]),
        ("UUID", info["uuid"]), ("Status", info["status"]),
        ("Started", info["start_timestamp"]), ("Ended", info["end_timestamp"] or "-"),
        ("Duration", runinfo.format_duration(info["duration_s"])),
        ("Labels", ", ".join(info["labels"]) or "-"),
        ("Description", info["description"] or "-"),
        ("Local", info["local_dir"]), ("Host", info["hostname"]),
        ("Upload target", f"folder {target['folder']}, conflict strategy "
                          f"{target['conflict_strategy']}"
                          + (", make folder" if target["make_folder"] else "")
                          + (", auto upload" if target["auto_upload"] else "")),
        ("Sync", sync_text),
    ]
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{k + ':':<{width}}  {v}".rstrip() for k, v in fields]
    lines.append("Metrics:")
    if info["metric_summary"]:
        rows = [[m["type"], m["key"], str(m["n"]), _number(m["last_value"]),
                 _number(m["min_value"]), _number(m["max_value"]), str(m["nan_count"]),
                 str(m["last_step"])] for m in info["metric_summary"]]
        lines += render_table(["TYPE", "KEY", "POINTS", "LAST", "MIN", "MAX", "NAN", "LAST STEP"],
                              rows, indent="  ")
    else:
        lines.append("  (none)")
    if "hparams" not in info:
        return lines
    lines.append("Hyperparameters:")
    lines += _pairs(runinfo.flatten(info["hparams"]))
    for type_, records in info["metrics"].items():
        columns, table = runinfo.metric_table(records)
        lines.append(f"Metrics ({type_}, {len(records)} record"
                     f"{'' if len(records) == 1 else 's'}):")
        header = [c.upper() if i < 2 else c for i, c in enumerate(columns)]
        text = render_table(header, [[_number(v) for v in row] for row in table], indent="  ")
        if max_metric_rows and len(table) > max_metric_rows:
            head = (max_metric_rows + 1) // 2
            tail = max_metric_rows - head
            omitted = len(table) - max_metric_rows
            text = [*text[:1 + head], f"  ... {omitted} more (--max-metric-rows 0 shows all)",
                    *text[len(text) - tail:]]
        lines += text
    lines.append("Platform:")
    lines += _pairs(runinfo.flatten(info["platform"]))
    lines.append("Git:")
    lines += _pairs(runinfo.flatten(info["git"]))
    lines.append("Associations:")
    entries = [(direction, e) for direction in ("input", "output")
               for e in info["associations"][direction]]
    if entries:
        lines += render_table(
            ["", "", "", ""],
            [[d, e["kind"], e.get("name") or e.get("id", ""), e.get("localDir") or
              e.get("path", "")] for d, e in entries], indent="  ")[1:]
    else:
        lines.append("  (none)")
    lines.append("Artifacts:")
    if not info["artifacts"]:
        lines.append("  (none)")
    for art in info["artifacts"]:
        lines.append(f"  {art['alternative_name']} ({', '.join(art['directions'])}, "
                     f"{len(art['objects'])} objects)")
        if art["objects"]:
            lines += render_table(
                ["PATH", "KIND", "SIZE", "SHA256 / URI"],
                [[o["path"], o["kind"], "" if o["size_bytes"] is None else str(o["size_bytes"]),
                  o["sha256"] or o["uri"] or ""] for o in art["objects"]],
                right=[False, False, True, False], indent="    ")
    lines.append("Remote history:")
    if info["remote"]:
        lines += render_table(["", "", "", "", ""], [
            [h["action"], h["timestamp"], h["host"], h["path"], h["id"] or ""]
            for h in info["remote"]], indent="  ")[1:]
    else:
        lines.append("  (none)")
    return lines


# -- sql -------------------------------------------------------------------------------------
@main.command("sql")
@click.argument("sql", required=False)
@click.option("--table", "output", flag_value="table", default=True,
              help="Aligned columns (the default); NULL (also: NaN metric values) shows NULL.")
@click.option("--csv", "output", flag_value="csv", help="CSV with a header row.")
@click.option("--json", "output", flag_value="json",
              help="A JSON array of objects; NULL/NaN and +-inf are null.")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="A named parameter for :NAME in the SQL (repeatable).")
@click.option("--max-rows", type=click.IntRange(min=1), default=query.DEFAULT_MAX_ROWS,
              show_default=True, help="Cut the result after this many rows.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              default=query.DEFAULT_TIME_LIMIT_S, show_default=True,
              help="Stop the query after this many seconds.")
@click.option("--max-value-bytes", type=click.IntRange(min=1000),
              default=query.DEFAULT_MAX_VALUE_BYTES, show_default=True,
              help="Refuse a single string or blob larger than this.")
@click.option("--schema", is_flag=True, help="List the tables and views with their columns.")
@_user_errors
def sql_command(sql: str | None, output: str, params: tuple[tuple[str, str], ...],
                max_rows: int, timeout_s: float, max_value_bytes: int, schema: bool) -> None:
    """Run one read-only SQL statement over the local store.

    The connection is read-only and sandboxed: SELECT (WITH, EXPLAIN) and a few reading
    PRAGMAs only; no writes, ATTACH or load_extension(); a time limit and a row cap. NaN metric
    values are stored as NULL (see the is_nan column of metric_values). docs/SQL.md describes
    the schema.
    """
    store = _store()
    if schema:
        if sql is not None:
            raise click.UsageError("give either SQL or --schema, not both")
        for rel in query.list_relations(store):
            click.echo(f"{rel.name} ({rel.kind})")
            for line in render_table(["", ""], [[n, t] for n, t in rel.columns],
                                     indent="  ")[1:]:
                click.echo(line)
        return
    if sql is None:
        raise click.UsageError("missing SQL: runstore sql \"SELECT ...\" (or --schema)")
    result = query.run_query(store, sql, dict(params) if params else (), max_rows=max_rows,
                             time_limit_s=timeout_s, max_value_bytes=max_value_bytes)
    if output == "json":
        if len(set(result.columns)) != len(result.columns):
            dup = next(c for c in result.columns if result.columns.count(c) > 1)
            raise click.ClickException(
                f"column name {dup!r} appears more than once, so JSON objects would lose "
                "values; Try: name the columns apart (AS ...) or use --csv")
        objects = [json.dumps(dict(zip(result.columns, map(query.json_value, row), strict=True)),
                              ensure_ascii=False) for row in result.rows]
        click.echo("[" + ",\n ".join(objects) + "]")
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_csv_text(v) for v in row] for row in result.rows)
        click.echo(buffer.getvalue(), nl=False)
    elif result.columns:
        numeric = [all(isinstance(row[i], (int, float)) for row in result.rows
                       if row[i] is not None) for i in range(len(result.columns))]
        for line in render_table(result.columns,
                                 [[_sql_text(v) for v in row] for row in result.rows],
                                 right=numeric, rule=True):
            click.echo(line)
    if result.truncated:
        click.echo(f"Warning: {result.notice}", err=True)
