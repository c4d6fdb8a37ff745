-- Mailbox server state and usage records.
-- Every state change is one function call inside the caller's transaction. A writing
-- transaction first takes the advisory locks of everything it touches in one global order
-- (`mb_lock`, at the end), so several processes share the tables without deadlocks.

CREATE TABLE mailboxes (
    app_id        text             NOT NULL,
    id            text             NOT NULL,
    for_nameplate boolean          NOT NULL,
    updated       double precision NOT NULL,
    crowded       boolean          NOT NULL DEFAULT false,
    message_count integer          NOT NULL DEFAULT 0,  -- for the size limits in `mb_add`
    message_bytes bigint           NOT NULL DEFAULT 0,  -- octets of the bodies
    PRIMARY KEY (app_id, id)
);
CREATE INDEX mailboxes_updated ON mailboxes (updated);

CREATE TABLE mailbox_sides (
    app_id     text             NOT NULL,
    mailbox_id text             NOT NULL,
    side       text             NOT NULL,
    opened     boolean          NOT NULL,
    added      double precision NOT NULL,
    mood       text,
    PRIMARY KEY (app_id, mailbox_id, side),
    FOREIGN KEY (app_id, mailbox_id) REFERENCES mailboxes ON DELETE CASCADE
);

CREATE TABLE nameplates (
    app_id     text    NOT NULL,
    name       text    NOT NULL,
    mailbox_id text    NOT NULL,
    crowded    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (app_id, name),
    FOREIGN KEY (app_id, mailbox_id) REFERENCES mailboxes ON DELETE CASCADE
);
CREATE INDEX nameplates_mailbox ON nameplates (app_id, mailbox_id);

CREATE TABLE nameplate_sides (
    app_id  text             NOT NULL,
    name    text             NOT NULL,
    side    text             NOT NULL,
    claimed boolean          NOT NULL,
    added   double precision NOT NULL,
    PRIMARY KEY (app_id, name, side),
    FOREIGN KEY (app_id, name) REFERENCES nameplates ON DELETE CASCADE
);

CREATE TABLE messages (
    seq        bigserial        PRIMARY KEY,
    app_id     text             NOT NULL,
    mailbox_id text             NOT NULL,
    side       text             NOT NULL,
    phase      text             NOT NULL,
    body       text             NOT NULL,
    server_rx  double precision NOT NULL,
    msg_id     jsonb            NOT NULL,
    FOREIGN KEY (app_id, mailbox_id) REFERENCES mailboxes ON DELETE CASCADE
);
CREATE INDEX messages_mailbox ON messages (app_id, mailbox_id, seq);

-- Usage records (docs/mailbox-protocol.md §7).
CREATE TABLE usage_nameplates (
    id           bigserial PRIMARY KEY,
    app_id       text             NOT NULL,
    started      double precision NOT NULL,
    waiting_time double precision,
    total_time   double precision NOT NULL,
    result       text             NOT NULL
);
CREATE INDEX usage_nameplates_app_started ON usage_nameplates (app_id, started);

CREATE TABLE usage_mailboxes (
    id            bigserial PRIMARY KEY,
    app_id        text             NOT NULL,
    for_nameplate boolean          NOT NULL,
    started       double precision NOT NULL,
    waiting_time  double precision,
    total_time    double precision NOT NULL,
    result        text             NOT NULL
);
CREATE INDEX usage_mailboxes_app_started ON usage_mailboxes (app_id, started);
CREATE INDEX usage_mailboxes_result ON usage_mailboxes (result);

CREATE TABLE usage_client_versions (
    id             bigserial PRIMARY KEY,
    app_id         text             NOT NULL,
    side           text             NOT NULL,
    connect_time   double precision NOT NULL,
    implementation text,
    version        text
);
CREATE INDEX usage_client_versions_time ON usage_client_versions (connect_time);
CREATE INDEX usage_client_versions_app_time ON usage_client_versions (app_id, connect_time);

