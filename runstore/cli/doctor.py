"""`runstore doctor`: what in the local store the server would refuse, and how to fix each.

Why: the SDK checks every value at the call with runstore.rules, but a store may hold values
written before those rules, or by hand. Such a run can never sync: syncd marks it failed with
the field named (never an endless retry), and this command lists all of them at once with a
concrete fix for each.
"""

from __future__ import annotations

import json
import re
import unicodedata
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any

import click

from runstore import rules
from runstore.cli.base import main, user_errors
from runstore.store import Store


@dataclass(frozen=True)
class Problem:
    kind: str            # 'run' | 'artifact'
    alternative_name: str
    uuid: str
    field: str           # the column (or 'metric key', 'object path', ...)
    message: str         # the rule's one line, naming the value
    fix: str             # what to do

    def line(self) -> str:
        what = self.message.split(". Try: ")[0]
        return (f"{self.kind} {self.alternative_name} ({self.uuid}): {self.field}: {what}. "
                f"Try: {self.fix}")


def _edit(uuid: str, statement: str) -> str:
    return (f"python -c \"import runstore as em; r = em.load_run('{uuid}'); {statement}; "
            "r.finish()\" (re-opens the run, fixes it, ends it; syncd then uploads it)")


def suggest_object_path(path: str) -> str:
    """A valid object path close to a refused one (percent-decoded, NFKC, bad parts replaced)."""
    text = unicodedata.normalize("NFKC", urllib.parse.unquote(path.replace("\\", "/")))
    text = re.sub(r"[\x00-\x1f\x7f%\ud800-\udfff]", "_", text)
    parts = [p[:rules.MAX_OBJECT_SEGMENT] for p in text.split("/") if p not in ("", ".", "..")]
    fixed = "/".join(parts)[:rules.MAX_OBJECT_PATH] or "file"
    return fixed if rules.object_path_problem(fixed) is None else "file"


def _run_fix(row: Any, field: str) -> str:
    uuid, alt = row["uuid"], row["alternative_name"]
    if field in ("folder", "conflict_strategy"):
        return (f"python -c \"import runstore as em; em.load_run('{uuid}', folder='default', "
                "make_folder=True).finish()\" (stores a valid target; syncd then uploads it)")
    if field == "description":
        return _edit(uuid, "r.description = 'a description without NUL'")
    if field == "labels":
        return _edit(uuid, "r.labels = ['valid', 'labels']")
    if field == "name":
        return _edit(uuid, "r.parse_from_dict({'name': 'valid-name'})")
    if field == "alternative_name":
        return _edit(uuid, f"r.parse_from_dict({{'alternativeName': "
                           f"'{re.sub(r'[^A-Za-z0-9._-]', '_', alt)[:128]}'}})")
    if field in ("metric type", "metric key"):
        return ("stored metric rows cannot be renamed: log them again in a new run "
                "(em.create_run) with types and keys of 1-256 characters, no NUL")
    return "create the run again with valid values (em.create_run); its uuid cannot change"


def _artifact_fix(field: str, value: str | None = None) -> str:
    if field == "object path" and value is not None:
        return (f"create the artifact again (em.create_artifact) and add the file with "
                f"obj_path={suggest_object_path(value)!r}")
    return "create the artifact again (em.create_artifact) with valid values"


def find_problems(store: Store) -> list[Problem]:
    """Every value in the store that the server's rules refuse, runs first."""
    out: list[Problem] = []
    runs = {r["id"]: r for r in store.read("SELECT * FROM runs ORDER BY id")}
    bad_text: dict[int, list[tuple[str, str]]] = {}
    conn = store.connection()
    for run_id, type_, key in conn.execute("SELECT DISTINCT run_id, type, key FROM metrics"):
        for field, text in (("metric type", type_), ("metric key", key)):
            if not rules.metric_text_ok(text):
                check = rules.check_metric_type if field == "metric type" \
                    else rules.check_metric_key
                try:
                    check(text)
                except rules.InvalidInputError as exc:
                    if (field, str(exc)) not in bad_text.setdefault(run_id, []):
                        bad_text[run_id].append((field, str(exc)))
    for run_id, row in runs.items():
        problems = rules.run_row_problems(row) + bad_text.get(run_id, [])
        for field, message in problems:
            out.append(Problem("run", row["alternative_name"], row["uuid"], field, message,
                               _run_fix(row, field)))
    arts = {r["id"]: r for r in store.read("SELECT * FROM artifacts ORDER BY id")}
    objects: dict[int, list[Any]] = {}
    for obj in store.read("SELECT artifact_id, path, uri FROM artifact_objects ORDER BY path"):
        objects.setdefault(obj["artifact_id"], []).append(obj)
    for art_id, row in arts.items():
        found: list[tuple[str, str, str | None]] = [
            (f, m, None) for f, m in rules.artifact_row_problems(row)]
        for obj in objects.get(art_id, []):
            try:
                rules.check_object_path(obj["path"])
            except rules.InvalidInputError as exc:
                found.append(("object path", str(exc), obj["path"]))
            if obj["uri"] is not None:
                try:
                    rules.check_uri(obj["uri"])
                except rules.InvalidInputError as exc:
                    found.append(("reference uri", str(exc), None))
        for field, message, value in found:
            out.append(Problem("artifact", row["alternative_name"], row["uuid"], field,
                               message, _artifact_fix(field, value)))
    return out


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON array.")
@user_errors
def doctor_command(as_json: bool) -> None:
    """List runs and artifacts in the local store that the server would refuse, with fixes.

    Exit status 1 when there is at least one.
    """
    store = Store()
    try:
        problems = find_problems(store)
        home = store.home
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([asdict(p) for p in problems], indent=2))
    else:
        for problem in problems:
            click.echo(problem.line())
        if problems:
            n = len({p.uuid for p in problems})
            click.echo(f"{len(problems)} problem(s) in {n} run(s)/artifact(s) of {home}; "
                       "they cannot be uploaded until fixed.")
        else:
            click.echo(f"no problems: everything in {home} can be uploaded.")
    if problems:
        raise SystemExit(1)
