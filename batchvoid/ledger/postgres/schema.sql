-- The PostgreSQL ledger's schema, in the schema `batchvoid` of the database the URL names
-- (version in meta.schema_version). The tables of the SQLite ledger, plus what many workers
-- sharing one job need: who owns each claimed item (worker_id) and by which claim (the
-- fencing epoch), the workers with their leases, and one limiter row per provider account.
-- Version 2 added the run records: the runs table, and the run id on items and attempts.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id BIGSERIAL PRIMARY KEY,
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
    simulated INTEGER
);
CREATE TABLE IF NOT EXISTS targets (
    job BIGINT NOT NULL REFERENCES jobs (id),
    profile TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (job, profile)
);
CREATE TABLE IF NOT EXISTS items (
    id BIGSERIAL PRIMARY KEY,
    job BIGINT NOT NULL REFERENCES jobs (id),
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
    worker_id BIGINT,  -- the worker that holds the item's claim; NULL: claimable if unfinished
    claim INTEGER NOT NULL DEFAULT 0,  -- bumped by every claim: a write carries the one it holds
    run TEXT,  -- the run that recorded its last outcome or release (runs.run_id)
    UNIQUE (job, provider, invoice_id)
);
CREATE INDEX IF NOT EXISTS items_claimable ON items (job, provider, line)
    WHERE worker_id IS NULL AND state IN ('pending', 'in_flight');
CREATE INDEX IF NOT EXISTS items_owned ON items (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_state ON items (job, state, provider);
CREATE TABLE IF NOT EXISTS attempts (
    item BIGINT NOT NULL REFERENCES items (id),
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    latency_ms INTEGER,
    detail TEXT,
    worker_id BIGINT,
    run TEXT  -- the run that sent it (runs.run_id); NULL: before version 2, or a redrive's copy
);
CREATE TABLE IF NOT EXISTS duplicates (
    job BIGINT NOT NULL REFERENCES jobs (id),
    line INTEGER NOT NULL,
    provider TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    first_line INTEGER NOT NULL
);
-- One row per `batchvoid run` process that joined a job: its lease is in the database's clock.
CREATE TABLE IF NOT EXISTS workers (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    lease_until TIMESTAMPTZ NOT NULL,
    state TEXT NOT NULL DEFAULT 'live',  -- live, left (exited), dead (its lease ran out)
    ended_at TIMESTAMPTZ,
    done INTEGER NOT NULL DEFAULT 0  -- items it brought to a final state
);
CREATE INDEX IF NOT EXISTS workers_live ON workers (job_id) WHERE state = 'live';
-- The shared pace of one provider account, for every worker and every job sending to it:
-- a GCRA schedule (tat, in the database's epoch seconds) and the shared 429 back-pressure.
CREATE TABLE IF NOT EXISTS limiter (
    key TEXT PRIMARY KEY,
    tat DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    adaptive_interval DOUBLE PRECISION,  -- seconds between sends after a 429; NULL: none learned
    ceiling DOUBLE PRECISION,  -- the rate that last drew a 429
    decreased_at DOUBLE PRECISION NOT NULL DEFAULT 0  -- slots before this paid for their 429 already
);
-- Every run of a job, for the audit: each worker's `batchvoid run` process is one. Who, from
-- where, with what, sending where, and how it ended (NULL end: running, or died: see its worker).
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job BIGINT NOT NULL REFERENCES jobs (id),
    worker_id BIGINT,  -- the worker it ran as (workers.id)
    username TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    command TEXT NOT NULL,  -- with no secret in it
    simulated BOOLEAN NOT NULL,
    targets JSONB NOT NULL,  -- profile -> base URL and account
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_status INTEGER,  -- NULL: running, or died (kill -9) before it could say
    counts JSONB,  -- provider -> state -> items, when it ended
    requests JSONB,  -- provider -> requests sent
    throttled JSONB  -- provider -> 429 answers
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, started_at);
-- A run's 429s, counted when it ends: few rows, so the index costs the other attempts nothing.
CREATE INDEX IF NOT EXISTS attempts_throttled ON attempts (run) WHERE http_status = 429;
