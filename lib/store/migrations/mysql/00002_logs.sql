-- +goose Up
-- One row per log record of any function's replica. The auto-increment id
-- lets a follower resume after the last record it saw; time is UTC with
-- microseconds; level is slog's number (DEBUG -4, INFO 0, WARNING 4,
-- ERROR 8); attributes is a JSON object.
CREATE TABLE logs (
    `id`           BIGINT       NOT NULL AUTO_INCREMENT,
    `time`         DATETIME(6)  NOT NULL,
    `level`        SMALLINT     NOT NULL,
    `message`      TEXT         NOT NULL,
    `function`     VARCHAR(64)  NOT NULL,
    `instance`     VARCHAR(255) NOT NULL,
    `operation_id` VARCHAR(64)  NOT NULL DEFAULT '',
    `username`     VARCHAR(255) NOT NULL DEFAULT '',
    `trace_id`     CHAR(32)     NOT NULL DEFAULT '',
    `span_id`      CHAR(16)     NOT NULL DEFAULT '',
    `attributes`   MEDIUMTEXT   NOT NULL,
    PRIMARY KEY (`id`),
    KEY logs_time (`time`),
    KEY logs_operation (`operation_id`),
    KEY logs_username_time (`username`, `time`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE logs;
