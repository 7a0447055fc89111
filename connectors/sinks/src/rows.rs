//! The tables of SPEC §3 as data, and the one mapping from records to their column values
//! that every row-shaped sink shares (SQLite writes them, `stdout` prints them as JSON), so a
//! column is named and converted in exactly one place.

use std::borrow::Cow;
use std::sync::Mutex;

use sluice_model::Event;
use sluice_model::event::{Payload, log_id};
use sluice_model::records::{
    AppEvent, AppRollup, AppRow, GroupKind, GroupRollup, MINUTE, PlatformRollup, Records,
    StreamName, window_suffix,
};

/// A column value as the stores write it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    /// A NaN is written as NULL by SQLite and as `null` in JSON.
    Real(f64),
    Text(Cow<'a, str>),
}

/// How a table takes a row whose primary key it already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Raw streams: the row is the same event again (a retry or a replay); keep the first.
    Ignore,
    /// Rollups: a provisional row is rewritten until the final one; the latest wins.
    Update,
    /// Not an insert: the rows' keys are deleted ([`APP_DELETES`]).
    Delete,
}

/// One table of SPEC §3: where a stream's records go.
#[derive(Debug)]
pub struct Table {
    pub stream: StreamName,
    pub name: &'static str,
    /// Every column, in the order of the SPEC (and of the values [`push_rows`] appends).
    pub columns: &'static [&'static str],
    /// The primary key's columns.
    pub key: &'static [&'static str],
    pub conflict: Conflict,
}

/// The tables, indexed like [`StreamName::ALL`].
pub const TABLES: [Table; 9] = [
    Table {
        stream: StreamName::Logs,
        name: "log_message",
        columns: &[
            "id",
            "ts",
            "app_id",
            "source_type",
            "source_instance",
            "message_type",
            "message",
            "origin",
            "deployment",
            "job",
            "instance",
            "ip",
        ],
        key: &["id"],
        conflict: Conflict::Ignore,
    },
    Table {
        stream: StreamName::ContainerMetrics,
        name: "container_metric",
        columns: &[
            "app_id",
            "instance_index",
            "ts",
            "cpu_percentage",
            "memory_bytes",
            "disk_bytes",
            "memory_bytes_quota",
            "disk_bytes_quota",
        ],
        key: &["app_id", "instance_index", "ts"],
        conflict: Conflict::Ignore,
    },
    Table {
        stream: StreamName::Http,
        name: "http_start_stop",
        columns: &[
            "request_id",
            "peer_type",
            "app_id",
            "instance_index",
            "instance_id",
            "start_ts",
            "stop_ts",
            "method",
            "uri",
            "status_code",
            "content_length",
            "remote_address",
            "user_agent",
        ],
        key: &["request_id", "peer_type"],
        conflict: Conflict::Ignore,
    },
    Table {
        stream: StreamName::AppEvents,
        name: "app_event",
        columns: &[
            "app_id",
            "ts",
            "event",
            "source_type",
            "source_instance",
            "message",
        ],
        key: &["app_id", "ts", "event"],
        conflict: Conflict::Ignore,
    },
    Table {
        stream: StreamName::AppRollups,
        name: "app_metric_rollup",
        columns: &[
            "app_id",
            "minute",
            "instances",
            "cpu_avg",
            "cpu_max",
            "memory_avg",
            "memory_max",
            "disk_avg",
            "disk_max",
            "requests",
            "status_2xx",
            "status_3xx",
            "status_4xx",
            "status_5xx",
            "response_bytes",
            "latency_avg_ms",
            "latency_max_ms",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "log_lines",
            "log_err_lines",
            "app_events",
        ],
        key: &["app_id", "minute"],
        conflict: Conflict::Update,
    },
    Table {
        stream: StreamName::PlatformRollups,
        name: "platform_metric_rollup",
        columns: &[
            "origin",
            "job",
            "instance",
            "name",
            "minute",
            "kind",
            "unit",
            "samples",
            "value_avg",
            "value_min",
            "value_max",
            "value_last",
            "delta_sum",
            "total_last",
        ],
        key: &["origin", "job", "instance", "name", "minute"],
        conflict: Conflict::Update,
    },
    Table {
        stream: StreamName::Errors,
        name: "platform_error",
        columns: &["origin", "ts", "source", "code", "message"],
        key: &["origin", "ts", "source", "code"],
        conflict: Conflict::Ignore,
    },
    Table {
        stream: StreamName::Apps,
        name: "app",
        columns: &[
            "app_id",
            "name",
            "space_id",
            "space_name",
            "org_id",
            "org_name",
            "updated",
        ],
        key: &["app_id"],
        conflict: Conflict::Update,
    },
    Table {
        stream: StreamName::GroupRollups,
        name: "space_metric_rollup",
        columns: &[
            "space_id",
            "minute",
            "apps",
            "instances",
            "requests",
            "status_2xx",
            "status_3xx",
            "status_4xx",
            "status_5xx",
            "log_lines",
            "log_err_lines",
            "app_events",
            "cpu_total",
            "memory_bytes_total",
            "disk_bytes_total",
        ],
        key: &["space_id", "minute"],
        conflict: Conflict::Update,
    },
];

