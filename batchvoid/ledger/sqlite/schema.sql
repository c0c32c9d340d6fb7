-- The SQLite ledger's schema (version in meta.schema_version; migrations in __init__.py).
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    job_file TEXT NOT NULL,
    job_sha256 TEXT NOT NULL,
    config_fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    items INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    simulated INTEGER  -- 1: a rehearsal on the simulator; 0: real; NULL: recorded before version 2
);
-- Where each profile of a job sends: a real run never inherits another target's outcomes.
CREATE TABLE IF NOT EXISTS targets (
    job INTEGER NOT NULL REFERENCES jobs (id),
    profile TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (job, profile)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id),
    provider TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    void_date TEXT,
    company_id TEXT,
    store TEXT,
    metadata TEXT,
    -- NULL in the three below is what an item is recorded with since version 5, so that a
    -- new job writes a third less (1M rows: 243 MB -> 128 MB): its key is derived from the
    -- job id, provider and invoice id (batchvoid.keys, a function that never changes), its
    -- created_at is its job's, and its updated_at stays NULL until its first change.
    idempotency_key TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    reference TEXT,
    created_at TEXT,
    updated_at TEXT,
    run TEXT,  -- the run that recorded its last outcome or release (runs.run_id)
    UNIQUE (job, provider, invoice_id)
);
CREATE INDEX IF NOT EXISTS items_todo ON items (job, provider, line)
    WHERE state IN ('pending', 'in_flight');
-- Items per job, provider and state: what status, summaries and the start of a run read, not
-- the items. An ingest writes a new job's; the trigger keeps them in step with every change of
-- an item's state, in the same transaction. (An index on the state cost a third of recording a
-- big job and a third of each claim's and outcome's write: measured, with the counts kept.)
CREATE TABLE IF NOT EXISTS item_counts (
    job INTEGER NOT NULL REFERENCES jobs (id),
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (job, provider, state)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS items_counted AFTER UPDATE OF state ON items
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE item_counts SET n = n - 1 WHERE job = OLD.job AND provider = OLD.provider AND state = OLD.state;
    INSERT INTO item_counts VALUES (NEW.job, NEW.provider, NEW.state, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TABLE IF NOT EXISTS attempts (
    item INTEGER NOT NULL REFERENCES items (id),
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    latency_ms INTEGER,
    detail TEXT,
    run TEXT  -- the run that sent it (runs.run_id); NULL: before version 3, or a redrive's copy
);
CREATE TABLE IF NOT EXISTS duplicates (
    job INTEGER NOT NULL REFERENCES jobs (id),
    line INTEGER NOT NULL,
    provider TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    first_line INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    job_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL
);
-- Every run of a job, for the audit: who, from where, with what, sending where, and how it ended.
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id),
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    command TEXT NOT NULL,  -- with no secret in it
    simulated INTEGER NOT NULL,
    targets TEXT NOT NULL,  -- JSON: profile -> base URL and account
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_status INTEGER,  -- NULL: running, or died (kill -9) before it could say
    counts TEXT,  -- JSON: provider -> state -> items, when it ended
    requests TEXT,  -- JSON: provider -> requests sent
    throttled TEXT  -- JSON: provider -> 429 answers
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, started_at);
