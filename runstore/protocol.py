"""The wire messages of the sync protocol, defined once for client and server.

Every JSON body that crosses ``/api/v1`` is one of these pydantic models. Metric rows are the
exception on the hot path: they travel as compact arrays (see :class:`MetricChunk`) and are
checked by :func:`decode_metric_rows` without building a model per row.

Non-finite floats: JSON cannot carry NaN or infinities, so metric values travel as numbers when
finite and as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` otherwise. A NULL value
in a store (SQLite turns NaN into NULL) is NaN.

Input rules: the request models below check names, folders, labels, descriptions, object
paths and metric rows with runstore.rules, the functions the SDK calls at the call, so a value
the SDK accepted is never refused here. Response models carry no rules (a server never fails to
answer because of what it holds).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runstore import rules
from runstore.rules import INT64_MAX as INT64_MAX
from runstore.rules import INT64_MIN as INT64_MIN
from runstore.rules import MAX_METRIC_TEXT as MAX_METRIC_TEXT

API_PREFIX = "/api/v1"
PROTOCOL_VERSION = 1

ConflictStrategy = Literal["skip", "error", "new", "replace"]
ClaimOutcome = Literal["created", "resumed", "skipped", "renamed", "replaced"]
RunStatus = Literal["Running", "Complete", "Error"]

# Limits the server enforces and the client respects when sizing requests.
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
MAX_BLOB_PART_BYTES = 64 * 1024 * 1024
BLOB_PART_BYTES = 8 * 1024 * 1024
METRIC_CHUNK_ROWS = 20_000
MAX_METRIC_CHUNK_ROWS = 100_000
# Integers are stored as SQLite/PostgreSQL 64-bit integers: anything wider is refused (422)
# (INT64_MIN, INT64_MAX come from runstore.rules).


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Message):
    """Every error answer: {"detail": "one line naming what is wrong"}."""

    detail: str


class Health(Message):
    status: Literal["ok"] = "ok"
    version: int = PROTOCOL_VERSION


class WhoAmI(Message):
    user: str
    root: str


# -- folders -------------------------------------------------------------------------------
class FolderCreate(Message):
    path: str = Field(max_length=4096)
    make_parents: bool = False


class FolderInfo(Message):
    path: str
    created: bool


class NodeSummary(Message):
    """A run or artifact as listed in a folder (the dict shape of ``list_remote``)."""

    kind: Literal["Run", "Artifact"]
    name: str
    alternative_name: str
    uuid: str
    status: str | None
    start_timestamp: str | None
    end_timestamp: str | None
    labels: list[Any]
    path: str
    complete: bool


class FolderListing(Message):
    path: str
    folders: list[str]
    nodes: list[NodeSummary]


class ResolvedNode(Message):
    kind: Literal["Folder", "Run", "Artifact"]
    path: str
    uuid: str | None = None


# -- runs ----------------------------------------------------------------------------------
class RunMetadata(Message):
    labels: list[Any] = Field(default_factory=list)
    description: str = ""
    status: RunStatus = "Running"
    start_timestamp: str
    end_timestamp: str | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)
    platform: dict[str, Any] = Field(default_factory=dict)
    git: dict[str, Any] = Field(default_factory=dict)
    remote: list[dict[str, Any]] = Field(default_factory=list)
    # Goes up with each re-open (load_run) and each change after the run ended (an edit, an
    # input/output added). (generation, complete) only moves
    # forward on the server: an upload that read an older state of the run never undoes a
    # newer one that another upload already finalized.
    generation: int = Field(default=0, ge=0, le=INT64_MAX)


class NodeClaim(Message):
    """What a run claim and an artifact claim share: the client UUID, the names, the folder and
    what to do when the name is taken. The server decides the outcome atomically."""

    uuid: str = Field(min_length=1, max_length=64)
    name: str = Field(max_length=4096)
    alternative_name: str = Field(max_length=4096)
    folder: str = Field(max_length=4096)
    conflict_strategy: ConflictStrategy

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return rules.check_uuid(value)

    @field_validator("name", "alternative_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return rules.check_segment(value, "name")

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        rules.split_path(value)
        return value


def _check_metadata(meta: RunMetadata | ArtifactMetadata) -> None:
    rules.check_labels(meta.labels)
    rules.check_description(meta.description)


class RunClaim(NodeClaim):
    """Claim a run by its client UUID; the server decides the outcome atomically."""

    metadata: RunMetadata

    @model_validator(mode="after")
    def _rules(self) -> RunClaim:
        _check_metadata(self.metadata)
        return self


class ClaimResponse(Message):
    outcome: ClaimOutcome
    uuid: str
    remote_path: str
    metric_count: int = 0
    complete: bool = False


class MetricChunk(Message):
    """Rows ``offset .. offset+len(rows)-1`` of a run, each
    ``[type, key, step, epoch|null, value, timestamp]`` with value a number or a
    non-finite marker string."""

    offset: int = Field(ge=0, le=INT64_MAX)
    rows: list[list[Any]]


class MetricAck(Message):
    metric_count: int
    inserted: int


class LineageEntry(Message):
    kind: str = Field(max_length=64)
    artifact_uuid: str | None = None
    entry: dict[str, Any]


class Lineage(Message):
    input: list[LineageEntry] = Field(default_factory=list)
    output: list[LineageEntry] = Field(default_factory=list)


class LineageUpdate(Lineage):
    """PUT /runs/{uuid}/lineage: the links, and the state of the run they were read from
    (generation, status), so that an older upload never replaces a newer upload's links."""

    generation: int = Field(default=0, ge=0, le=INT64_MAX)
    status: RunStatus = "Running"