-- One row per server process (several may share the database).
CREATE TABLE usage_current (
    server_id             text PRIMARY KEY,
    rebooted              double precision NOT NULL,
    updated               double precision NOT NULL,
    blur_time             double precision,
    connections_websocket integer          NOT NULL
);

-- Side rows of a retired nameplate or mailbox, for the usage record (computed in Python).
CREATE FUNCTION mb_side_summary(added double precision[], moods text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('added', to_jsonb(added), 'moods', to_jsonb(moods))
$$;

-- Open mailbox `mid` for `side` (creating a standalone mailbox if needed). Returns NULL on
-- success, 'crowded' when a third side is refused (not registered, but remembered).
CREATE FUNCTION mb_open_side(p_app text, p_mid text, p_side text, p_now double precision,
                             p_for_nameplate boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    others integer;
BEGIN
    INSERT INTO mailboxes (app_id, id, for_nameplate, updated)
    VALUES (p_app, p_mid, p_for_nameplate, p_now)
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM mailboxes WHERE app_id = p_app AND id = p_mid FOR UPDATE;
    UPDATE mailbox_sides SET opened = true
     WHERE app_id = p_app AND mailbox_id = p_mid AND side = p_side;
    IF NOT FOUND THEN
        SELECT count(*) INTO others FROM mailbox_sides
         WHERE app_id = p_app AND mailbox_id = p_mid;
        IF others >= 2 THEN
            UPDATE mailboxes SET crowded = true WHERE app_id = p_app AND id = p_mid;
            RETURN 'crowded';
        END IF;
        INSERT INTO mailbox_sides (app_id, mailbox_id, side, opened, added)
        VALUES (p_app, p_mid, p_side, true, p_now);
    END IF;
    UPDATE mailboxes SET updated = p_now WHERE app_id = p_app AND id = p_mid;
    RETURN NULL;
END $$;

-- claim: returns (mailbox_id, error); error is 'reclaimed' or 'crowded'.
CREATE FUNCTION mb_claim(p_app text, p_name text, p_side text, p_now double precision,
                         p_new_mid text, OUT o_mid text, OUT error text)
LANGUAGE plpgsql AS $$
DECLARE
    was_claimed boolean;
    others integer;
BEGIN
    SELECT n.mailbox_id INTO o_mid FROM nameplates n
     WHERE n.app_id = p_app AND n.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO mailboxes (app_id, id, for_nameplate, updated)
        VALUES (p_app, p_new_mid, true, p_now);
        INSERT INTO nameplates (app_id, name, mailbox_id) VALUES (p_app, p_name, p_new_mid)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            o_mid := p_new_mid;
        ELSE
            -- another process created it first: use theirs
            DELETE FROM mailboxes WHERE app_id = p_app AND id = p_new_mid;
            SELECT n.mailbox_id INTO o_mid FROM nameplates n
             WHERE n.app_id = p_app AND n.name = p_name FOR UPDATE;
        END IF;
    END IF;
    SELECT s.claimed INTO was_claimed FROM nameplate_sides s
     WHERE s.app_id = p_app AND s.name = p_name AND s.side = p_side;
    IF FOUND AND NOT was_claimed THEN
        error := 'reclaimed';
        RETURN;
    END IF;
    IF NOT FOUND THEN
        SELECT count(*) INTO others FROM nameplate_sides s
         WHERE s.app_id = p_app AND s.name = p_name;
        IF others >= 2 THEN
            UPDATE nameplates SET crowded = true WHERE app_id = p_app AND name = p_name;
            UPDATE mailboxes SET crowded = true WHERE app_id = p_app AND id = o_mid;
            error := 'crowded';
            RETURN;
        END IF;
    END IF;
    error := mb_open_side(p_app, o_mid, p_side, p_now, true);
    IF error IS NOT NULL THEN
        UPDATE nameplates SET crowded = true WHERE app_id = p_app AND name = p_name;
        RETURN;
    END IF;
    INSERT INTO nameplate_sides (app_id, name, side, claimed, added)
    VALUES (p_app, p_name, p_side, true, p_now)
    ON CONFLICT DO NOTHING;
END $$;

-- release: returns the retired nameplate's summary when the last claimant left, else NULL.
CREATE FUNCTION mb_release(p_app text, p_name text, p_side text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    summary jsonb;
BEGIN
    PERFORM 1 FROM nameplates WHERE app_id = p_app AND name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE nameplate_sides SET claimed = false
     WHERE app_id = p_app AND name = p_name AND side = p_side AND claimed;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM nameplate_sides
                WHERE app_id = p_app AND name = p_name AND claimed) THEN
        RETURN NULL;
    END IF;
    SELECT mb_side_summary(array_agg(added ORDER BY added), NULL)
           || jsonb_build_object('crowded', (SELECT crowded FROM nameplates
                                              WHERE app_id = p_app AND name = p_name))
      INTO summary
      FROM nameplate_sides WHERE app_id = p_app AND name = p_name;
    DELETE FROM nameplates WHERE app_id = p_app AND name = p_name;
    RETURN summary;
END $$;

-- add: store one message; returns its seq, or NULL: when the mailbox no longer exists, or
-- with `o_full` when it holds `p_max_messages` messages already or the body would take its
-- bodies past `p_max_bytes` octets. Nothing is stored then.
-- Every stored message is announced on channel `wormhole_mailbox_messages` at commit, for
-- other processes' subscribers. The payload only identifies the row ({"o": origin process,
-- "s": seq, "a": app, "m": mailbox}); app and mailbox are left out when they would not fit
-- NOTIFY's 8000-byte limit, and listeners then look the row up.
CREATE FUNCTION mb_add(p_app text, p_mid text, p_side text, p_phase text, p_body text,
                       p_server_rx double precision, p_msg_id jsonb, p_origin text,
                       p_max_messages integer, p_max_bytes bigint,
                       OUT o_seq bigint, OUT o_full boolean)
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    o_full := false;
    UPDATE mailboxes SET updated = p_server_rx, message_count = message_count + 1,
                         message_bytes = message_bytes + octet_length(p_body)
     WHERE app_id = p_app AND id = p_mid AND message_count < p_max_messages
       AND message_bytes + octet_length(p_body) <= p_max_bytes;
    IF NOT FOUND THEN
        o_full := EXISTS (SELECT 1 FROM mailboxes WHERE app_id = p_app AND id = p_mid);
        RETURN;
    END IF;
    INSERT INTO messages (app_id, mailbox_id, side, phase, body, server_rx, msg_id)
    VALUES (p_app, p_mid, p_side, p_phase, p_body, p_server_rx, p_msg_id)
    RETURNING seq INTO o_seq;
    payload := jsonb_build_object('o', p_origin, 's', o_seq, 'a', p_app, 'm', p_mid)::text;
    IF octet_length(payload) > 7900 THEN
        payload := jsonb_build_object('o', p_origin, 's', o_seq)::text;
    END IF;
    PERFORM pg_notify('wormhole_mailbox_messages', payload);
