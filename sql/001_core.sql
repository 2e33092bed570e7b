-- Users, prompts and their history: the product data this node was designed for.
-- TEXT ids, ISO-8601 timestamps (UTC, 'Z'), JSON stored as TEXT and checked with json_valid.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    username    TEXT UNIQUE,
    display_name TEXT,
    settings    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE prompts (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    content     TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    parent_id   TEXT REFERENCES prompts(id) ON DELETE CASCADE,
    status      TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'archived')),
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    deleted_at  TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- "My prompts by status, newest first" is the dashboard's main query.
CREATE INDEX prompts_user_status_created ON prompts (user_id, status, created_at DESC);
-- Almost every read filters out soft-deleted rows; a partial index keeps them out of the tree.
CREATE INDEX prompts_live ON prompts (user_id, updated_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX prompts_parent ON prompts (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE prompt_versions (
    id             TEXT PRIMARY KEY,
    prompt_id      TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    version_number INTEGER NOT NULL CHECK (version_number >= 1),
    diff_content   TEXT NOT NULL,
    author_id      TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (prompt_id, version_number)
);

CREATE TABLE prompt_tags (
    prompt_id  TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    tag_name   TEXT NOT NULL CHECK (length(tag_name) BETWEEN 1 AND 64),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (prompt_id, tag_name)
);
CREATE INDEX prompt_tags_tag ON prompt_tags (tag_name);

CREATE TABLE prompt_templates (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    content     TEXT NOT NULL,
    variables   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(variables) AND json_type(variables) = 'array'),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
