-- Turn receipts: a turn request's idempotency key, a fingerprint of the request and the
-- outcome its client was told, written in the turn's own transaction. A retry with the same
-- key on the session gets that outcome instead of a second turn. Deleted with the session,
-- and swept after limits.idempotency_window. Times are microseconds since the Unix epoch.

CREATE TABLE turn_receipts (
    tenant_id        TEXT    NOT NULL,
    session_id       TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    turn_id          TEXT    NOT NULL,
    outcome          TEXT    NOT NULL,
    create_time      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, session_id, idempotency_key)
) WITHOUT ROWID;

CREATE INDEX turn_receipts_age ON turn_receipts (create_time);