END $$;

-- Retire a mailbox: its nameplates, claims, sides and messages go with it.
CREATE FUNCTION mb_retire_mailbox(p_app text, p_mid text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    summary jsonb;
BEGIN
    SELECT mb_side_summary(array_agg(s.added ORDER BY s.added), array_agg(s.mood ORDER BY s.added))
           || jsonb_build_object('for_nameplate', m.for_nameplate, 'crowded', m.crowded)
      INTO summary
      FROM mailboxes m LEFT JOIN mailbox_sides s
        ON s.app_id = m.app_id AND s.mailbox_id = m.id
     WHERE m.app_id = p_app AND m.id = p_mid
     GROUP BY m.for_nameplate, m.crowded;
    DELETE FROM nameplates WHERE app_id = p_app AND mailbox_id = p_mid;
    DELETE FROM mailboxes WHERE app_id = p_app AND id = p_mid;
    RETURN summary;
END $$;

-- close: returns (error, retired summary). `p_implicit` opens first without subscribing.
CREATE FUNCTION mb_close(p_app text, p_mid text, p_side text, p_mood text, p_now double precision,
                         p_implicit boolean, OUT error text, OUT retired jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_implicit THEN
        error := mb_open_side(p_app, p_mid, p_side, p_now, false);
        IF error IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    -- every command that locks a mailbox row marks it used (see `Pruner.touch`)
    UPDATE mailboxes SET updated = p_now WHERE app_id = p_app AND id = p_mid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE mailbox_sides SET opened = false, mood = p_mood
     WHERE app_id = p_app AND mailbox_id = p_mid AND side = p_side;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM mailbox_sides
                WHERE app_id = p_app AND mailbox_id = p_mid AND opened) THEN
        RETURN;
    END IF;
    retired := mb_retire_mailbox(p_app, p_mid);
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

-- Locks of a writing transaction, taken first and in one global order so that transactions of
-- several processes never deadlock: allocation locks per app, then nameplates, then mailboxes,
-- each level sorted by key. Keys are advisory, so a nameplate or mailbox not created yet has
-- one too. A closing mailbox may retire its nameplates: those are locked at the nameplate
-- level (a mailbox never gains a nameplate after its creation). A claimed nameplate's mailbox
-- is looked up once its nameplate lock is held, so it cannot change underneath.
CREATE FUNCTION mb_lock(p_alloc_apps text[], p_np_apps text[], p_np_names text[],
                        p_mb_apps text[], p_mb_ids text[], p_retire_apps text[],
                        p_retire_ids text[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k integer;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(a) FROM unnest(p_alloc_apps) AS a ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(28257, k);  -- 0x6E61, as Python's APP_LOCK_NAMESPACE
    END LOOP;
    FOR k IN SELECT DISTINCT hashtext(s.app || '/' || s.name) FROM (
                SELECT * FROM unnest(p_np_apps, p_np_names) AS c(app, name)
                UNION ALL
                SELECT n.app_id, n.name FROM nameplates n
                  JOIN unnest(p_retire_apps, p_retire_ids) AS r(app, id)
                    ON n.app_id = r.app AND n.mailbox_id = r.id
            ) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(28272, k);  -- 0x6E70 "np"
    END LOOP;
    FOR k IN SELECT DISTINCT hashtext(s.app || '/' || s.id) FROM (
                SELECT * FROM unnest(p_mb_apps, p_mb_ids) AS m(app, id)
                UNION ALL
                SELECT n.app_id, n.mailbox_id FROM nameplates n
                  JOIN unnest(p_np_apps, p_np_names) AS c(app, name)
                    ON n.app_id = c.app AND n.name = c.name
            ) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(28002, k);  -- 0x6D62 "mb"
    END LOOP;
END $$;

-- Pruning: retire those of the given mailboxes that are still untouched since `p_cutoff`
-- (the caller holds their locks, see `mb_lock`). One row per retired mailbox: its app, the
-- summaries of its nameplates (one usage record each) and the mailbox's own summary.
CREATE FUNCTION mb_prune(p_apps text[], p_ids text[], p_cutoff double precision,
                         OUT o_app text, OUT o_nameplates jsonb, OUT o_mailbox jsonb)
RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.app_id, m.id FROM mailboxes m
               JOIN unnest(p_apps, p_ids) AS c(app, id) ON m.app_id = c.app AND m.id = c.id
              WHERE m.updated <= p_cutoff ORDER BY m.app_id, m.id LOOP
        o_app := r.app_id;
        SELECT coalesce(jsonb_agg(jsonb_build_object('added', to_jsonb(x.added),
                                                     'crowded', x.crowded)), '[]'::jsonb)
          INTO o_nameplates
          FROM (SELECT n.crowded,
                       array_agg(s.added) FILTER (WHERE s.added IS NOT NULL) AS added
                  FROM nameplates n LEFT JOIN nameplate_sides s
                    ON s.app_id = n.app_id AND s.name = n.name
                 WHERE n.app_id = r.app_id AND n.mailbox_id = r.id
                 GROUP BY n.name, n.crowded) AS x;
        o_mailbox := mb_retire_mailbox(r.app_id, r.id);
        RETURN NEXT;
    END LOOP;
END $$;
