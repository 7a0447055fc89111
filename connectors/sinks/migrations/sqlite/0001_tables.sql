-- The tables of SPEC §3, §5 and §6. Names, columns, column order and primary keys are a
-- contract: programs outside Sluice read them. Change them only with a new migration.
--
-- Types are SQLite's own (INTEGER, REAL, TEXT); tables are not STRICT so that SQLite
-- libraries older than 3.37 can still open the file. `ts` columns are ns since the epoch,
-- `minute` columns epoch seconds. A REAL column accepts NULL because SQLite stores a NaN as
-- NULL. Tables whose rows are small and only ever looked up by their primary key are
-- WITHOUT ROWID, so the key is the table and an upsert touches one b-tree.

CREATE TABLE log_message (
    id              TEXT    NOT NULL PRIMARY KEY,
    ts              INTEGER NOT NULL,
    app_id          TEXT    NOT NULL,
    source_type     TEXT    NOT NULL,
    source_instance TEXT    NOT NULL,
    message_type    TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    deployment      TEXT    NOT NULL,
    job             TEXT    NOT NULL,
    instance        TEXT    NOT NULL,
    ip              TEXT    NOT NULL
);
CREATE INDEX log_message_app_ts ON log_message (app_id, ts);

CREATE TABLE container_metric (
    app_id             TEXT    NOT NULL,
    instance_index     INTEGER NOT NULL,
    ts                 INTEGER NOT NULL,
    cpu_percentage     REAL,
    memory_bytes       INTEGER NOT NULL,
    disk_bytes         INTEGER NOT NULL,
    memory_bytes_quota INTEGER,
    disk_bytes_quota   INTEGER,
    PRIMARY KEY (app_id, instance_index, ts)
) WITHOUT ROWID;
-- The key leads with the instance; charts read an app's time range across instances.
CREATE INDEX container_metric_app_ts ON container_metric (app_id, ts);

CREATE TABLE http_start_stop (
    request_id     TEXT    NOT NULL,
    peer_type      TEXT    NOT NULL,
    app_id         TEXT,
    instance_index INTEGER,
    instance_id    TEXT    NOT NULL,
    start_ts       INTEGER NOT NULL,
    stop_ts        INTEGER NOT NULL,
    method         TEXT    NOT NULL,
    uri            TEXT    NOT NULL,
    status_code    INTEGER NOT NULL,
    content_length INTEGER NOT NULL,
    remote_address TEXT    NOT NULL,
    user_agent     TEXT    NOT NULL,
    PRIMARY KEY (request_id, peer_type)
);
CREATE INDEX http_start_stop_app_ts ON http_start_stop (app_id, stop_ts);

CREATE TABLE app_event (
    app_id          TEXT    NOT NULL,
    ts              INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    source_type     TEXT    NOT NULL,
    source_instance TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    PRIMARY KEY (app_id, ts, event)
);

CREATE TABLE app_metric_rollup (
    app_id         TEXT    NOT NULL,
    minute         INTEGER NOT NULL,
    instances      INTEGER NOT NULL,
    cpu_avg        REAL,
    cpu_max        REAL,
    memory_avg     REAL,
    memory_max     INTEGER,
    disk_avg       REAL,
    disk_max       INTEGER,
    requests       INTEGER NOT NULL,
    status_2xx     INTEGER NOT NULL,
    status_3xx     INTEGER NOT NULL,
    status_4xx     INTEGER NOT NULL,
    status_5xx     INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    latency_avg_ms REAL,
    latency_max_ms REAL,
    latency_p50_ms REAL,
    latency_p95_ms REAL,
    latency_p99_ms REAL,
    log_lines      INTEGER NOT NULL,
    log_err_lines  INTEGER NOT NULL,
    app_events     INTEGER NOT NULL,
    PRIMARY KEY (app_id, minute)
) WITHOUT ROWID;

CREATE TABLE platform_metric_rollup (
    origin     TEXT    NOT NULL,
    job        TEXT    NOT NULL,
    instance   TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    minute     INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    unit       TEXT    NOT NULL,
    samples    INTEGER NOT NULL,
    value_avg  REAL,
    value_min  REAL,
    value_max  REAL,
    value_last REAL,
    delta_sum  INTEGER,
    total_last INTEGER,
    PRIMARY KEY (origin, job, instance, name, minute)
) WITHOUT ROWID;

CREATE TABLE platform_error (
    origin  TEXT    NOT NULL,
    ts      INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    code    INTEGER NOT NULL,
    message TEXT    NOT NULL,
    PRIMARY KEY (origin, ts, source, code)
);