/// The org half of the `group_rollups` stream (SPEC §11); [`TABLES`] holds the space half.
pub const ORG_ROLLUPS: Table = Table {
    stream: StreamName::GroupRollups,
    name: "org_metric_rollup",
    columns: &[
        "org_id",
        "minute",
        "apps",
        "instances",
        "requests",
        "status_2xx",
        "status_3xx",
        "status_4xx",
        "status_5xx",
        "log_lines",
        "log_err_lines",
        "app_events",
        "cpu_total",
        "memory_bytes_total",
        "disk_bytes_total",
    ],
    key: &["org_id", "minute"],
    conflict: Conflict::Update,
};

/// Apps gone from the directory: their `app` rows are deleted by key.
pub const APP_DELETES: Table = Table {
    stream: StreamName::Apps,
    name: "app",
    columns: &["app_id"],
    key: &["app_id"],
    conflict: Conflict::Delete,
};

/// The table a stream is written to.
pub fn table(stream: StreamName) -> &'static Table {
    &TABLES[stream.index()]
}

/// The table a rollup stream's rows of `width` seconds go to: the SPEC's own for the minute,
/// `app_metric_rollup_1h` and the like (same columns and key) for the extra widths of
/// `pipeline.windows`. Other streams have one table whatever the width.
pub fn window_table(stream: StreamName, width: u32) -> &'static Table {
    let base = table(stream);
    if width == MINUTE || base.conflict != Conflict::Update {
        return base;
    }
    // Each (stream, width) is made once and kept for the life of the process, so that tables
    // stay `&'static` like the SPEC's. Widths divide a day, so there are at most a few dozen.
    static WIDER: Mutex<Vec<&'static Table>> = Mutex::new(Vec::new());
    let name = window_table_name(base.name, width);
    let mut wider = WIDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = wider.iter().find(|t| t.name == name) {
        return known;
    }
    let made: &'static Table = Box::leak(Box::new(Table {
        stream,
        name: Box::leak(name.into_boxed_str()),
        columns: base.columns,
        key: base.key,
        conflict: base.conflict,
    }));
    wider.push(made);
    made
}

/// The name of the table rows of a rollup table (`app_metric_rollup`,
/// `platform_metric_rollup`) of width `width` go to: the SPEC's table itself for [`MINUTE`],
/// `{table}_{suffix}` otherwise (`app_metric_rollup_1h`).
pub fn window_table_name(table: &str, width: u32) -> String {
    if width == MINUTE {
        table.to_owned()
    } else {
        format!("{table}_{}", window_suffix(width))
    }
}

/// Every table a sink writes with rollups of `windows` (seconds): those of SPEC §3, then the
/// rollup tables of each width beside the minute.
pub fn tables_for(windows: &[u32]) -> Vec<&'static Table> {
    let mut tables: Vec<&'static Table> = TABLES.iter().collect();
    tables.push(&ORG_ROLLUPS);
    for &width in windows.iter().filter(|w| **w != MINUTE) {
        for stream in [StreamName::AppRollups, StreamName::PlatformRollups] {
            tables.push(window_table(stream, width));
        }
    }
    tables
}

/// The `CREATE TABLE IF NOT EXISTS` of a table of an extra width, made from the statement of
/// its minute table in `schema` (a migration): the same columns, types and key, the table's
/// name (and its indexes', which start with it) changed. `None` if `schema` lacks the table.
pub fn window_table_ddl(schema: &str, table: &Table) -> Option<String> {
    let base = self::table(table.stream).name;
    let start = schema.find(&format!("CREATE TABLE {base} ("))?;
    let length = schema[start..].find(';')?;
    let statement = &schema[start..start + length];
    Some(
        statement
            .replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
            .replace(base, table.name),
    )
}

