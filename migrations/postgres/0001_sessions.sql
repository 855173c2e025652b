-- Sessions, their append-only histories, and the tool calls a paused turn waits for.
-- Every row carries a tenant id, so tenants are isolated in the data model itself.
-- Times are microseconds since the Unix epoch.

CREATE TABLE sessions (
    tenant_id      TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    version        BIGINT NOT NULL,
    create_time    BIGINT NOT NULL,
    update_time    BIGINT NOT NULL,
    expire_time    BIGINT,
    message_count  BIGINT NOT NULL,
    pending_turn   TEXT,
    pending_steps  BIGINT NOT NULL DEFAULT 0,
    -- Settings, context, tools, labels and usage as one JSON document.
    body           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
);

CREATE INDEX sessions_expiry ON sessions (expire_time) WHERE expire_time IS NOT NULL;

CREATE TABLE messages (
    tenant_id      TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    idx            BIGINT NOT NULL,
    role           TEXT    NOT NULL,
    content        TEXT    NOT NULL,
    tool_calls     TEXT,
    tool_call_id   TEXT    NOT NULL,
    tool_name      TEXT    NOT NULL,
    is_error       BOOLEAN NOT NULL,
    create_time    BIGINT NOT NULL,
    token_count    BIGINT NOT NULL,
    turn_id        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, session_id, idx)
);

CREATE TABLE pending_tool_calls (
    tenant_id      TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    position       BIGINT NOT NULL,
    call_id        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    arguments      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, session_id, position)
);
