-- Append-only record of who changed what.

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT REFERENCES users(id) ON DELETE SET NULL,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT,
    details     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, created_at DESC);
CREATE INDEX audit_log_user_created ON audit_log (user_id, created_at DESC);
