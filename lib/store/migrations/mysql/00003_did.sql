-- +goose Up
-- The Rucio DID (scope:name) an operation stages, or waits for while pending.
ALTER TABLE operations ADD COLUMN did VARCHAR(300) NOT NULL DEFAULT '';
CREATE INDEX operations_did_status ON operations (did, status);

-- +goose Down
DROP INDEX operations_did_status ON operations;
ALTER TABLE operations DROP COLUMN did;
