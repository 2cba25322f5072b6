-- +goose Up
-- lease_owner names the replica that runs an operation: only it may record
-- progress and the outcome, and a final status is never rewritten.
-- error_kind is the kind of a failure (invalid, forbidden, unavailable...),
-- which a redelivery replays; earlier rows had only an HTTP status in code.
ALTER TABLE operations ADD COLUMN lease_owner TEXT NULL;
ALTER TABLE operations ADD COLUMN error_kind TEXT NOT NULL DEFAULT '';
UPDATE operations SET error_kind = CASE code
    WHEN 400 THEN 'rejected' WHEN 401 THEN 'unauthenticated' WHEN 403 THEN 'forbidden'
    WHEN 404 THEN 'not_found' WHEN 408 THEN 'client_timeout' WHEN 409 THEN 'conflict'
    WHEN 413 THEN 'too_large' WHEN 422 THEN 'invalid' WHEN 429 THEN 'too_many' WHEN 499 THEN 'canceled'
    WHEN 502 THEN 'upstream' WHEN 503 THEN 'unavailable' WHEN 504 THEN 'upstream_timeout'
    WHEN 507 THEN 'insufficient_storage' ELSE 'internal' END
WHERE status = 'failed';

-- +goose Down
ALTER TABLE operations DROP COLUMN error_kind;
ALTER TABLE operations DROP COLUMN lease_owner;
