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
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    reference TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    run TEXT,  -- the run that recorded its last outcome or release (runs.run_id)
    UNIQUE (job, provider, invoice_id)
);
CREATE INDEX IF NOT EXISTS items_todo ON items (job, provider, line)
    WHERE state IN ('pending', 'in_flight');
-- Counts by state (status, summaries, the start of a resumed run) read this, not the table.
CREATE INDEX IF NOT EXISTS items_state ON items (job, state, provider);
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
