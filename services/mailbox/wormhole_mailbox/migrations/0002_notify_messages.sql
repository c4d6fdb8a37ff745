-- Cross-process delivery: every stored message is announced on channel
-- `wormhole_mailbox_messages` at commit. The payload only identifies the row
-- ({"o": origin process, "s": seq, "a": app, "m": mailbox}); app and mailbox are left out
-- when they would not fit NOTIFY's 8000-byte limit, and listeners then look the row up.

DROP FUNCTION mb_add(text, text, text, text, text, double precision, jsonb);

CREATE FUNCTION mb_add(p_app text, p_mid text, p_side text, p_phase text, p_body text,
                       p_server_rx double precision, p_msg_id jsonb, p_origin text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
    payload text;
BEGIN
    UPDATE mailboxes SET updated = p_server_rx WHERE app_id = p_app AND id = p_mid;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO messages (app_id, mailbox_id, side, phase, body, server_rx, msg_id)
    VALUES (p_app, p_mid, p_side, p_phase, p_body, p_server_rx, p_msg_id)
    RETURNING seq INTO new_seq;
    payload := jsonb_build_object('o', p_origin, 's', new_seq, 'a', p_app, 'm', p_mid)::text;
    IF octet_length(payload) > 7900 THEN
        payload := jsonb_build_object('o', p_origin, 's', new_seq)::text;
    END IF;
    PERFORM pg_notify('wormhole_mailbox_messages', payload);
    RETURN new_seq;
END $$;

-- Allocation across processes: take the app's allocation lock, then read the names that
-- exist. Two statements, so the read's snapshot is taken after the lock is granted (in one
-- statement the snapshot predates the wait and misses a name another process just added).
CREATE FUNCTION mb_lock_and_list(p_app text, p_namespace integer) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_namespace, hashtext(p_app));
    RETURN ARRAY(SELECT name FROM nameplates WHERE app_id = p_app);
END $$;
