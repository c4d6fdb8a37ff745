-- Ops that depend on an earlier op of the same batch (docs/mailbox-protocol.md §3.3).
--
-- A connection may send its next commands before the first is answered (the Python client
-- sends `open` and `add` together). The server runs such an `add` in the same batch as the
-- `open`, but only if the `open` succeeded: a line of `p_ops` may be `[k, op]`, where k is
-- the 1-based line of the op it depends on. If that op failed, was refused or was itself
-- skipped, this one is not run and answers ["skipped", null, null]; the server then handles
-- the command again, in order, as if it had waited. The signature is unchanged, so a server
-- that never sends such a line is unaffected.

-- An op's answer says it took effect: not a SQLSTATE, not a refusal, not skipped.
CREATE FUNCTION mb_succeeded(p_answer jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_answer IS NOT NULL AND jsonb_typeof(p_answer) = 'array'
           AND jsonb_typeof(p_answer->0) = 'null'
$$;

CREATE OR REPLACE FUNCTION mb_batch(p_ops text, p_origin text, p_max_messages integer,
                                    p_max_bytes bigint, p_page_messages integer,
                                    p_open_octets bigint, p_blur double precision,
                                    p_alloc_apps text[], p_np_apps text[],
                                    p_np_names text[], p_mb_apps text[], p_mb_ids text[],
                                    p_retire_apps text[], p_retire_ids text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lines text[] := string_to_array(p_ops, E'\n');
    line text;
    op jsonb;
    answer jsonb;
    answers jsonb[] := '{}';
BEGIN
    PERFORM mb_lock(p_alloc_apps, p_np_apps, p_np_names, p_mb_apps, p_mb_ids, p_retire_apps,
                    p_retire_ids);
    -- The two passes below repeat the dependency test rather than share a function: passing
    -- `answers` to one per line copies the array each time (2-3 % of a batch's time).
    BEGIN
        FOREACH line IN ARRAY lines LOOP
            op := line::jsonb;
            IF jsonb_typeof(op->0) = 'number' THEN
                IF NOT mb_succeeded(answers[(op->>0)::integer]) THEN
                    answers := answers || '["skipped", null, null]'::jsonb;
                    CONTINUE;
                END IF;
                op := op->1;
            END IF;
            answers := answers || mb_op(op, p_origin, p_max_messages, p_max_bytes,
                                        p_page_messages, p_open_octets, p_blur);
        END LOOP;
        RETURN to_jsonb(answers);
    EXCEPTION WHEN OTHERS THEN
        answers := '{}';
    END;
    FOREACH line IN ARRAY lines LOOP
        BEGIN
            op := line::jsonb;
            IF jsonb_typeof(op->0) = 'number' THEN
                IF NOT mb_succeeded(answers[(op->>0)::integer]) THEN
                    answers := answers || '["skipped", null, null]'::jsonb;
                    CONTINUE;
                END IF;
                op := op->1;
            END IF;
            answer := mb_op(op, p_origin, p_max_messages, p_max_bytes, p_page_messages,
                            p_open_octets, p_blur);
        EXCEPTION WHEN OTHERS THEN
            answer := to_jsonb(SQLSTATE);
        END;
        answers := answers || answer;
    END LOOP;
    RETURN to_jsonb(answers);
END $$;
