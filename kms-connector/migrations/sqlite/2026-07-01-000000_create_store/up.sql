-- kms-connector metadata store, SQLite flavour. Keep in step with ../../postgres: same tables,
-- columns, constraints and indexes; only the types differ (BLOB/BYTEA, the audit sequence).
-- Times are BIGINT Unix milliseconds, UTC. Enumerations are their wire names as TEXT.

CREATE TABLE instances (
    instance_id           TEXT    NOT NULL PRIMARY KEY,
    kind                  TEXT    NOT NULL CHECK (kind IN ('software', 'hardware', 'external')),
    name                  TEXT    NOT NULL,
    spec                  TEXT    NOT NULL,  -- JSON, non-secret settings only
    connection_state      TEXT    NOT NULL,
    connection_error_code TEXT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL
);

CREATE TABLE keys (
    key_id                          TEXT    NOT NULL PRIMARY KEY,
    account_id                      TEXT    NOT NULL,
    region                          TEXT    NOT NULL,
    instance_id                     TEXT    NOT NULL REFERENCES instances (instance_id),
    key_spec                        TEXT    NOT NULL,
    key_usage                       TEXT    NOT NULL,
    origin                          TEXT    NOT NULL,
    protection_level                TEXT    NOT NULL,
    key_state                       TEXT    NOT NULL,
    description                     TEXT    NOT NULL,
    creator                         TEXT    NOT NULL,
    created_at                      BIGINT  NOT NULL,
    delete_date                     BIGINT,
    deletion_protection             BOOLEAN NOT NULL DEFAULT FALSE,
    deletion_protection_description TEXT,
    external_key_id                 TEXT,
    primary_key_version             TEXT    NOT NULL,
    automatic_rotation              TEXT    NOT NULL,
    rotation_interval_secs          BIGINT,
    last_rotation_date              BIGINT,
    next_rotation_date              BIGINT,
    material_expire_time            BIGINT,
    -- A protected key is never pending deletion (the store also checks it in its WHERE clauses).
    CHECK (NOT (deletion_protection AND key_state = 'PendingDeletion'))
);
CREATE INDEX keys_by_account ON keys (account_id, region, created_at, key_id);
CREATE INDEX keys_by_instance ON keys (instance_id);
CREATE INDEX keys_by_external_key ON keys (external_key_id);
CREATE INDEX keys_by_delete_date ON keys (key_state, delete_date);
CREATE INDEX keys_by_next_rotation ON keys (automatic_rotation, next_rotation_date);

CREATE TABLE key_versions (
    -- Ciphertext blobs start with these 36 bytes and Decrypt routes on them: globally unique.
    key_version_id  TEXT   NOT NULL PRIMARY KEY CHECK (length(key_version_id) = 36),
    key_id          TEXT   NOT NULL REFERENCES keys (key_id),
    created_at      BIGINT NOT NULL,
    sealed_material BLOB,  -- software keys: material sealed by the caller under the root key
    backend_ref     TEXT   -- hardware keys: e.g. the HSM object label
);
CREATE INDEX key_versions_by_key ON key_versions (key_id, created_at);

CREATE TABLE aliases (
    account_id TEXT   NOT NULL,
    region     TEXT   NOT NULL,
    alias_name TEXT   NOT NULL,
    key_id     TEXT   NOT NULL REFERENCES keys (key_id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, region, alias_name)
);
CREATE INDEX aliases_by_key ON aliases (key_id, alias_name);

CREATE TABLE tags (
    key_id    TEXT NOT NULL REFERENCES keys (key_id),
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);

CREATE TABLE key_policies (
    key_id      TEXT NOT NULL REFERENCES keys (key_id),
    policy_name TEXT NOT NULL,
    policy      TEXT NOT NULL,  -- JSON
    PRIMARY KEY (key_id, policy_name)
);

-- key_id is not a foreign key: events outlive their keys.
CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, the tie-breaker
    event_id   TEXT   NOT NULL UNIQUE,
    time       BIGINT NOT NULL,
    request_id TEXT   NOT NULL,
    principal  TEXT   NOT NULL,
    account_id TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    key_id     TEXT,
    result     TEXT   NOT NULL,
    source_ip  TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_by_time ON audit_events (time);
CREATE INDEX audit_events_by_key ON audit_events (key_id, time);
CREATE INDEX audit_events_by_action ON audit_events (action, time);

-- OpenAPI SignatureNonce replay protection, shared by every replica.
CREATE TABLE request_nonces (
    access_key_id TEXT   NOT NULL,
    nonce         TEXT   NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (access_key_id, nonce)
);
CREATE INDEX request_nonces_by_expiry ON request_nonces (expires_at);
