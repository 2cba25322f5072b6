-- +goose Up
-- One row per log record of any function's replica. The id (a rowid that is
-- never reused) lets a follower resume after the last record it saw; time is
-- TEXT in the fixed-width UTC form 2006-01-02T15:04:05.000000Z, so it sorts
-- as a string in time order; level is slog's number (DEBUG -4, INFO 0,
-- WARNING 4, ERROR 8); attributes is a JSON object.
CREATE TABLE logs (
    "id"           INTEGER PRIMARY KEY AUTOINCREMENT,
    "time"         TEXT    NOT NULL,
    "level"        INTEGER NOT NULL,
    "message"      TEXT    NOT NULL,
    "function"     TEXT    NOT NULL,
    "instance"     TEXT    NOT NULL,
    "operation_id" TEXT    NOT NULL DEFAULT '',
    "username"     TEXT    NOT NULL DEFAULT '',
    "trace_id"     TEXT    NOT NULL DEFAULT '',
    "span_id"      TEXT    NOT NULL DEFAULT '',
    "attributes"   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX logs_time ON logs ("time");
CREATE INDEX logs_operation ON logs ("operation_id");
CREATE INDEX logs_username_time ON logs ("username", "time");

-- +goose Down
DROP TABLE logs;
