-- +goose Up
-- Times are UTC with microseconds. event_key and target_lock are NULL when
-- unset, so unset keys never collide in their unique indexes. The binary
-- collation keeps ids, users and hashes exact (case-sensitive).
CREATE TABLE operations (
    id                    VARCHAR(36)   NOT NULL,
    method                VARCHAR(64)   NOT NULL,
    username              VARCHAR(255)  NOT NULL,
    local_path_on_storage VARCHAR(4096) NOT NULL,
    relative_path         VARCHAR(4096) NOT NULL,
    status                VARCHAR(16)   NOT NULL,
    message               TEXT          NOT NULL,
    error_reason          TEXT          NOT NULL,
    code                  INT           NOT NULL DEFAULT 0,
    bytes                 BIGINT        NOT NULL DEFAULT 0,
    bytes_done            BIGINT        NOT NULL DEFAULT 0,
    created_at            DATETIME(6)   NOT NULL,
    updated_at            DATETIME(6)   NOT NULL,
    finished_at           DATETIME(6)   NULL,
    event_key             CHAR(64)      NULL,
    target_lock           CHAR(64)      NULL,
    PRIMARY KEY (id),
    UNIQUE KEY operations_event_key (event_key),
    UNIQUE KEY operations_target_lock (target_lock),
    KEY operations_username_created (username, created_at),
    KEY operations_status_updated (status, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE operations;
