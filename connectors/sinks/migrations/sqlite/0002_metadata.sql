-- SPEC §11: the Cloud Foundry directory and the space and org rollups.
CREATE TABLE app (
    app_id     TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    space_id   TEXT    NOT NULL,
    space_name TEXT    NOT NULL,
    org_id     TEXT    NOT NULL,
    org_name   TEXT    NOT NULL,
    updated    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE space_metric_rollup (
    space_id           TEXT    NOT NULL,
    minute             INTEGER NOT NULL,
    apps               INTEGER NOT NULL,
    instances          INTEGER NOT NULL,
    requests           INTEGER NOT NULL,
    status_2xx         INTEGER NOT NULL,
    status_3xx         INTEGER NOT NULL,
    status_4xx         INTEGER NOT NULL,
    status_5xx         INTEGER NOT NULL,
    log_lines          INTEGER NOT NULL,
    log_err_lines      INTEGER NOT NULL,
    app_events         INTEGER NOT NULL,
    cpu_total          REAL,
    memory_bytes_total REAL,
    disk_bytes_total   REAL,
    PRIMARY KEY (space_id, minute)
) WITHOUT ROWID;

CREATE TABLE org_metric_rollup (
    org_id             TEXT    NOT NULL,
    minute             INTEGER NOT NULL,
    apps               INTEGER NOT NULL,
    instances          INTEGER NOT NULL,
    requests           INTEGER NOT NULL,
    status_2xx         INTEGER NOT NULL,
    status_3xx         INTEGER NOT NULL,
    status_4xx         INTEGER NOT NULL,
    status_5xx         INTEGER NOT NULL,
    log_lines          INTEGER NOT NULL,
    log_err_lines      INTEGER NOT NULL,
    app_events         INTEGER NOT NULL,
    cpu_total          REAL,
    memory_bytes_total REAL,
    disk_bytes_total   REAL,
    PRIMARY KEY (org_id, minute)
) WITHOUT ROWID;