class RunFinalize(Message):
    metric_count: int = Field(ge=0, le=INT64_MAX)
    metadata: RunMetadata

    @model_validator(mode="after")
    def _rules(self) -> RunFinalize:
        _check_metadata(self.metadata)
        return self


class FinalizeResponse(Message):
    uuid: str
    remote_path: str
    metric_count: int
    complete: bool
    # The server's generation of the run after this request: greater than the one sent when
    # the server holds a newer state (this finalize was stale and changed nothing).
    generation: int = Field(default=0, ge=0, le=INT64_MAX)


class RunDetail(Message):
    uuid: str
    name: str
    alternative_name: str
    path: str
    folder: str
    complete: bool
    metric_count: int
    metadata: RunMetadata
    metric_keys: list[list[str]]
    lineage: Lineage
    artifacts: list[str]


class MetricPage(Message):
    offset: int
    rows: list[list[Any]]
    metric_count: int


# -- blobs and artifacts --------------------------------------------------------------------
class BlobQuery(Message):
    sha256: list[str] = Field(max_length=100_000)


class BlobMissing(Message):
    missing: list[str]


class UploadStart(Message):
    sha256: str
    size_bytes: int = Field(ge=0, le=INT64_MAX)


class UploadStatus(Message):
    sha256: str
    size_bytes: int
    offset: int
    complete: bool


# -- a run's files (stdout.log) --------------------------------------------------------------
# The bytes travel as a blob (POST /uploads, PATCH /uploads/{sha}: streamed, resumable,
# deduplicated); PUT /runs/{uuid}/files/{path} then points the run's file at it.
RUN_FILES = frozenset({"stdout.log"})


class RunFileSet(Message):
    sha256: str
    size_bytes: int = Field(ge=0, le=INT64_MAX)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        return rules.check_sha256(value)


class RunFileInfo(Message):
    """What the server holds for a run's file now (after a PUT: possibly a longer copy it
    kept, see runstore/server/runfiles.py)."""

    path: str
    sha256: str
    size_bytes: int


class ArtifactObject(Message):
    path: str = Field(max_length=4096)
    kind: Literal["file", "reference"]
    sha256: str | None = None
    size_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    uri: str | None = Field(default=None, max_length=8192)


class ArtifactMetadata(Message):
    labels: list[Any] = Field(default_factory=list)
    description: str = ""
    created_timestamp: str
    remote: list[dict[str, Any]] = Field(default_factory=list)


class ArtifactClaim(NodeClaim):
    metadata: ArtifactMetadata
    objects: list[ArtifactObject]

    @model_validator(mode="after")
    def _rules(self) -> ArtifactClaim:
        _check_metadata(self.metadata)
        for obj in self.objects:
            rules.check_object_path(obj.path)
            if obj.uri is not None:
                rules.check_uri(obj.uri)
        return self


class ArtifactDetail(Message):
    uuid: str
    name: str
    alternative_name: str
    path: str
    folder: str
    metadata: ArtifactMetadata
    objects: list[ArtifactObject]


# -- metric values ----------------------------------------------------------------------
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_value(value: float | None) -> float | str:
    """A metric value for JSON: finite floats as is, NaN (or NULL) and infinities as strings."""
    if value is None or value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return value


def decode_value(value: Any) -> float:
    """Inverse of encode_value; raises ValueError on anything else."""
    if isinstance(value, str):
        try:
            return _NONFINITE[value]
        except KeyError:
            raise ValueError(f"metric value {value[:40]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"metric value {str(value)[:40]!r} is not a number")
    return float(value)


def decode_metric_rows(rows: list[list[Any]]) -> list[tuple]:
    """Check wire rows; return tuples (type, key, step, epoch, value|None-for-NaN, timestamp).

    Raises ValueError naming the first bad row. Cheap enough for the hot path: a type or key
    is checked with runstore.rules once per chunk.
    """
    out: list[tuple] = []
    append = out.append
    good: set[str] = set()
    text_ok = rules.metric_text_ok
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 6:
            raise ValueError(f"metric row {i} must be [type, key, step, epoch, value, timestamp]")
        type_, key, step, epoch, value, ts = row
        if type(type_) is not str or type(key) is not str or type_ not in good \
                or key not in good:
            for text, check in ((type_, rules.check_metric_type), (key, rules.check_metric_key)):
                if not text_ok(text):
                    try:
                        check(text)
                    except ValueError as exc:
                        raise ValueError(f"metric row {i}: {exc}") from None
                good.add(text)
        if type(ts) is not str or len(ts) > 64:
            raise ValueError(f"metric row {i}: the timestamp must be a short string")
        if type(step) is not int or (epoch is not None and type(epoch) is not int):
            raise ValueError(f"metric row {i}: step and epoch must be integers")
        if not INT64_MIN <= step <= INT64_MAX or (
                epoch is not None and not INT64_MIN <= epoch <= INT64_MAX):
            raise ValueError(f"metric row {i}: step and epoch must fit in 64 bits")
        if type(value) is not float:
            try:
                value = decode_value(value)
            except ValueError as exc:
                raise ValueError(f"metric row {i}: {exc}") from None
        append((type_, key, step, epoch, None if value != value else value, ts))
    # Timestamps differ row by row: one scan of them all for what cannot be stored (the
    # ingest hot path), and only on a hit the row that has it.
    if rules.storable_problem("".join([r[5] for r in out])):
        for i, r in enumerate(out):
            if rules.storable_problem(r[5]):
                raise ValueError(f"metric row {i}: the timestamp must be a short string")
    return out


def encode_metric_row(row: tuple) -> list[Any]:
    """(type, key, step, epoch, value|None, timestamp) -> a wire row."""
    type_, key, step, epoch, value, ts = row
    if value is None or value != value or value in (math.inf, -math.inf):
        value = encode_value(value)
    return [type_, key, step, epoch, value, ts]
