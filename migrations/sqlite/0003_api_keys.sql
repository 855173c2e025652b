-- API keys: the SHA-256 of each key (never the key), the tenant and role it grants, and
-- when it expires or was revoked. A key's id is the first 12 hex digits of its hash.
-- Times are microseconds since the Unix epoch.

CREATE TABLE api_keys (
    key_id       TEXT    NOT NULL PRIMARY KEY,
    key_hash     BLOB    NOT NULL,
    tenant_id    TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    label        TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    expire_time  INTEGER,
    revoke_time  INTEGER
) WITHOUT ROWID;

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
