-- Issue #14: inserts stay append-like as the file grows (README "Retention"). Two per-app
-- indexes no query of Sluice's uses are dropped: each spread every batch over one page per
-- app, and together they were a third of the pages a commit wrote. An app's container
-- metrics are still found through the primary key, which leads with app_id; an app's HTTP
-- events through the time index (`http_start_stop_stop_ts`) and a filter on app_id.
DROP INDEX IF EXISTS container_metric_app_ts;
DROP INDEX IF EXISTS http_start_stop_app_ts;
