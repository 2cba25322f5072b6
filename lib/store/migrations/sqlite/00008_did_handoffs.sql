-- +goose Up
-- The sweep looks for lost hand-offs of requests by DID once a minute:
-- pending operations with a DID and a source. Through
-- operations_status_updated it read every request waiting for its replica
-- (a DID, no source yet) older than HANDOFF_TIMEOUT, and a site may have
-- thousands. This index holds only the hand-offs; a plain request never
-- writes it (lib/store: indexedDIDHandoff).
CREATE INDEX operations_did_handoffs ON operations (updated_at) WHERE status = 'pending' AND did <> '' AND local_path_on_storage <> '';

-- +goose Down
DROP INDEX operations_did_handoffs;
