-- One implementation per op: `mb_op` is the one place a command's effect is defined, and a
-- batch of commands is one statement, `mb_batch`, in which the database isolates each op's
-- failure (subtransactions, BEGIN ... EXCEPTION blocks): an op that fails is rolled back
-- alone and answers its SQLSTATE, the others commit. Choosing a nameplate to allocate and
-- writing usage rows happen here too, so a batch is one statement, one round trip and one
-- transaction.
--
-- Every subtransaction that writes takes a subtransaction id; past 64 of them in one
-- transaction (PGPROC_MAX_CACHED_SUBXIDS) PostgreSQL's per-backend cache overflows and every
-- snapshot of every backend consults pg_subtrans while it runs. The caller sends at most 64
-- ops per batch (`batcher.MAX_BATCH`), so even a batch whose ops each get a subtransaction
-- (one of them failed) stays within the cache.

-- The op-by-op path and the two-step allocation are gone.
DROP FUNCTION mb_batch(text, text, integer, bigint, text[], text[], text[], text[], text[],
                       text[], text[]);
DROP FUNCTION mb_lock_and_taken(text[], text[], text[], text[], text[], text[], text[]);
DROP FUNCTION mb_lock_and_list(text, integer);

-- Usage records (docs/mailbox-protocol.md §7) --------------------------------------------------

