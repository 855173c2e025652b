-- The newest sessions of a tenant (MCP's resource list) come from one ordered read of
-- this index rather than a walk over every session.

CREATE INDEX sessions_newest ON sessions (tenant_id, update_time);
