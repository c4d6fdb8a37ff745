-- A clean batch of ops in one statement (see `bulk.py`): the client side of a round trip
-- per statement was a third of the server's CPU. The ops call the same functions as one op
-- at a time does, so the rules live in one place.
--
-- `p_ops` is JSON text (ASCII, so its input can never fail): an array of ops, each an array
-- whose first element names it (b bind, l list, c claim, r release, o open, a add, x close).
-- The locks (`mb_lock`'s arguments) are taken first. The result is a JSON array with one
-- result per op, or NULL if any statement failed: then nothing of the ops is left (their
-- block is rolled back) and the caller runs them again one by one, each in a savepoint.
CREATE FUNCTION mb_batch(p_ops text, p_origin text, p_max_messages integer, p_max_bytes bigint,
                         p_alloc_apps text[], p_np_apps text[], p_np_names text[],
                         p_mb_apps text[], p_mb_ids text[], p_retire_apps text[],
                         p_retire_ids text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    op jsonb;
    results jsonb[] := '{}';
    r record;
    t text;
BEGIN
    PERFORM mb_lock(p_alloc_apps, p_np_apps, p_np_names, p_mb_apps, p_mb_ids, p_retire_apps,
                    p_retire_ids);
    BEGIN
        FOR op IN SELECT jsonb_array_elements(p_ops::jsonb) LOOP
            CASE op->>0
            WHEN 'b' THEN
                INSERT INTO usage_client_versions
                       (app_id, side, connect_time, implementation, version)
                VALUES (op->>1, op->>2, (op->>3)::double precision, op->>4, op->>5);
                results := results || 'null'::jsonb;
            WHEN 'l' THEN
                results := results || to_jsonb(ARRAY(
                    SELECT name FROM nameplates WHERE app_id = op->>1 ORDER BY name));
            WHEN 'c' THEN
                SELECT * INTO r FROM mb_claim(op->>1, op->>2, op->>3,
                                              (op->>4)::double precision, op->>5);
                results := results || jsonb_build_array(r.o_mid, r.error);
            WHEN 'r' THEN
                results := results || coalesce(mb_release(op->>1, op->>2, op->>3), 'null');
            WHEN 'o' THEN
                t := mb_open_side(op->>1, op->>2, op->>3, (op->>4)::double precision, false);
                IF t IS NOT NULL THEN
                    results := results || jsonb_build_array(t);
                ELSE
                    results := results || jsonb_build_array(NULL, coalesce((
                        SELECT jsonb_agg(jsonb_build_array(m.seq, m.side, m.phase, m.body,
                                                           m.server_rx, m.msg_id) ORDER BY m.seq)
                          FROM (SELECT * FROM messages
                                 WHERE app_id = op->>1 AND mailbox_id = op->>2
                                 ORDER BY seq LIMIT (op->>5)::integer) AS m), '[]'));
                END IF;
            WHEN 'a' THEN
                SELECT * INTO r FROM mb_add(op->>1, op->>2, op->>3, op->>4, op->>5,
                                            (op->>6)::double precision, op->7, p_origin,
                                            p_max_messages, p_max_bytes);
                results := results || jsonb_build_array(r.o_seq, r.o_full);
            WHEN 'x' THEN
                SELECT * INTO r FROM mb_close(op->>1, op->>2, op->>3, op->>4,
                                              (op->>5)::double precision, (op->>6)::boolean);
                results := results || jsonb_build_array(r.error, r.retired);
            END CASE;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    RETURN to_jsonb(results);
END $$;

-- Before a batch that allocates: its locks, then the names in use in each allocating app
-- (read after the locks are granted: each statement of a volatile function has a new
-- snapshot), as {app: [name, ...]}.
CREATE FUNCTION mb_lock_and_taken(p_alloc_apps text[], p_np_apps text[], p_np_names text[],
                                  p_mb_apps text[], p_mb_ids text[], p_retire_apps text[],
                                  p_retire_ids text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM mb_lock(p_alloc_apps, p_np_apps, p_np_names, p_mb_apps, p_mb_ids, p_retire_apps,
                    p_retire_ids);
    RETURN (SELECT coalesce(jsonb_object_agg(a.app, ARRAY(
                SELECT name FROM nameplates WHERE app_id = a.app)), '{}')
              FROM (SELECT DISTINCT unnest(p_alloc_apps) AS app) AS a);
END $$;
