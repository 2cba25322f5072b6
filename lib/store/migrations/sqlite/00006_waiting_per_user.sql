-- +goose Up
-- A user's operations by status, newest first: the count of a user's
-- requests waiting for a DID's replica (status pending, did set) against
-- MAX_WAITING_PER_USER reads the index alone (did is its last column) and
-- at most the limit's entries, never the user's history; and /operations
-- filtered by user and status pages through it without sorting.
CREATE INDEX operations_username_status_created ON operations (username, status, created_at, id, did);

-- +goose Down
DROP INDEX operations_username_status_created;
