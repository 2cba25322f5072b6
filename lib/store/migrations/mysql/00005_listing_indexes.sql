-- +goose Up
-- Indexes that let every listing read only what it returns, however large
-- the tables grow (the API's filters; EXPLAIN plans checked by a test):
-- /operations pages newest first by (created_at, id) unfiltered and by
-- status (by user: operations_username_created, to which InnoDB appends
-- the primary key id); /logs filtered by level or by function when such
-- records are rare. InnoDB appends id to every secondary index, so ties
-- in time are ordered by the index too.
CREATE INDEX operations_created ON operations (created_at, id);
CREATE INDEX operations_status_created ON operations (status, created_at, id);
CREATE INDEX logs_level_time ON logs (`level`, `time`);
CREATE INDEX logs_function_time ON logs (`function`, `time`);

-- +goose Down
DROP INDEX logs_function_time ON logs;
DROP INDEX logs_level_time ON logs;
DROP INDEX operations_status_created ON operations;
DROP INDEX operations_created ON operations;
