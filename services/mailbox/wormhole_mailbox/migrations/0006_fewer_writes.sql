-- The same rules with fewer row writes (docs/mailbox-protocol.md §5.7–§5.9).
--
-- Every writer holds the advisory locks of the nameplates and mailboxes it touches (`mb_lock`)
-- before it reads them, and reads after taking them see what committed before, so a row lock
-- (`FOR UPDATE`, itself a write of the row) on a nameplate adds nothing. The mailbox row of
-- an open stays locked, as the pruner's touch expects (it skips locked rows): by the update
-- of its `updated` time, now done first instead of after a separate lock. A side already open
-- is no longer rewritten. The answers and the rows left behind are unchanged.

CREATE OR REPLACE FUNCTION mb_open_side(p_app text, p_mid text, p_side text,
                                        p_now double precision, p_for_nameplate boolean)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    others integer;
    was_open boolean;
    before double precision;
BEGIN
    UPDATE mailboxes SET updated = p_now WHERE app_id = p_app AND id = p_mid
    RETURNING old.updated INTO before;
    IF NOT FOUND THEN
        INSERT INTO mailboxes (app_id, id, for_nameplate, updated)
        VALUES (p_app, p_mid, p_for_nameplate, p_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            UPDATE mailboxes SET updated = p_now WHERE app_id = p_app AND id = p_mid
            RETURNING old.updated INTO before;
        END IF;
    END IF;
    SELECT opened INTO was_open FROM mailbox_sides
     WHERE app_id = p_app AND mailbox_id = p_mid AND side = p_side;
    IF NOT FOUND THEN
        SELECT count(*) INTO others FROM mailbox_sides
         WHERE app_id = p_app AND mailbox_id = p_mid;
        IF others >= 2 THEN
            -- refused: remembered as crowded, its time left as it was
            UPDATE mailboxes SET crowded = true, updated = coalesce(before, updated)
             WHERE app_id = p_app AND id = p_mid;
            RETURN 'crowded';
        END IF;
        INSERT INTO mailbox_sides (app_id, mailbox_id, side, opened, added)
        VALUES (p_app, p_mid, p_side, true, p_now);
    ELSIF NOT was_open THEN
        UPDATE mailbox_sides SET opened = true
         WHERE app_id = p_app AND mailbox_id = p_mid AND side = p_side;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION mb_claim(p_app text, p_name text, p_side text,
                                    p_now double precision, p_new_mid text, OUT o_mid text,
                                    OUT error text)
LANGUAGE plpgsql AS $$
DECLARE
    was_claimed boolean;
    others integer;
BEGIN
    SELECT n.mailbox_id INTO o_mid FROM nameplates n
     WHERE n.app_id = p_app AND n.name = p_name;
    IF NOT FOUND THEN
        INSERT INTO mailboxes (app_id, id, for_nameplate, updated)
        VALUES (p_app, p_new_mid, true, p_now);
        INSERT INTO nameplates (app_id, name, mailbox_id) VALUES (p_app, p_name, p_new_mid)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            o_mid := p_new_mid;
        ELSE
            -- an allocation (which holds no lock of this name) chose a name that a claim
            -- made meanwhile: use that one
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

CREATE OR REPLACE FUNCTION mb_release(p_app text, p_name text, p_side text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    summary jsonb;
BEGIN
    PERFORM 1 FROM nameplates WHERE app_id = p_app AND name = p_name;
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
