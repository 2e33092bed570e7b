-- Embeddings (raw little-endian float32, the layout libSQL's F32_BLOB and sqlite-vec share),
-- evaluation runs and their per-test results.

CREATE TABLE prompt_embeddings (
    id         INTEGER PRIMARY KEY,
    prompt_id  TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    embedding  F32_BLOB(384) NOT NULL CHECK (typeof(embedding) = 'blob' AND length(embedding) = 384 * 4),
    model      TEXT NOT NULL DEFAULT 'all-MiniLM-L6-v2',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (prompt_id, model)
);

CREATE TABLE evaluations (
    id            TEXT PRIMARY KEY,
    prompt_id     TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    overall_score REAL CHECK (overall_score IS NULL OR (overall_score >= 0 AND overall_score <= 1)),
    provider      TEXT,
    model         TEXT,
    config        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
    error         TEXT,
    started_at    TEXT,
    completed_at  TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX evaluations_prompt_created ON evaluations (prompt_id, created_at DESC);

CREATE TABLE test_results (
    id            TEXT PRIMARY KEY,
    evaluation_id TEXT NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    test_name     TEXT,
    input         TEXT,
    output        TEXT,
    expected      TEXT,
    score         REAL CHECK (score IS NULL OR (score >= 0 AND score <= 1)),
    latency_ms    INTEGER CHECK (latency_ms IS NULL OR latency_ms >= 0),
    passed        INTEGER NOT NULL DEFAULT 0 CHECK (passed IN (0, 1)),
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX test_results_evaluation_score ON test_results (evaluation_id, score DESC);
