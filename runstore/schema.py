"""The local store's schema, as ordered, numbered migrations.

Never edit a migration that has shipped: append a new one. `PRAGMA user_version` holds the
number of migrations applied. The schema is a public interface, documented in README.md.
"""

from __future__ import annotations

# Unix time with sub-second precision, without unixepoch('subsec') (SQLite >= 3.42).
NOW_UNIX = "((julianday('now') - 2440587.5) * 86400.0)"

# t9k's type synonyms -> train / val / test; custom types stay as given.
TYPE_NORMALIZED = """CASE lower(m.type)
           WHEN 'train' THEN 'train' WHEN 'training' THEN 'train'
           WHEN 'val' THEN 'val' WHEN 'validate' THEN 'val' WHEN 'validation' THEN 'val'
           WHEN 'test' THEN 'test' WHEN 'testing' THEN 'test' WHEN 'eval' THEN 'test'
           WHEN 'evaluate' THEN 'test' WHEN 'evaluation' THEN 'test'
           ELSE m.type END"""

MIGRATION_1 = f"""
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    uuid              TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    alternative_name  TEXT NOT NULL UNIQUE,
    labels            TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(labels)),
    description       TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'Running'
                      CHECK (status IN ('Running', 'Complete', 'Error')),
    start_timestamp   TEXT NOT NULL,
    end_timestamp     TEXT,
    hparams           TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(hparams)),
    platform          TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(platform)),
    git               TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(git)),
    local_dir         TEXT NOT NULL,
    folder            TEXT NOT NULL DEFAULT 'default',
    make_folder       INTEGER NOT NULL DEFAULT 0,
    conflict_strategy TEXT NOT NULL DEFAULT 'new'
                      CHECK (conflict_strategy IN ('skip', 'error', 'new', 'replace')),
    auto_upload       INTEGER NOT NULL DEFAULT 0,
    hostname          TEXT NOT NULL,
    pid               INTEGER,
    pid_start         TEXT,
    heartbeat_at      REAL,
    metric_count      INTEGER NOT NULL DEFAULT 0,
    generation        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_name ON runs(name);
CREATE INDEX runs_status ON runs(status);

CREATE TABLE metrics (
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    type      TEXT NOT NULL,
    key       TEXT NOT NULL,
    step      INTEGER NOT NULL,
    epoch     INTEGER,
    value     REAL,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE artifacts (
    id                INTEGER PRIMARY KEY,
    uuid              TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    alternative_name  TEXT NOT NULL UNIQUE,
    labels            TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(labels)),
    description       TEXT NOT NULL DEFAULT '',
    created_timestamp TEXT NOT NULL,
    local_dir         TEXT NOT NULL
);
CREATE INDEX artifacts_name ON artifacts(name);

CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    size_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL DEFAULT {NOW_UNIX}
);

CREATE TABLE artifact_objects (
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'reference')),
    sha256      TEXT REFERENCES blobs(sha256),
    size_bytes  INTEGER,
    uri         TEXT,
    PRIMARY KEY (artifact_id, path),
    CHECK ((kind = 'file' AND sha256 IS NOT NULL AND uri IS NULL)
        OR (kind = 'reference' AND uri IS NOT NULL AND sha256 IS NULL))
);

CREATE TABLE associations (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    direction   TEXT NOT NULL CHECK (direction IN ('input', 'output')),
    position    INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    artifact_id INTEGER REFERENCES artifacts(id),
    entry       TEXT NOT NULL CHECK (json_valid(entry)),
    PRIMARY KEY (run_id, direction, position)
);
CREATE INDEX associations_artifact ON associations(artifact_id);

CREATE TABLE remote_history (
    id          INTEGER PRIMARY KEY,
    entity      TEXT NOT NULL CHECK (entity IN ('run', 'artifact')),
    entity_uuid TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('upload', 'download')),
    timestamp   TEXT NOT NULL,
    host        TEXT NOT NULL,
    path        TEXT NOT NULL,
    remote_id   TEXT
);
CREATE INDEX remote_history_entity ON remote_history(entity, entity_uuid);

CREATE TABLE sync_state (
    run_id          INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'uploading', 'synced', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at REAL,
    remote_path     TEXT,
    metrics_acked   INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL DEFAULT {NOW_UNIX},
    synced_at       TEXT
);
CREATE INDEX sync_state_state ON sync_state(state);

-- Every run that finishes (Complete or Error) is pending until synced, whatever code path
-- finished it: the SDK, the crash reaper, or someone's UPDATE.
CREATE TRIGGER runs_finished_pending AFTER UPDATE OF status ON runs
WHEN NEW.status IN ('Complete', 'Error') AND OLD.status = 'Running'
BEGIN
    INSERT INTO sync_state (run_id, state, updated_at) VALUES (NEW.id, 'pending', {NOW_UNIX})
    ON CONFLICT (run_id) DO UPDATE SET state = 'pending', next_attempt_at = NULL,
        last_error = NULL, updated_at = excluded.updated_at;
END;

-- Views: the common questions as one-liners.
CREATE VIEW run_hparams AS
SELECT r.id AS run_id, r.name AS run_name, r.alternative_name,
       substr(j.fullkey, 3) AS key, j.value AS value, j.type AS json_type
FROM runs r, json_tree(r.hparams) j
WHERE j.type NOT IN ('object', 'array') AND j.fullkey != '$';

CREATE VIEW metric_values AS
SELECT m.run_id, r.name AS run_name, r.alternative_name, m.seq, m.type,
       {TYPE_NORMALIZED} AS type_normalized,
       m.key, m.step, m.epoch, m.value, (m.value IS NULL) AS is_nan, m.timestamp
FROM metrics m JOIN runs r ON r.id = m.run_id;

CREATE VIEW metric_last AS
SELECT v.* FROM metric_values v
JOIN (SELECT run_id, type, key, MAX(seq) AS seq FROM metrics GROUP BY run_id, type, key) l
  ON l.run_id = v.run_id AND l.seq = v.seq;

CREATE VIEW metric_summary AS
SELECT m.run_id, r.name AS run_name, r.alternative_name, m.type,
       {TYPE_NORMALIZED} AS type_normalized, m.key,
       COUNT(*) AS n, MIN(m.value) AS min_value, MAX(m.value) AS max_value,
       SUM(m.value IS NULL) AS nan_count, MAX(m.step) AS last_step
FROM metrics m JOIN runs r ON r.id = m.run_id
GROUP BY m.run_id, m.type, m.key;
"""

