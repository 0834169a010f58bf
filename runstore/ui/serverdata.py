"""UIData over the server's database (SQLAlchemy Core; SQLite or PostgreSQL), for one user.

Every query is scoped by ``owner_id``: another user's run, folder or artifact is NotFound,
exactly like one that does not exist. The runs table is one indexed query per page (filters,
sort and LIMIT/OFFSET in SQL) plus the page's metric summaries from ``metric_series``, so a
folder of 10,000 runs costs what a page of 50 does.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    and_,
    any_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from runstore.server import db
from runstore.server.auth import User
from runstore.ui import series as series_mod
from runstore.ui import sessions
from runstore.ui.data import (
    ArtifactDetail,
    ArtifactObject,
    ArtifactRef,
    Folder,
    LoginRequired,
    MetricRef,
    NotFound,
    RunDetail,
    RunRow,
    RunsPage,
    RunsQuery,
    SeriesSummary,
    common_keys,
    default_metrics,
    flatten,
    lower_is_better,
)

# Column choices come from the most recent runs of a folder (a folder's runs share their
# hparam and metric names in practice; reading all 10,000 would cost more than the page).
_SAMPLE_RUNS = 200


# Each runs page parses the hparams and labels of the folder's 200 latest runs (the column
# choices) and of its 50 rows: the same texts request after request. Parsed once per text;
# callers get copies (or tuples) so the cached values are never changed.
@functools.lru_cache(maxsize=4096)
def _flat_hparams(text: str) -> dict[str, Any]:
    return flatten(json.loads(text))


@functools.lru_cache(maxsize=4096)
def _labels(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ServerData:
    """The pages' data for ``user`` in ``database``."""

    read_only_note: str | None = None

    def __init__(self, database: db.Database, user: User | None = None, *,
                 session: str | None = None,
                 on_user: Callable[[User], None] | None = None) -> None:
        """For ``user``; or for the user of login ``session`` (a cookie's secret), checked
        by the first read (LoginRequired if it is not live), then ``on_user(user)``."""
        self.database = database
        self._user = user
        self._session = session
        self._on_user = on_user
        self.is_pg = not database.is_sqlite

    @property
    def user(self) -> User:
        if self._user is None:
            raise RuntimeError("ServerData.user before the session was checked")
        return self._user

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """One read transaction; the first also checks the login session, in the same
        transaction."""
        with self.database.read() as conn:
            if self._user is None:
                self._user = sessions.user_in(conn, self._session)
                if self._user is None:
                    raise LoginRequired()
                if self._on_user is not None:
                    self._on_user(self._user)
            yield conn

    # -- folders and runs ------------------------------------------------------------------
    def folders(self) -> list[Folder]:
        f, r, a = db.folders.c, db.runs.c, db.artifacts.c
        with self._read() as conn:
            runs = (select(r.folder_id, func.count().label("n"))
                    .where(r.owner_id == self.user.id).group_by(r.folder_id).subquery())
            arts = (select(a.folder_id, func.count().label("n"))
                    .where(a.owner_id == self.user.id).group_by(a.folder_id).subquery())
            rows = conn.execute(
                select(f.path, func.coalesce(runs.c.n, 0), func.coalesce(arts.c.n, 0))
                .outerjoin_from(db.folders, runs, runs.c.folder_id == f.id)
                .outerjoin(arts, arts.c.folder_id == f.id)
                .where(f.owner_id == self.user.id).order_by(f.path)).all()
        return [Folder(path, n_runs, n_arts) for path, n_runs, n_arts in rows]

    def recent_runs(self, limit: int) -> list[RunRow]:
        """The user's latest runs, any folder (newest first)."""
        r = db.runs.c
        with self._read() as conn:
            rows = conn.execute(
                select(r.uuid, r.run_name, r.name, r.status, r.start_timestamp,
                       r.end_timestamp, r.labels, db.folders.c.path)
                .join(db.folders, db.folders.c.id == r.folder_id)
                .where(r.owner_id == self.user.id).order_by(r.id.desc()).limit(limit)).all()
        return [RunRow(x.uuid, x.run_name, f"{x.path}/{x.name}", x.status, x.start_timestamp,
                       x.end_timestamp, json.loads(x.labels), {}, {}) for x in rows]

    def _folder_id(self, conn: Connection, path: str) -> int:
        row = conn.execute(select(db.folders.c.id).where(
            db.folders.c.path == path, db.folders.c.owner_id == self.user.id)).first()
        if row is None:
            raise NotFound(f"folder {path} not found")
        return row.id

    @staticmethod
    def _sqlite_hparam(key: str):
        parts = key.split(".")
        path = "$" + "".join('."' + p.replace('"', '""') + '"' for p in parts)
        return func.json_extract(db.runs.c.hparams, path)

    def _in(self, column, ids: list[int]):
        """``column IN ids``; on PostgreSQL ``= ANY(%s)`` with the list as one array
        parameter (not a parameter per id, each rendered and bound separately)."""
        if self.is_pg:
            return column == any_(bindparam("ids", ids, type_=ARRAY(Integer), unique=True))
        return column.in_(ids)

    def _has_label(self, label: str):
        if self.is_pg:  # (read from the runs_labels_gin index)
            return literal_column("runs.labels_jsonb", JSONB).contains(
                cast(literal(json.dumps([label])), JSONB))
        # A cheap necessary condition first (the label's JSON text appears in the stored
        # list, written by json.dumps like this), then the exact membership test.
        rough = db.runs.c.labels.like(f"%{_like_escape(json.dumps(label))}%", escape="\\")
        each = func.json_each(db.runs.c.labels).table_valued("value")
        return and_(rough, exists(select(literal(1)).select_from(each).where(
            each.c.value == label)))

    @staticmethod
    def _two_part_page(conn: Connection, run_id, joined, has_key, order: list, without,
                       where, desc: bool, offset: int, limit: int) -> list[int]:
        """A page of run ids in two ordered parts: the runs that have the sort key (``run_id``
        of ``joined`` where ``has_key``, read in ``order`` from an index), then the runs of
        ``where`` ``without`` it, by id; the first part is counted only when the page starts
        past it."""
        r = db.runs.c
        ids = list(conn.execute(select(run_id).select_from(joined).where(has_key)
                                .order_by(*order).limit(limit).offset(offset)).scalars())
        if len(ids) == limit:
            return ids
        if ids or offset == 0:
            n_with = offset + len(ids)
        else:
            n_with = conn.execute(select(func.count()).select_from(joined)
                                  .where(has_key)).scalar() or 0
        ids += conn.execute(
            select(r.id).where(where, without).order_by(r.id.desc() if desc else r.id.asc())
            .limit(limit - len(ids)).offset(max(0, offset - n_with))).scalars()
        return ids

    def _ids_by_hparam(self, conn: Connection, folder_id: int, where, key: str, desc: bool,
                       offset: int, limit: int) -> list[int]:
        """PostgreSQL: a page of run ids sorted by hparam ``key`` (missing last, ties by id),
        from run_hparam_values' index."""
        r, hv = db.runs.c, db.hparam_values.c
        if desc:
            order = [hv.num.desc().nulls_first(), hv.txt.desc().nulls_first(), hv.run_id.desc()]
        else:
            order = [hv.num.asc().nulls_last(), hv.txt.asc().nulls_last(), hv.run_id.asc()]
        without = ~exists(select(literal(1)).select_from(db.hparam_values).where(
            hv.run_id == r.id, hv.key == key))
        return self._two_part_page(
            conn, hv.run_id, db.hparam_values.join(db.runs, r.id == hv.run_id),
            and_(hv.folder_id == folder_id, hv.key == key, where), order, without, where,
            desc, offset, limit)

    def _ids_by_metric(self, conn: Connection, folder_id: int, where, ref: MetricRef,
                       column: str, desc: bool, offset: int, limit: int) -> list[int]:
        """PostgreSQL: a page of run ids sorted by a series summary (``column`` of
        metric_series; runs without a value last, ties by id), from the
        metric_series_by_<column> index."""
        r, s = db.runs.c, db.series_by_folder.c
        col = s[column]
        # (NULLs are filtered out: the index's own NULL placement serves either direction)
        order = [col.desc(), s.run_id.desc()] if desc else [col.asc(), s.run_id.asc()]
        other = db.series_by_folder.alias("valued")
        without = ~exists(select(literal(1)).select_from(other).where(
            other.c.run_id == r.id, other.c.type == ref.type, other.c.key == ref.key,
            other.c[column].is_not(None)))
        return self._two_part_page(
            conn, s.run_id, db.series_by_folder.join(db.runs, r.id == s.run_id),
            and_(s.folder_id == folder_id, s.type == ref.type, s.key == ref.key,
                 col.is_not(None), where), order, without, where, desc, offset, limit)

    def _ids_sorted(self, conn: Connection, q: RunsQuery, where, filtered: bool,
                    metric: tuple[MetricRef, str] | None,
                    offset: int) -> tuple[list[int], int | None]:
        """A page of run ids by one sort key (ties by id), and, for a filtered folder, how
        many runs match. The page's ids first (the sort reads only the id and the sort key
        of each run: half the time of sorting whole rows on PostgreSQL), their rows later."""
        r = db.runs.c
        source: Any = db.runs
        nulls_last = True
        if metric is not None:
            ref, column = metric
            s = db.metric_series.alias("sorted_series")
            source = db.runs.outerjoin(s, and_(s.c.run_id == r.id, s.c.type == ref.type,
                                               s.c.key == ref.key))
            key = s.c[column]
        elif q.sort.startswith("h:"):
            key = self._sqlite_hparam(q.sort[2:])
        else:
            key = {"name": r.run_name, "status": r.status}.get(q.sort, r.start_timestamp)
            nulls_last = False
        matches = select(r.id, key.label("k")).select_from(source).where(where)
        if filtered:
            # A filter makes the sort read every matching run anyway: read them once into
            # a CTE, count it and sort it. (Sorting `runs` under LIMIT, PostgreSQL would walk
            # the folder's date index testing each run instead of reading an index of the
            # filter: 7 ms instead of 0.5 for a name filter.)
            m = matches.cte("matches").prefix_with("MATERIALIZED")
            stmt = select(m.c.id, select(func.count()).select_from(m).scalar_subquery())
            k, run_id = m.c.k, m.c.id
        else:
            stmt, k, run_id = matches, key, r.id
        first = k.desc() if q.desc else k.asc()
        got = conn.execute(stmt.order_by(first.nulls_last() if nulls_last else first,
                                         run_id.desc() if q.desc else run_id.asc())
                           .limit(q.page_size).offset(offset)).all()
        return [x[0] for x in got], (got[0][1] if filtered and got else None)

    def runs(self, q: RunsQuery) -> RunsPage:
        r, ms = db.runs.c, db.metric_series.c
        with self._read() as conn:
            folder_id = self._folder_id(conn, q.folder)
            cond = [r.folder_id == folder_id]
            if q.status:
                cond.append(r.status == q.status)
            if q.name:
                pattern = f"%{_like_escape(q.name)}%"
                cond.append(or_(r.run_name.like(pattern, escape="\\"),
                                r.name.like(pattern, escape="\\")))
            if q.label:
                cond.append(self._has_label(q.label))
            where = and_(true(), *cond)
            filtered = len(cond) > 1
            count = select(func.count()).select_from(db.runs).where(where)
            total: int | None = None
            offset = (q.page - 1) * q.page_size
            metric = q.sort.startswith(("last:", "best:"))
            if metric:
                which, _, ref_text = q.sort.partition(":")
                ref = MetricRef.parse(ref_text)
                column = "last_value" if which == "last" else (
                    "min_value" if lower_is_better(ref.key) else "max_value")
            if self.is_pg and metric:
                ids = self._ids_by_metric(conn, folder_id, where, ref, column, q.desc, offset,
                                          q.page_size)
            elif self.is_pg and q.sort.startswith("h:"):
                ids = self._ids_by_hparam(conn, folder_id, where, q.sort[2:], q.desc, offset,
                                          q.page_size)
            else:
                ids, total = self._ids_sorted(conn, q, where, filtered,
                                              (ref, column) if metric else None, offset)
            if total is None:
                total = 0 if filtered and offset == 0 and not ids else conn.execute(
                    count).scalar()
            by_id = {row.id: row for row in conn.execute(
                select(r.id, r.uuid, r.run_name, r.name, r.status, r.start_timestamp,
                       r.end_timestamp, r.labels, r.hparams).where(self._in(r.id, ids)))
            } if ids else {}
            rows = [by_id[i] for i in ids]
            sample = conn.execute(select(r.id, r.hparams, r.labels).where(
                r.folder_id == folder_id).order_by(r.id.desc()).limit(_SAMPLE_RUNS)).all()
            sample_ids = select(r.id).where(r.folder_id == folder_id).order_by(
                r.id.desc()).limit(_SAMPLE_RUNS).scalar_subquery()
            # PostgreSQL: `= ANY(ARRAY(subquery))` is planned as primary-key lookups; an IN
            # list of the 200 ids (or IN subquery) was planned as a scan of every series of
            # every run (2-6 ms at 30,000 series, growing with the table).
            in_sample = (ms.run_id == any_(func.array(sample_ids)) if self.is_pg
                         else ms.run_id.in_(sample_ids))
            refs = conn.execute(select(ms.type, ms.key).where(in_sample)
                                .group_by(ms.type, ms.key)
                                .order_by(func.count().desc(), ms.type, ms.key)).all()
            keys = common_keys(_flat_hparams(x.hparams) for x in sample)
            metric_refs = [MetricRef(t, k) for t, k in refs]
            if q.default_columns:
                q.hparams, q.metrics = keys[:4], default_metrics(metric_refs)
            summaries: dict[int, dict[MetricRef, SeriesSummary]] = {i: {} for i in ids}
            if ids and q.metrics:
                pairs = [(m.type, m.key) for m in q.metrics]
                for x in conn.execute(select(db.metric_series).where(
                        self._in(ms.run_id, ids), ms.key.in_({k for _, k in pairs}))):
                    if (x.type, x.key) in pairs:
                        summaries[x.run_id][MetricRef(x.type, x.key)] = SeriesSummary(
                            x.n, x.nan_count, x.min_value, x.max_value, x.last_value,
                            x.last_step)
        label_set = sorted({label for x in sample for label in _labels(x.labels)})
        out = [RunRow(row.uuid, row.run_name, f"{q.folder}/{row.name}", row.status,
                      row.start_timestamp, row.end_timestamp, list(_labels(row.labels)),
                      dict(_flat_hparams(row.hparams)), summaries[row.id]) for row in rows]
        return RunsPage(out, int(total or 0), keys, metric_refs, label_set)

    # -- one run ---------------------------------------------------------------------------
    def _run_row(self, conn: Connection, uuid: str):
        row = conn.execute(select(db.runs, db.folders.c.path.label("folder_path"))
                           .join(db.folders, db.folders.c.id == db.runs.c.folder_id)
                           .where(db.runs.c.owner_id == self.user.id,
                                  db.runs.c.uuid == uuid)).first()
        if row is None:
            raise NotFound(f"run {uuid} not found")
        return row

    def run(self, uuid: str) -> RunDetail:
        ms, lin, a, f = db.metric_series.c, db.lineage.c, db.artifacts.c, db.folders.c
        with self._read() as conn:
            run = self._run_row(conn, uuid)
            series = {(s.type, s.key): SeriesSummary(s.n, s.nan_count, s.min_value,
                                                     s.max_value, s.last_value, s.last_step)
                      for s in conn.execute(select(db.metric_series).where(
                          ms.run_id == run.id).order_by(ms.type, ms.key))}
            links = conn.execute(
                select(lin.direction, lin.kind, lin.entry, a.uuid, a.artifact_name, a.name,
                       f.path).select_from(db.lineage)
                .outerjoin(db.artifacts, a.id == lin.artifact_id)
                .outerjoin(db.folders, f.id == a.folder_id)
                .where(lin.run_id == run.id).order_by(lin.direction, lin.position)).all()
            o = db.artifact_objects.c
            sizes = {uuid: (n, size) for uuid, n, size in conn.execute(
                select(a.uuid, func.count(), func.coalesce(func.sum(o.size_bytes), 0))
                .join(db.artifacts, a.id == o.artifact_id)
                .where(a.uuid.in_({x.uuid for x in links if x.uuid}), a.owner_id == self.user.id)
                .group_by(a.uuid))}
            # stdout.log, uploaded with the run (or by a t9k client): see server/runfiles.py
            rf = db.t9k_run_files.c
            stdout = conn.execute(select(rf.sha256, rf.size_bytes).where(
                rf.run_id == run.id, rf.path == "stdout.log", rf.sha256.is_not(None))).first()
        inputs: list[ArtifactRef] = []
        outputs: list[ArtifactRef] = []
        for link in links:
            entry = json.loads(link.entry)
            if link.uuid is not None:
                ref = ArtifactRef(link.uuid, link.artifact_name, f"{link.path}/{link.name}",
                                  link.kind, *sizes.get(link.uuid, (0, 0)))
            else:
                ref = ArtifactRef(None, str(entry.get("name") or entry.get("path") or entry),
                                  None, link.kind)
            (inputs if link.direction == "input" else outputs).append(ref)
        return RunDetail(
            uuid=run.uuid, name=run.run_name, alternative_name=run.alternative_name,
            path=f"{run.folder_path}/{run.name}", folder=run.folder_path, status=run.status,
            start_timestamp=run.start_timestamp, end_timestamp=run.end_timestamp,
            labels=json.loads(run.labels), description=run.description,
            hparams=json.loads(run.hparams), platform=json.loads(run.platform),
            git=json.loads(run.git), series=series, inputs=inputs, outputs=outputs,
            history=json.loads(run.remote), sync=None, stdout_path=None,
            stdout_blob=(str(stdout.sha256), int(stdout.size_bytes or 0)) if stdout else None)

    def series(self, uuid: str, type_: str, key: str, lo: int | None, hi: int | None,
               points: int) -> dict[str, Any]:
        with self._read() as conn:
            run = self._run_row(conn, uuid)
            got = series_mod.from_rollups(conn, run.id, type_, key, lo, hi, points)
        if got is None:
            raise NotFound(f"run {uuid} has no metric {type_}/{key}")
        return got

    # -- artifacts -------------------------------------------------------------------------
    def _artifact_row(self, conn: Connection, uuid: str):
        row = conn.execute(select(db.artifacts, db.folders.c.path.label("folder_path"))
                           .join(db.folders, db.folders.c.id == db.artifacts.c.folder_id)
                           .where(db.artifacts.c.owner_id == self.user.id,
                                  db.artifacts.c.uuid == uuid)).first()
        if row is None:
            raise NotFound(f"artifact {uuid} not found")
        return row

    def artifact(self, uuid: str) -> ArtifactDetail:
        o, lin, r = db.artifact_objects.c, db.lineage.c, db.runs.c
        with self._read() as conn:
            art = self._artifact_row(conn, uuid)
            objects = [ArtifactObject(x.path, x.kind, x.size_bytes, x.sha256, x.uri)
                       for x in conn.execute(select(db.artifact_objects).where(
                           o.artifact_id == art.id).order_by(o.path))]
            links = conn.execute(
                select(lin.direction, r.uuid, r.run_name).join(db.runs, r.id == lin.run_id)
                .where(lin.artifact_id == art.id, r.owner_id == self.user.id)
                .order_by(r.run_name)).all()
        return ArtifactDetail(
            uuid=art.uuid, name=art.artifact_name, alternative_name=art.alternative_name,
            path=f"{art.folder_path}/{art.name}", folder=art.folder_path,
            labels=json.loads(art.labels), description=art.description,
            created_timestamp=art.created_timestamp, objects=objects,
            produced_by=[(x.uuid, x.run_name) for x in links if x.direction == "output"],
            consumed_by=[(x.uuid, x.run_name) for x in links if x.direction == "input"],
            history=json.loads(art.remote))

    def blob(self, artifact_uuid: str, obj_path: str) -> tuple[Path | str, int]:
        o = db.artifact_objects.c
        with self._read() as conn:
            art = self._artifact_row(conn, artifact_uuid)
            obj = conn.execute(select(o.sha256, o.size_bytes).where(
                o.artifact_id == art.id, o.path == obj_path, o.kind == "file")).first()
        if obj is None:
            raise NotFound(f"artifact {artifact_uuid} has no file {obj_path}")
        return str(obj.sha256), int(obj.size_bytes or 0)