/// Like [`push_rows`] for a rollup batch, with each row's values in those of its width:
/// `out` holds a `(width, values)` per width seen, in order of first appearance, rows in
/// arrival order. Nothing for other streams.
pub fn push_rollup_rows<'a>(records: &'a Records, out: &mut Vec<(u32, Vec<Value<'a>>)>) {
    fn of<'o, 'a>(out: &'o mut Vec<(u32, Vec<Value<'a>>)>, width: u32) -> &'o mut Vec<Value<'a>> {
        let at = match out.iter().position(|(w, _)| *w == width) {
            Some(at) => at,
            None => {
                out.push((width, Vec::new()));
                out.len() - 1
            }
        };
        &mut out[at].1
    }
    match records {
        Records::AppRollups(rows) => {
            for row in rows {
                push_app_rollup(row, of(out, row.window));
            }
        }
        Records::PlatformRollups(rows) => {
            for row in rows {
                push_platform_rollup(row, of(out, row.window));
            }
        }
        _ => {}
    }
}

/// Appends the column values of every record of `records` to `out`, row after row in the
/// order of [`Table::columns`]. Returns how many records did not fit their stream (an event
/// whose payload is of another type) and were skipped; a correct pipeline never sends one.
pub fn push_rows<'a>(records: &'a Records, out: &mut Vec<Value<'a>>) -> usize {
    let before = out.len();
    let mut skipped = 0;
    match records {
        Records::Logs(events)
        | Records::ContainerMetrics(events)
        | Records::Http(events)
        | Records::Errors(events) => {
            for event in events {
                if !push_event(records.stream(), event, out) {
                    skipped += 1;
                }
            }
        }
        Records::AppEvents(rows) => rows.iter().for_each(|r| push_app_event(r, out)),
        Records::AppRollups(rows) => rows.iter().for_each(|r| push_app_rollup(r, out)),
        Records::PlatformRollups(rows) => rows.iter().for_each(|r| push_platform_rollup(r, out)),
        Records::Apps(rows) => {
            for row in rows {
                if !push_app(row, out) {
                    skipped += 1;
                }
            }
        }
        Records::GroupRollups(rows) => rows.iter().for_each(|r| push_group_rollup(r, out)),
    }
    debug_assert_eq!(
        (out.len() - before) % table(records.stream()).columns.len(),
        0
    );
    skipped
}

fn text(s: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(s))
}

/// SQL integers are signed 64-bit: an unsigned count beyond `i64::MAX` (never seen in
/// practice) is clamped rather than wrapped into a negative number.
fn unsigned(n: u64) -> Value<'static> {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt_unsigned(n: Option<u64>) -> Value<'static> {
    n.map_or(Value::Null, unsigned)
}

fn opt_real(x: Option<f64>) -> Value<'static> {
    x.map_or(Value::Null, Value::Real)
}

/// Pushes one raw event's row; false if its payload does not belong to `stream`.
fn push_event<'a>(stream: StreamName, event: &'a Event, out: &mut Vec<Value<'a>>) -> bool {
    let header = &event.header;
    match (stream, &event.payload) {
        (StreamName::Logs, Payload::Log(log)) => out.extend([
            Value::Text(Cow::Owned(log_id(log))),
            Value::Int(log.timestamp),
            text(&log.app_id),
            text(&log.source_type),
            text(&log.source_instance),
            text(log.message_type.as_str()),
            Value::Text(String::from_utf8_lossy(&log.message)),
            text(&header.origin),
            text(&header.deployment),
            text(&header.job),
            text(&header.index),
            text(&header.ip),
        ]),
        (StreamName::ContainerMetrics, Payload::Container(metric)) => out.extend([
            text(&metric.application_id),
            Value::Int(i64::from(metric.instance_index)),
            Value::Int(event.timestamp),
            Value::Real(metric.cpu_percentage),
            unsigned(metric.memory_bytes),
            unsigned(metric.disk_bytes),
            opt_unsigned(metric.memory_bytes_quota),
            opt_unsigned(metric.disk_bytes_quota),
        ]),
        (StreamName::Http, Payload::Http(http)) => out.extend([
            // `Uuid`'s Display is the canonical lowercase hyphenated form.
            Value::Text(Cow::Owned(http.request_id.to_string())),
            text(http.peer_type.as_str()),
            http.application_id
                .map_or(Value::Null, |id| Value::Text(Cow::Owned(id.to_string()))),
            http.instance_index
                .map_or(Value::Null, |i| Value::Int(i64::from(i))),
            text(&http.instance_id),
            Value::Int(http.start_timestamp),
            Value::Int(http.stop_timestamp),
            text(http.method.as_str()),
            text(&http.uri),
            Value::Int(i64::from(http.status_code)),
            Value::Int(http.content_length),
            text(&http.remote_address),
            text(&http.user_agent),
        ]),
        (StreamName::Errors, Payload::Error(error)) => out.extend([
            text(&header.origin),
            Value::Int(event.timestamp),
            text(&error.source),
            Value::Int(i64::from(error.code)),
            text(&error.message),
        ]),
        _ => return false,
    }
    true
}

