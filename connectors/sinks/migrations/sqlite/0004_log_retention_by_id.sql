-- Issue #14 part 5: `log_message` expires by ranges of its primary key, whose ids lead with
-- the line's time (README "Retention"), so the index on `ts` that retention kept goes: one
-- b-tree fewer for every line written.
--
-- Lines stored before ids led with their time (issue #14 part 2) have an id of the whole
-- 128-bit hash; the time-led id is the line's timestamp followed by that hash's low 64
-- bits, which are the old id's last 16 hex digits. They are rewritten so that retention's
-- ranges find them. A line stored under both ids (written again after that upgrade) keeps
-- one row: the rewrite skips the old copy, and the DELETE removes it.
UPDATE OR IGNORE log_message
SET id = printf('%016x', ts) || substr(id, 17)
WHERE substr(id, 1, 16) <> printf('%016x', ts);
DELETE FROM log_message WHERE substr(id, 1, 16) <> printf('%016x', ts);
DROP INDEX IF EXISTS log_message_ts;
