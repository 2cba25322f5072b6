-- +goose Up
-- A user's log records in id order: paging /logs with after and a resumed
-- stream's catch-up (WHERE username = ? AND id > ? ORDER BY id) read the
-- next records and stop. Without it MariaDB scanned the primary key above
-- the id for the user's records (a frequent user) or sorted all of them
-- through logs_username_time (a rare one, EXPLAIN: Using filesort), and a
-- user in between pays for either as the log grows. InnoDB appends id to
-- the index, so (username) gives the id order; an operation's records
-- have it already in logs_operation. It is worth its cost: every log
-- record written pays one more index entry, but a small one appended
-- behind the same user's last, while the reads it saves grow with a
-- user's history. Online (LOCK=NONE): the writers go on while it is built.
ALTER TABLE logs ADD INDEX logs_username (`username`), ALGORITHM=INPLACE, LOCK=NONE;

-- +goose Down
ALTER TABLE logs DROP INDEX logs_username, ALGORITHM=INPLACE, LOCK=NONE;