fn push_app_event<'a>(row: &'a AppEvent, out: &mut Vec<Value<'a>>) {
    out.extend([
        text(&row.app_id),
        Value::Int(row.ts),
        text(&row.event),
        text(&row.source_type),
        text(&row.source_instance),
        text(&row.message),
    ]);
}

fn push_app_rollup<'a>(row: &'a AppRollup, out: &mut Vec<Value<'a>>) {
    out.extend([
        text(&row.app_id),
        Value::Int(row.minute),
        Value::Int(i64::from(row.instances)),
        opt_real(row.cpu_avg),
        opt_real(row.cpu_max),
        opt_real(row.memory_avg),
        opt_unsigned(row.memory_max),
        opt_real(row.disk_avg),
        opt_unsigned(row.disk_max),
        unsigned(row.requests),
        unsigned(row.status_2xx),
        unsigned(row.status_3xx),
        unsigned(row.status_4xx),
        unsigned(row.status_5xx),
        Value::Int(row.response_bytes),
        opt_real(row.latency_avg_ms),
        opt_real(row.latency_max_ms),
        opt_real(row.latency_p50_ms),
        opt_real(row.latency_p95_ms),
        opt_real(row.latency_p99_ms),
        unsigned(row.log_lines),
        unsigned(row.log_err_lines),
        unsigned(row.app_events),
    ]);
}

/// Pushes an app's row; false for a removal, which is no row (see [`push_app_rows`]).
fn push_app<'a>(row: &'a AppRow, out: &mut Vec<Value<'a>>) -> bool {
    let Some(info) = &row.info else {
        return false;
    };
    out.extend([
        text(&row.app_id),
        text(&info.name),
        text(&info.space_id),
        text(&info.space_name),
        text(&info.org_id),
        text(&info.org_name),
        Value::Int(row.updated),
    ]);
    true
}

/// The `app` table's share of `apps` batches: the rows to upsert and the keys to delete,
/// each app once (its last change in the batches wins).
pub fn push_app_rows<'a>(
    batches: &[&'a Records],
    upserts: &mut Vec<Value<'a>>,
    deletes: &mut Vec<Value<'a>>,
) {
    let mut last: std::collections::HashMap<&str, &AppRow> = std::collections::HashMap::new();
    for batch in batches {
        if let Records::Apps(rows) = batch {
            for row in rows {
                last.insert(&row.app_id, row);
            }
        }
    }
    let mut rows: Vec<&AppRow> = last.into_values().collect();
    rows.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    for row in rows {
        if !push_app(row, upserts) {
            deletes.push(text(&row.app_id));
        }
    }
}

/// The group rollups of `batches`, split between `space_metric_rollup` and
/// `org_metric_rollup`.
pub fn push_group_rows<'a>(
    batches: &[&'a Records],
    spaces: &mut Vec<Value<'a>>,
    orgs: &mut Vec<Value<'a>>,
) {
    for batch in batches {
        if let Records::GroupRollups(rows) = batch {
            for row in rows {
                match row.kind {
                    GroupKind::Space => push_group_rollup(row, spaces),
                    GroupKind::Org => push_group_rollup(row, orgs),
                }
            }
        }
    }
}

