-- The tables of SPEC §3, §5 and §6 for MySQL / MariaDB. Names, columns, column order and
-- primary keys are a contract shared with the SQLite schema: programs outside Sluice read
-- them. Change them only with a new migration.
--
-- `ts` columns are ns since the epoch, `minute` columns epoch seconds. Text is utf8mb4 with
-- a binary collation, so keys compare byte for byte as they do in SQLite. Key and indexed
-- text columns are VARCHARs short enough for InnoDB's 3072-byte index limit; the sink cuts
-- longer values to the column's length (rows.rs knows the limits) rather than failing.
-- Besides the read path's indexes (app_id + time range), every table has an index on its
-- time column so that retention deletes old rows in small batches without scanning.

CREATE TABLE log_message (
    id              CHAR(32)     NOT NULL,
    ts              BIGINT       NOT NULL,
    app_id          VARCHAR(255) NOT NULL,
    source_type     VARCHAR(255) NOT NULL,
    source_instance VARCHAR(255) NOT NULL,
    message_type    VARCHAR(3)   NOT NULL,
    message         MEDIUMTEXT   NOT NULL,
    origin          VARCHAR(255) NOT NULL,
    deployment      VARCHAR(255) NOT NULL,
    job             VARCHAR(255) NOT NULL,
    instance        VARCHAR(255) NOT NULL,
    ip              VARCHAR(255) NOT NULL,
    PRIMARY KEY (id),
    KEY log_message_app_ts (app_id, ts),
    KEY log_message_ts (ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE container_metric (
    app_id             VARCHAR(255) NOT NULL,
    instance_index     INT          NOT NULL,
    ts                 BIGINT       NOT NULL,
    cpu_percentage     DOUBLE,
    memory_bytes       BIGINT       NOT NULL,
    disk_bytes         BIGINT       NOT NULL,
    memory_bytes_quota BIGINT,
    disk_bytes_quota   BIGINT,
    PRIMARY KEY (app_id, instance_index, ts),
    KEY container_metric_app_ts (app_id, ts),
    KEY container_metric_ts (ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE http_start_stop (
    request_id     CHAR(36)     NOT NULL,
    peer_type      VARCHAR(8)   NOT NULL,
    app_id         CHAR(36),
    instance_index INT,
    instance_id    VARCHAR(255) NOT NULL,
    start_ts       BIGINT       NOT NULL,
    stop_ts        BIGINT       NOT NULL,
    method         VARCHAR(24)  NOT NULL,
    uri            TEXT         NOT NULL,
    status_code    INT          NOT NULL,
    content_length BIGINT       NOT NULL,
    remote_address VARCHAR(255) NOT NULL,
    user_agent     TEXT         NOT NULL,
    PRIMARY KEY (request_id, peer_type),
    KEY http_start_stop_app_ts (app_id, stop_ts),
    KEY http_start_stop_ts (stop_ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_event (
    app_id          VARCHAR(255) NOT NULL,
    ts              BIGINT       NOT NULL,
    event           VARCHAR(16)  NOT NULL,
    source_type     VARCHAR(255) NOT NULL,
    source_instance VARCHAR(255) NOT NULL,
    message         MEDIUMTEXT   NOT NULL,
    PRIMARY KEY (app_id, ts, event),
    KEY app_event_ts (ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_metric_rollup (
    app_id         VARCHAR(255) NOT NULL,
    minute         BIGINT       NOT NULL,
    instances      INT          NOT NULL,
    cpu_avg        DOUBLE,
    cpu_max        DOUBLE,
    memory_avg     DOUBLE,
    memory_max     BIGINT,
    disk_avg       DOUBLE,
    disk_max       BIGINT,
    requests       BIGINT       NOT NULL,
    status_2xx     BIGINT       NOT NULL,
    status_3xx     BIGINT       NOT NULL,
    status_4xx     BIGINT       NOT NULL,
    status_5xx     BIGINT       NOT NULL,
    response_bytes BIGINT       NOT NULL,
    latency_avg_ms DOUBLE,
    latency_max_ms DOUBLE,
    latency_p50_ms DOUBLE,
    latency_p95_ms DOUBLE,
    latency_p99_ms DOUBLE,
    log_lines      BIGINT       NOT NULL,
    log_err_lines  BIGINT       NOT NULL,
    app_events     BIGINT       NOT NULL,
    PRIMARY KEY (app_id, minute),
    KEY app_metric_rollup_minute (minute)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Four 191-character keys (4 bytes each) and the minute fit InnoDB's 3072-byte key limit.
CREATE TABLE platform_metric_rollup (
    origin     VARCHAR(191) NOT NULL,
    job        VARCHAR(191) NOT NULL,
    instance   VARCHAR(191) NOT NULL,
    name       VARCHAR(191) NOT NULL,
    minute     BIGINT       NOT NULL,
    kind       VARCHAR(8)   NOT NULL,
    unit       VARCHAR(255) NOT NULL,
    samples    BIGINT       NOT NULL,
    value_avg  DOUBLE,
    value_min  DOUBLE,
    value_max  DOUBLE,
    value_last DOUBLE,
    delta_sum  BIGINT,
    total_last BIGINT,
    PRIMARY KEY (origin, job, instance, name, minute),
    KEY platform_metric_rollup_minute (minute)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE platform_error (
    origin  VARCHAR(255) NOT NULL,
    ts      BIGINT       NOT NULL,
    source  VARCHAR(255) NOT NULL,
    code    INT          NOT NULL,
    message TEXT         NOT NULL,
    PRIMARY KEY (origin, ts, source, code),
    KEY platform_error_ts (ts)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