-- A time rounded down to a multiple of `p_blur` seconds (unchanged when NULL or 0).
CREATE FUNCTION mb_blur(p_t double precision, p_blur double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(p_blur, 0) = 0 THEN p_t ELSE p_blur * floor(p_t / p_blur) END
$$;

-- The arrival times in a summary (`mb_side_summary`): its 'added' array without NULLs, sorted.
CREATE FUNCTION mb_summary_added(p_summary jsonb) RETURNS double precision[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY(SELECT a::double precision
                   FROM jsonb_array_elements_text(CASE jsonb_typeof(p_summary->'added')
                                                  WHEN 'array' THEN p_summary->'added'
                                                  ELSE '[]' END) AS a
                  WHERE a IS NOT NULL ORDER BY 1)
$$;

-- Started (blurred), waiting and total time from arrival times (none: the channel started at
-- `p_now`); waiting is between the first two arrivals, NULL with one.
CREATE FUNCTION mb_usage_times(p_added double precision[], p_now double precision,
                               p_blur double precision, OUT started double precision,
                               OUT waiting double precision, OUT total double precision)
LANGUAGE sql IMMUTABLE AS $$
    SELECT mb_blur(t[1], p_blur), CASE WHEN cardinality(t) > 1 THEN t[2] - t[1] END,
           p_now - t[1]
      FROM (SELECT CASE WHEN cardinality(p_added) > 0 THEN p_added
                        ELSE ARRAY[p_now] END AS t) AS s
$$;

-- A retired nameplate's result: happy with two sides, else lonely; pruney when pruned;
-- crowded over all.
CREATE FUNCTION mb_nameplate_result(p_sides integer, p_pruned boolean, p_crowded boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_crowded OR p_sides > 2 THEN 'crowded'
                WHEN p_pruned THEN 'pruney'
                WHEN p_sides = 2 THEN 'happy'
                ELSE 'lonely' END
$$;

-- A retired mailbox's result from its sides' moods; later rules win: quiet (no side), lonely
-- (one), happy (two), then a mood lonely < errory < scary reported by any side, pruney,
-- crowded.
CREATE FUNCTION mb_mailbox_result(p_moods text[], p_pruned boolean, p_crowded boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_crowded OR cardinality(p_moods) > 2 THEN 'crowded'
                WHEN p_pruned THEN 'pruney'
                WHEN 'scary' = ANY(p_moods) THEN 'scary'
                WHEN 'errory' = ANY(p_moods) THEN 'errory'
                WHEN 'lonely' = ANY(p_moods) THEN 'lonely'
                WHEN cardinality(p_moods) = 0 THEN 'quiet'
                WHEN cardinality(p_moods) = 1 THEN 'lonely'
                ELSE 'happy' END
$$;

-- Write the usage row of a retired nameplate from its summary (`mb_release`, `mb_prune`);
-- returns it as ["n", app, started, waiting, total, result] for the caller's metrics.
CREATE FUNCTION mb_record_nameplate(p_app text, p_summary jsonb, p_now double precision,
                                    p_pruned boolean, p_blur double precision) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    added double precision[] := mb_summary_added(p_summary);
    t record;
    res text;
BEGIN
    SELECT * INTO t FROM mb_usage_times(added, p_now, p_blur);
    res := mb_nameplate_result(greatest(cardinality(added), 1), p_pruned,
                               coalesce((p_summary->>'crowded')::boolean, false));
    INSERT INTO usage_nameplates (app_id, started, waiting_time, total_time, result)
    VALUES (p_app, t.started, t.waiting, t.total, res);
    RETURN jsonb_build_array('n', p_app, t.started, t.waiting, t.total, res);
END $$;

-- Write the usage row of a retired mailbox from its summary (`mb_retire_mailbox`); returns
-- ["m", app, for_nameplate, started, waiting, total, result]. The moods are those of the sides
-- that arrived (the summary lists them in the order of the arrival times).
CREATE FUNCTION mb_record_mailbox(p_app text, p_summary jsonb, p_now double precision,
                                  p_pruned boolean, p_blur double precision) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    added double precision[] := mb_summary_added(p_summary);
    moods text[];
    for_nameplate boolean := coalesce((p_summary->>'for_nameplate')::boolean, false);
    t record;
    res text;
BEGIN
    moods := ARRAY(SELECT m FROM jsonb_array_elements_text(
                       CASE jsonb_typeof(p_summary->'moods') WHEN 'array'
                            THEN p_summary->'moods' ELSE '[]' END) WITH ORDINALITY AS x(m, i)
                    WHERE i <= cardinality(added) ORDER BY i);
    SELECT * INTO t FROM mb_usage_times(added, p_now, p_blur);
    res := mb_mailbox_result(moods, p_pruned, coalesce((p_summary->>'crowded')::boolean, false));
    INSERT INTO usage_mailboxes (app_id, for_nameplate, started, waiting_time, total_time,
                                 result)
    VALUES (p_app, for_nameplate, t.started, t.waiting, t.total, res);
    RETURN jsonb_build_array('m', p_app, for_nameplate, t.started, t.waiting, t.total, res);
END $$;

-- Pruning: `mb_prune`, and the usage rows of what it retired. Returns the records, as the
-- two functions above return them.
CREATE FUNCTION mb_prune_recorded(p_apps text[], p_ids text[], p_cutoff double precision,
                                  p_now double precision, p_blur double precision)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
    plate jsonb;
    records jsonb := '[]';
BEGIN
    FOR r IN SELECT * FROM mb_prune(p_apps, p_ids, p_cutoff) LOOP
        FOR plate IN SELECT jsonb_array_elements(r.o_nameplates) LOOP
            records := records || jsonb_build_array(
                mb_record_nameplate(r.o_app, plate, p_now, true, p_blur));
        END LOOP;
        IF r.o_mailbox IS NOT NULL THEN
            records := records || jsonb_build_array(
                mb_record_mailbox(r.o_app, r.o_mailbox, p_now, true, p_blur));
        END IF;
    END LOOP;
    RETURN records;
END $$;

-- Allocation (docs/mailbox-protocol.md §5.6) -----------------------------------------------------

-- A free nameplate of app `p_app`: a number chosen uniformly at random among the free ones
-- of the narrowest width that has one (1-9, then 10-99, then 100-999); past those, up to
-- 1,000 random picks in 1,000-`p_wide_high`; NULL if every pick was taken. The caller holds
-- the app's allocation lock (`mb_lock`), and each statement here sees what committed before
-- it began, so two allocations in one app never pick the same free name.
-- The numbers of a width are its digit strings without a leading zero ("01" is another
-- name), so one scan of the app's short names counts the taken ones of each width; a random
-- number of the width is then drawn until a free one comes up, which is uniform over the free
-- ones, and quick: a width is only drawn from while some of it is free (a guard bounds the
-- draws should other processes claim the rest meanwhile).
CREATE FUNCTION mb_choose_nameplate(p_app text, p_wide_high integer DEFAULT 999999)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken integer[];
    low integer;
    chosen text;
BEGIN
    SELECT ARRAY[count(*) FILTER (WHERE length(name) = 1),
                 count(*) FILTER (WHERE length(name) = 2),
                 count(*) FILTER (WHERE length(name) = 3)]
      INTO taken FROM nameplates
     WHERE app_id = p_app AND length(name) <= 3 AND name NOT LIKE '0%';
    FOR width IN 1..3 LOOP
        low := (10 ^ (width - 1))::integer;
        CONTINUE WHEN taken[width] >= 9 * low;
        FOR i IN 1..100000 LOOP
            chosen := (low + floor(random() * 9 * low))::integer::text;
            IF NOT EXISTS (SELECT 1 FROM nameplates p
                            WHERE p.app_id = p_app AND p.name = chosen) THEN
                RETURN chosen;
            END IF;
        END LOOP;
    END LOOP;
    FOR i IN 1..1000 LOOP
        chosen := (1000 + floor(random() * (p_wide_high - 999)))::integer::text;
        IF NOT EXISTS (SELECT 1 FROM nameplates p WHERE p.app_id = p_app AND p.name = chosen)
        THEN
            RETURN chosen;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- The ops --------------------------------------------------------------------------------------

-- One op, given as a JSON array whose first element names it:
--   ["b", app, side, now, implementation, version]          bind: the client's version row
--   ["l", app]                                              list
--   ["n", app, side, now, new mailbox id]                   allocate, then claim the name
--   ["c", app, name, side, now, new mailbox id]             claim
--   ["r", app, name, side, now]                             release
--   ["o", app, mailbox, side, now]                          open, answering its first page
--   ["a", app, mailbox, side, phase, body, server_rx, id]   add
--   ["x", app, mailbox, side, mood, now, implicit open]     close
-- Returns [refusal, value, usage record]: a refusal is NULL or one of the codes 'crowded',
-- 'reclaimed', 'exhausted', 'full', 'gone' (the client's error kinds); the value is the
-- mailbox id (claim), [name, mailbox id] (allocate), the names (list), the first page
-- (open, `mb_page`'s [rows, more]) or the seq (add); the usage record is that of a channel
-- a release or close retired (`mb_record_nameplate`, `mb_record_mailbox`).
CREATE FUNCTION mb_op(op jsonb, p_origin text, p_max_messages integer, p_max_bytes bigint,
                      p_page_messages integer, p_open_octets bigint, p_blur double precision)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
    t text;
    summary jsonb;
BEGIN
    CASE op->>0
    WHEN 'b' THEN
        INSERT INTO usage_client_versions (app_id, side, connect_time, implementation, version)
        VALUES (op->>1, op->>2, mb_blur((op->>3)::double precision, p_blur), op->>4, op->>5);
        RETURN '[null, null, null]';
    WHEN 'l' THEN
        RETURN jsonb_build_array(NULL, to_jsonb(ARRAY(
            SELECT name FROM nameplates WHERE app_id = op->>1 ORDER BY name)), NULL);
    WHEN 'n' THEN
        t := mb_choose_nameplate(op->>1);
        IF t IS NULL THEN
            RETURN '["exhausted", null, null]';
        END IF;
        SELECT * INTO r FROM mb_claim(op->>1, t, op->>2, (op->>3)::double precision, op->>4);
        RETURN jsonb_build_array(r.error, jsonb_build_array(t, r.o_mid), NULL);
    WHEN 'c' THEN
        SELECT * INTO r FROM mb_claim(op->>1, op->>2, op->>3, (op->>4)::double precision,
                                      op->>5);
        RETURN jsonb_build_array(r.error, r.o_mid, NULL);
    WHEN 'r' THEN
        summary := mb_release(op->>1, op->>2, op->>3);
        RETURN jsonb_build_array(NULL, NULL, CASE WHEN summary IS NOT NULL THEN
            mb_record_nameplate(op->>1, summary, (op->>4)::double precision, false, p_blur)
            END);
    WHEN 'o' THEN
        t := mb_open_side(op->>1, op->>2, op->>3, (op->>4)::double precision, false);
        IF t IS NOT NULL THEN
            RETURN jsonb_build_array(t, NULL, NULL);
        END IF;
        RETURN jsonb_build_array(NULL, mb_page(op->>1, op->>2, 0, p_open_octets,
                                               p_page_messages, false), NULL);
    WHEN 'a' THEN
        SELECT * INTO r FROM mb_add(op->>1, op->>2, op->>3, op->>4, op->>5,
                                    (op->>6)::double precision, op->7, p_origin,
                                    p_max_messages, p_max_bytes);
        RETURN jsonb_build_array(CASE WHEN r.o_full THEN 'full'
                                      WHEN r.o_seq IS NULL THEN 'gone' END, r.o_seq, NULL);
    WHEN 'x' THEN
        SELECT * INTO r FROM mb_close(op->>1, op->>2, op->>3, op->>4,
                                      (op->>5)::double precision, (op->>6)::boolean);
        RETURN jsonb_build_array(r.error, NULL, CASE WHEN r.retired IS NOT NULL THEN
            mb_record_mailbox(op->>1, r.retired, (op->>5)::double precision, false, p_blur)
            END);
    END CASE;
END $$;

-- A batch: `p_ops` holds one op (as `mb_op` takes it) per line, as JSON text; the locks
-- (`mb_lock`'s arguments, the last seven) are taken first. Each op is parsed and run by
-- `mb_op`; an op that fails leaves nothing behind and answers the SQLSTATE that failed it (a
-- JSON string), the others are unaffected. Returns the answers in op order.
--
-- The ops first run together in one subtransaction: a subtransaction per op costs PostgreSQL
-- a subtransaction id and its bookkeeping for every op that writes (measured: a quarter more
-- of the backend's CPU for a batch), and almost every batch is clean. If an op fails, that
-- subtransaction is rolled back (nothing of it is left, not even its notifications) and the
-- same ops run again, each in a subtransaction of its own.
CREATE FUNCTION mb_batch(p_ops text, p_origin text, p_max_messages integer,
                         p_max_bytes bigint, p_page_messages integer, p_open_octets bigint,
                         p_blur double precision, p_alloc_apps text[], p_np_apps text[],
                         p_np_names text[], p_mb_apps text[], p_mb_ids text[],
                         p_retire_apps text[], p_retire_ids text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lines text[] := string_to_array(p_ops, E'\n');
    line text;
    answer jsonb;
    answers jsonb[] := '{}';
BEGIN
    PERFORM mb_lock(p_alloc_apps, p_np_apps, p_np_names, p_mb_apps, p_mb_ids, p_retire_apps,
                    p_retire_ids);
    BEGIN
        FOREACH line IN ARRAY lines LOOP
            answers := answers || mb_op(line::jsonb, p_origin, p_max_messages, p_max_bytes,
                                        p_page_messages, p_open_octets, p_blur);
        END LOOP;
        RETURN to_jsonb(answers);
    EXCEPTION WHEN OTHERS THEN
        answers := '{}';
    END;
    FOREACH line IN ARRAY lines LOOP
        BEGIN
            answer := mb_op(line::jsonb, p_origin, p_max_messages, p_max_bytes,
                            p_page_messages, p_open_octets, p_blur);
        EXCEPTION WHEN OTHERS THEN
            answer := to_jsonb(SQLSTATE);
        END;
        answers := answers || answer;
    END LOOP;
    RETURN to_jsonb(answers);
END $$;
