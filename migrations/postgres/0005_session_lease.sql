-- A turn's lease in one round trip: waits for the session's advisory lock (session-level, so
-- it outlives this call's transaction and is released by pg_advisory_unlock or when the
-- connection closes), then reads what a replica checks its cached copy of the session
-- against. The function is VOLATILE, so its read takes a snapshot of its own after the lock
-- is granted and sees every turn committed under the lease before; a read in the calling
-- statement itself would use the snapshot taken before the wait. No row: no such session.

CREATE FUNCTION contextd_lease_session(lock_key TEXT, tenant TEXT, session TEXT)
RETURNS TABLE (version BIGINT, create_time BIGINT, message_count BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_lock(hashtextextended(lock_key, 0));
    RETURN QUERY
        SELECT s.version, s.create_time, s.message_count FROM sessions s
        WHERE s.tenant_id = tenant AND s.session_id = session;
END
$$;