fn push_group_rollup<'a>(row: &'a GroupRollup, out: &mut Vec<Value<'a>>) {
    out.extend([
        text(&row.group_id),
        Value::Int(row.minute),
        unsigned(row.apps),
        unsigned(row.instances),
        unsigned(row.requests),
        unsigned(row.status_2xx),
        unsigned(row.status_3xx),
        unsigned(row.status_4xx),
        unsigned(row.status_5xx),
        unsigned(row.log_lines),
        unsigned(row.log_err_lines),
        unsigned(row.app_events),
        opt_real(row.cpu_total),
        opt_real(row.memory_bytes_total),
        opt_real(row.disk_bytes_total),
    ]);
}

fn push_platform_rollup<'a>(row: &'a PlatformRollup, out: &mut Vec<Value<'a>>) {
    out.extend([
        text(&row.origin),
        text(&row.job),
        text(&row.instance),
        text(&row.name),
        Value::Int(row.minute),
        text(row.kind.as_str()),
        text(&row.unit),
        unsigned(row.samples),
        opt_real(row.value_avg),
        opt_real(row.value_min),
        opt_real(row.value_max),
        opt_real(row.value_last),
        opt_unsigned(row.delta_sum),
        opt_unsigned(row.total_last),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_tables_are_named_by_their_width() {
        assert_eq!(
            window_table_name("app_metric_rollup", MINUTE),
            "app_metric_rollup"
        );
        assert_eq!(
            window_table_name("platform_metric_rollup", 3600),
            "platform_metric_rollup_1h"
        );
    }

    #[test]
    fn tables_follow_stream_order_and_keys_are_columns() {
        for (stream, table) in StreamName::ALL.iter().zip(TABLES.iter()) {
            assert_eq!(*stream, table.stream);
            for key in table.key {
                assert!(table.columns.contains(key), "{}.{key}", table.name);
            }
        }
        assert_eq!(table(StreamName::Errors).name, "platform_error");
    }

    #[test]
    fn an_event_of_another_type_is_skipped_not_mapped() {
        let error = Event {
            timestamp: 1,
            header: Default::default(),
            payload: Payload::Error(sluice_model::event::ErrorEvent {
                source: "s".into(),
                code: 1,
                message: "m".into(),
            }),
        };
        let misrouted = Records::Logs(vec![error.clone()]);
        let routed = Records::Errors(vec![error]);
        let mut out = Vec::new();
        let skipped = push_rows(&misrouted, &mut out);
        assert_eq!((skipped, out.len()), (1, 0));
        let skipped = push_rows(&routed, &mut out);
        assert_eq!((skipped, out.len()), (0, 5));
    }

    #[test]
    fn wider_windows_have_tables_of_their_own_made_once() {
        let hour = window_table(StreamName::AppRollups, 3600);
        assert_eq!(hour.name, "app_metric_rollup_1h");
        assert_eq!(hour.columns, table(StreamName::AppRollups).columns);
        assert!(std::ptr::eq(
            hour,
            window_table(StreamName::AppRollups, 3600)
        ));
        assert!(std::ptr::eq(
            window_table(StreamName::PlatformRollups, MINUTE),
            table(StreamName::PlatformRollups)
        ));
        assert!(std::ptr::eq(
            window_table(StreamName::Logs, 3600),
            table(StreamName::Logs)
        ));
        let names: Vec<&str> = tables_for(&[60, 300]).iter().map(|t| t.name).collect();
        // The SPEC's tables, the org half of the group rollups, and two of 5 minutes.
        assert_eq!(names.len(), TABLES.len() + 3);
        assert!(names.ends_with(&["app_metric_rollup_5m", "platform_metric_rollup_5m"]));
    }

    #[test]
    fn a_wider_tables_statement_is_its_minute_tables_renamed() {
        let schema = "CREATE TABLE app_metric_rollup (\n    app_id TEXT,\n    KEY app_metric_rollup_minute (minute)\n) ENGINE = InnoDB;\nCREATE TABLE other (x INT);";
        let ddl = window_table_ddl(schema, window_table(StreamName::AppRollups, 86_400))
            .expect("the table is in the schema");
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS app_metric_rollup_1d (\n    app_id TEXT,\n    KEY app_metric_rollup_1d_minute (minute)\n) ENGINE = InnoDB"
        );
        assert_eq!(
            window_table_ddl(
                "CREATE TABLE x (a INT);",
                window_table(StreamName::AppRollups, 300)
            ),
            None
        );
    }

    #[test]
    fn unsigned_values_beyond_i64_are_clamped() {
        assert_eq!(unsigned(u64::MAX), Value::Int(i64::MAX));
        assert_eq!(unsigned(7), Value::Int(7));
    }
}
