-- SPEC §11: the Cloud Foundry directory and the space and org rollups.
CREATE TABLE app (
    app_id     VARCHAR(191) NOT NULL PRIMARY KEY,
    name       VARCHAR(255) NOT NULL,
    space_id   VARCHAR(191) NOT NULL,
    space_name VARCHAR(255) NOT NULL,
    org_id     VARCHAR(191) NOT NULL,
    org_name   VARCHAR(255) NOT NULL,
    updated    BIGINT  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE space_metric_rollup (
    space_id           VARCHAR(191) NOT NULL,
    minute             BIGINT  NOT NULL,
    apps               BIGINT  NOT NULL,
    instances          BIGINT  NOT NULL,
    requests           BIGINT  NOT NULL,
    status_2xx         BIGINT  NOT NULL,
    status_3xx         BIGINT  NOT NULL,
    status_4xx         BIGINT  NOT NULL,
    status_5xx         BIGINT  NOT NULL,
    log_lines          BIGINT  NOT NULL,
    log_err_lines      BIGINT  NOT NULL,
    app_events         BIGINT  NOT NULL,
    cpu_total          DOUBLE,
    memory_bytes_total DOUBLE,
    disk_bytes_total   DOUBLE,
    PRIMARY KEY (space_id, minute)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE org_metric_rollup (
    org_id             VARCHAR(191) NOT NULL,
    minute             BIGINT  NOT NULL,
    apps               BIGINT  NOT NULL,
    instances          BIGINT  NOT NULL,
    requests           BIGINT  NOT NULL,
    status_2xx         BIGINT  NOT NULL,
    status_3xx         BIGINT  NOT NULL,
    status_4xx         BIGINT  NOT NULL,
    status_5xx         BIGINT  NOT NULL,
    log_lines          BIGINT  NOT NULL,
    log_err_lines      BIGINT  NOT NULL,
    app_events         BIGINT  NOT NULL,
    cpu_total          DOUBLE,
    memory_bytes_total DOUBLE,
    disk_bytes_total   DOUBLE,
    PRIMARY KEY (org_id, minute)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
