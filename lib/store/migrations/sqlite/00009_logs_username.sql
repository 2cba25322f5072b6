-- +goose Up
-- A user's log records in id order: paging /logs with after and a resumed
-- stream's catch-up (WHERE username = ? AND id > ? ORDER BY id) read the
-- next records and stop. Without it SQLite sorted all of the user's
-- records through logs_username_time on every page (35 times a first
-- page's time for a user with 120,000 records), or scanned every record
-- above the id for the user's. The rowid, which is the id, ends every
-- index, so (username) gives the id order; an operation's records have it
-- already in logs_operation. It is worth its cost: every log record
-- written pays one more index entry, but a small one (a name and an id)
-- appended behind the same user's last, in the batch the log writer
-- commits anyway, while the reads it saves grow with a user's history.
CREATE INDEX logs_username ON logs ("username");

-- +goose Down
DROP INDEX logs_username;
