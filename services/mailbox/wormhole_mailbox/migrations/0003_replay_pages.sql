-- Pages of a replay bounded in octets as well as in messages (`paging.py`): a mailbox whose
-- byte cap is raised may hold hundreds of megabytes, and a page counted in messages alone
-- could pass what one opener should hold, and a batch's one jsonb answer PostgreSQL's limit.

-- One page of mailbox `p_mid`'s messages after seq `p_after`: the longest run of them whose
-- octets (body, side, phase, and id as JSON text) add up to at most `p_octets`, at most
-- `p_messages` long; the first message alone if it is bigger and `p_at_least_one`. Returns
-- [rows, more]: rows as [seq, side, phase, body, server_rx, msg_id]; more is true if messages
-- follow the page. Octet lengths of stored text are read from its header (no detoasting),
-- and the bodies of messages past the page are never read. (PL/pgSQL: its plan is cached.)
CREATE FUNCTION mb_page(p_app text, p_mid text, p_after bigint, p_octets bigint,
                        p_messages integer, p_at_least_one boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_array(
               coalesce(jsonb_agg(jsonb_build_array(c.seq, c.side, c.phase, c.body,
                                                    c.server_rx, c.msg_id) ORDER BY c.seq)
                        FILTER (WHERE c.fits), '[]'),
               coalesce(bool_or(NOT c.fits), false))
      FROM (SELECT w.*, w.n <= p_messages
                        AND (w.total <= p_octets OR (w.n = 1 AND p_at_least_one)) AS fits
              FROM (SELECT l.*,
                           row_number() OVER (ORDER BY l.seq) AS n,
                           sum(octet_length(l.body) + octet_length(l.side)
                               + octet_length(l.phase) + octet_length(l.msg_id::text))
                               OVER (ORDER BY l.seq ROWS UNBOUNDED PRECEDING) AS total
                      FROM (SELECT * FROM messages
                             WHERE app_id = p_app AND mailbox_id = p_mid AND seq > p_after
                             ORDER BY seq LIMIT p_messages + 1) AS l) AS w) AS c);
END $$;

-- `mb_batch` as before, but an open answers with `mb_page`: op ["o", app, mailbox, side, now,
-- messages, octets], octets being the open's share of what the batch may answer with.
CREATE OR REPLACE FUNCTION mb_batch(p_ops text, p_origin text, p_max_messages integer,
                                    p_max_bytes bigint, p_alloc_apps text[], p_np_apps text[],
                                    p_np_names text[], p_mb_apps text[], p_mb_ids text[],
                                    p_retire_apps text[], p_retire_ids text[]) RETURNS jsonb
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
                    results := results || jsonb_build_array(NULL, mb_page(
                        op->>1, op->>2, 0, (op->>6)::bigint, (op->>5)::integer, false));
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
