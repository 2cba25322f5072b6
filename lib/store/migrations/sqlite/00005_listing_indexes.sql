-- +goose Up
-- Indexes that let every listing read only what it returns, however large
-- the tables grow (the API's filters; EXPLAIN QUERY PLAN checked by a
-- test): /operations pages newest first by (created_at, id) unfiltered, by
-- user and by status; /logs filtered by level or by function when such
-- records are rare (a log record's id is its rowid, which every index
-- carries).
CREATE INDEX operations_created ON operations (created_at, id);
CREATE INDEX operations_status_created ON operations (status, created_at, id);
DROP INDEX operations_username_created;
CREATE INDEX operations_username_created ON operations (username, created_at, id);
CREATE INDEX logs_level_time ON logs ("level", "time");
CREATE INDEX logs_function_time ON logs ("function", "time");

-- +goose Down
DROP INDEX logs_function_time;
DROP INDEX logs_level_time;
DROP INDEX operations_username_created;
CREATE INDEX operations_username_created ON operations (username, created_at);
DROP INDEX operations_status_created;
DROP INDEX operations_created;
