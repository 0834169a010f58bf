"""What the pages show, independent of where it is stored.

Two implementations of ``UIData``: ``runstore.ui.local.LocalData`` (the machine's SQLite store,
read-only) and ``runstore.ui.serverdata.ServerData`` (the server's database, one user's
folders). The routes only ever talk to this interface, so both UIs render the same pages.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STATUSES = ("Running", "Complete", "Error")
PAGE_SIZES = (25, 50, 100, 200)
# Metrics whose smaller value is better; anything else is "higher is better".
_LOWER_IS_BETTER = re.compile(
    r"loss|err|mse|mae|rmse|nll|perplexity|ppl|wer|cer|latency|time|regret|cost|distance",
    re.IGNORECASE)


class NotFound(LookupError):
    """Nothing (visible to this user) by that name: a 404 page."""


class LoginRequired(Exception):
    """No live session: the login page (with a way back)."""


def lower_is_better(key: str) -> bool:
    """Whether the best value of a metric is its minimum (losses, errors) or its maximum."""
    return bool(_LOWER_IS_BETTER.search(key))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hparams as dotted keys ({'opt': {'lr': 1}} -> {'opt.lr': 1})."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def common_keys(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Keys of many flattened hparam dicts, the most common first (then by name)."""
    counts: Counter[str] = Counter()
    for doc in docs:
        counts.update(doc.keys())
    return sorted(counts, key=lambda k: (-counts[k], k))


_TYPE_RANK = {"val": 0, "validation": 0, "validate": 0, "test": 1, "eval": 1, "train": 2,
              "training": 2}


def default_metrics(refs: list[MetricRef]) -> list[MetricRef]:
    """The three most common metrics (refs come most common first), val before train."""
    return sorted(refs[:3], key=lambda r: (_TYPE_RANK.get(r.type.lower(), 3), r.key))


@dataclass(frozen=True)
class MetricRef:
    """A metric column: (type, key), written ``type/key`` in URLs."""
    type: str
    key: str

    @classmethod
    def parse(cls, text: str) -> MetricRef:
        type_, sep, key = text.partition("/")
        if not sep or not type_ or not key:
            raise ValueError(f"metric column {text!r} is not TYPE/KEY. Try: m=val/accuracy")
        return cls(type_, key)

    def __str__(self) -> str:
        return f"{self.type}/{self.key}"


@dataclass
class RunsQuery:
    """The runs table's state, all in the URL: filters, sort, page and chosen columns."""
    folder: str
    status: str | None = None
    label: str | None = None
    name: str | None = None
    sort: str = "start"            # name | status | start | h:<key> | last:<t/k> | best:<t/k>
    desc: bool = True
    page: int = 1
    page_size: int = 50
    hparams: list[str] = field(default_factory=list)
    metrics: list[MetricRef] = field(default_factory=list)
    default_columns: bool = False  # none chosen yet: the data source picks the common ones


@dataclass
class SeriesSummary:
    n: int
    nan_count: int
    min_value: float | None
    max_value: float | None
    last_value: float | None
    last_step: int

    def best(self, key: str) -> float | None:
        return self.min_value if lower_is_better(key) else self.max_value


@dataclass
class RunRow:
    uuid: str
    name: str
    path: str
    status: str
    start_timestamp: str | None
    end_timestamp: str | None
    labels: list[str]
    hparams: dict[str, Any]                       # flattened
    metrics: dict[MetricRef, SeriesSummary]


@dataclass
class RunsPage:
    rows: list[RunRow]
    total: int
    hparam_keys: list[str]                        # column choices
    metric_refs: list[MetricRef]
    labels: list[str]                             # filter choices


@dataclass
class Folder:
    path: str
    runs: int
    artifacts: int


@dataclass
class ArtifactRef:
    uuid: str | None
    name: str
    path: str | None
    kind: str                                     # Artifact, or what else a run marked
    files: int = 0                                # its objects: how many, total bytes
    size_bytes: int = 0


@dataclass
class RunDetail:
    uuid: str
    name: str
    alternative_name: str
    path: str
    folder: str
    status: str
    start_timestamp: str | None
    end_timestamp: str | None
    labels: list[str]
    description: str
    hparams: dict[str, Any]
    platform: dict[str, Any]
    git: dict[str, Any]
    series: dict[tuple[str, str], SeriesSummary]
    inputs: list[ArtifactRef]
    outputs: list[ArtifactRef]
    history: list[dict[str, Any]]                 # upload/download records
    sync: dict[str, Any] | None                   # local sync state (local UI only)
    stdout_path: Path | None                      # None: not available here
    # The server's copy of stdout.log: (sha256 of a blob in its blob store, size). The blob
    # may be in an S3 bucket, so the routes stream it (BlobStore.read), never a local path.
    stdout_blob: tuple[str, int] | None = None


@dataclass
class ArtifactObject:
    path: str
    kind: str
    size_bytes: int | None
    sha256: str | None
    uri: str | None


@dataclass
class ArtifactDetail:
    uuid: str
    name: str
    alternative_name: str
    path: str
    folder: str
    labels: list[str]
    description: str
    created_timestamp: str | None
    objects: list[ArtifactObject]
    produced_by: list[tuple[str, str]]            # (run uuid, run name)
    consumed_by: list[tuple[str, str]]
    history: list[dict[str, Any]]


class UIData(Protocol):
    """Read access for the pages; every method raises NotFound for what the viewer may not
    see, so another user's run is indistinguishable from no run."""

    read_only_note: str | None

    def folders(self) -> list[Folder]: ...
    def recent_runs(self, limit: int) -> list[RunRow]: ...
    def runs(self, query: RunsQuery) -> RunsPage: ...
    def run(self, uuid: str) -> RunDetail: ...
    def series(self, uuid: str, type_: str, key: str, lo: int | None, hi: int | None,
               points: int) -> dict[str, Any]: ...
    def artifact(self, uuid: str) -> ArtifactDetail: ...
    def blob(self, artifact_uuid: str, obj_path: str) -> tuple[Path | str, int]:
        """A file object's bytes: a local path, or the sha256 of a blob in the server's blob
        store (a directory or an S3 bucket, streamed by the route); and its size."""
        ...