# A run changed after it ended (run.description = ... or mark_output() after finish(),
# parse_from_dict(), rows flushed late by a forked worker, an UPDATE by hand) is a newer state
# of it: its generation goes up, so the server orders it after what it holds (an older upload
# still in flight is then stale), and it is pending again if it was synced, so the server gets
# the change. An upload in flight notices by itself: it marks a run synced only if the run is
# still as it sent it. (Not its name: the server fixes a run's name at its first upload.)
_BUMP = f"""
    UPDATE runs SET generation = generation + 1 WHERE id = {{run}};
    UPDATE sync_state SET state = 'pending', next_attempt_at = NULL, last_error = NULL,
        updated_at = {NOW_UNIX}
    WHERE run_id = {{run}} AND state = 'synced';
"""
_ENDED = "('Complete', 'Error')"
MIGRATION_2 = f"""
CREATE TRIGGER runs_edited_after_end AFTER UPDATE OF
    labels, description, hparams, status, start_timestamp, end_timestamp, metric_count ON runs
WHEN OLD.status IN {_ENDED} AND NEW.status IN {_ENDED}
 AND (OLD.labels IS NOT NEW.labels OR OLD.description IS NOT NEW.description
      OR OLD.hparams IS NOT NEW.hparams OR OLD.status IS NOT NEW.status
      OR OLD.start_timestamp IS NOT NEW.start_timestamp
      OR OLD.end_timestamp IS NOT NEW.end_timestamp OR OLD.metric_count IS NOT NEW.metric_count)
BEGIN{_BUMP.format(run="NEW.id")}END;

CREATE TRIGGER associations_added_after_end AFTER INSERT ON associations
WHEN (SELECT status FROM runs WHERE id = NEW.run_id) IN {_ENDED}
BEGIN{_BUMP.format(run="NEW.run_id")}END;

CREATE TRIGGER associations_removed_after_end AFTER DELETE ON associations
WHEN (SELECT status FROM runs WHERE id = OLD.run_id) IN {_ENDED}
BEGIN{_BUMP.format(run="OLD.run_id")}END;
"""

# Bundles across an air gap (docs/AIRGAP.md): a stable id for this store, the bundles it
# exported and how far each run went out in them (watermarks), and the bundles it imported.
MIGRATION_3 = """
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));

CREATE TABLE bundle_exports (
    sequence    INTEGER PRIMARY KEY,
    bundle_id   TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    path        TEXT NOT NULL,
    run_count   INTEGER NOT NULL,
    metric_rows INTEGER NOT NULL
);

CREATE TABLE bundle_watermarks (
    run_id        INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    rows_exported INTEGER NOT NULL,
    state         TEXT NOT NULL,
    sequence      INTEGER NOT NULL
);

CREATE TABLE bundle_blobs_exported (
    sha256   TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
);

CREATE TABLE bundle_imports (
    bundle_id    TEXT PRIMARY KEY,
    source_store TEXT NOT NULL,
    sequence     INTEGER NOT NULL,
    imported_at  TEXT NOT NULL,
    source_path  TEXT NOT NULL,
    run_count    INTEGER NOT NULL
);
CREATE INDEX bundle_imports_source ON bundle_imports(source_store, sequence);

CREATE TABLE bundle_run_origin (
    run_id       INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    source_store TEXT NOT NULL,
    sequence     INTEGER NOT NULL
);
"""

MIGRATIONS: list[str] = [MIGRATION_1, MIGRATION_2, MIGRATION_3]
