-- +goose Up
-- The sweep looks for lost hand-offs of requests by DID once a minute:
-- pending operations with a DID and a source. Requests waiting for their
-- replica are pending with a DID and no source yet, and a site may have
-- thousands. In (status, updated_at) the two kinds are mixed, so the
-- lookup read every waiting request older than HANDOFF_TIMEOUT, each row
-- to see its source: 13.8 ms at 10,000 (make scale). has_source gives each kind its own
-- range of the index. It is virtual: computed, kept only in the index.
-- Both online (LOCK=NONE: writes go on while the index is built), which
-- MariaDB allows only with the virtual column added on its own.
ALTER TABLE operations
    ADD COLUMN has_source BOOLEAN AS (local_path_on_storage <> '') VIRTUAL,
    ALGORITHM=INPLACE, LOCK=NONE;
ALTER TABLE operations
    DROP INDEX operations_status_updated,
    ADD INDEX operations_status_updated (status, has_source, updated_at),
    ALGORITHM=INPLACE, LOCK=NONE;

-- +goose Down
ALTER TABLE operations
    DROP INDEX operations_status_updated,
    ADD INDEX operations_status_updated (status, updated_at),
    ALGORITHM=INPLACE, LOCK=NONE;
ALTER TABLE operations DROP COLUMN has_source, ALGORITHM=INPLACE, LOCK=NONE;
