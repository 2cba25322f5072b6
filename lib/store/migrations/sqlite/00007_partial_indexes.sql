-- +goose Up
-- Indexes that only some operations need hold only those, so that a plain
-- staging (no DID, finished at once) writes fewer index pages: each one is
-- a WAL frame of every commit (two pwrite calls). A 64 KiB local_copy
-- wrote 20.3 frames with 00006's index, 17.0 before it and 14.1 with these.
-- The queries that use them state the partial index's condition as SQL
-- text, which is how SQLite knows it may (lib/store: unfinished,
-- indexedDID, indexedWaiting).
--
-- A user's requests waiting for a DID's replica (MAX_WAITING_PER_USER),
-- instead of 00006's index over every operation of every user.
DROP INDEX operations_username_status_created;
CREATE INDEX operations_waiting_username ON operations (username) WHERE status = 'pending' AND did <> '' AND local_path_on_storage = '';
-- Requests of a DID (transfer-done): only those that name one.
DROP INDEX operations_did_status;
CREATE INDEX operations_did_status ON operations (did, status) WHERE did <> '';
-- The sweeps of running and pending operations: finished ones leave it.
DROP INDEX operations_status_updated;
CREATE INDEX operations_status_updated ON operations (status, updated_at) WHERE status IN ('pending', 'running');

-- +goose Down
DROP INDEX operations_status_updated;
CREATE INDEX operations_status_updated ON operations (status, updated_at);
DROP INDEX operations_did_status;
CREATE INDEX operations_did_status ON operations (did, status);
DROP INDEX operations_waiting_username;
CREATE INDEX operations_username_status_created ON operations (username, status, created_at, id, did);
