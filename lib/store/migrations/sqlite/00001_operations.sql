-- +goose Up
-- Times are TEXT in the fixed-width UTC form 2006-01-02T15:04:05.000000Z, so
-- they keep microseconds and sort as strings in time order. event_key and
-- target_lock are NULL when unset, so unset keys never collide.
CREATE TABLE operations (
    id                    TEXT    NOT NULL PRIMARY KEY,
    method                TEXT    NOT NULL,
    username              TEXT    NOT NULL,
    local_path_on_storage TEXT    NOT NULL,
    relative_path         TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    message               TEXT    NOT NULL DEFAULT '',
    error_reason          TEXT    NOT NULL DEFAULT '',
    code                  INTEGER NOT NULL DEFAULT 0,
    bytes                 INTEGER NOT NULL DEFAULT 0,
    bytes_done            INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL,
    finished_at           TEXT    NULL,
    event_key             TEXT    NULL UNIQUE,
    target_lock           TEXT    NULL UNIQUE
);
CREATE INDEX operations_username_created ON operations (username, created_at);
CREATE INDEX operations_status_updated ON operations (status, updated_at);

-- +goose Down
DROP TABLE operations;
