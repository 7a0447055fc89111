//! Requests the receiver refused, appended as JSON lines: `{"time", "sink", "status",
//! "error", "rows", "samples", "series": [{"labels": {...}, "samples": [[ms, "value"]]}]}`.
//! Values are strings, as Prometheus's own API writes them (`"+Inf"` is not a JSON number).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_common::time::{now_ns, rfc3339};

use super::error::PrometheusSinkError;
use super::plan::Request;
use super::proto;

pub(super) struct DeadLetter {
    path: PathBuf,
    sink: Arc<str>,
    file: Option<std::fs::File>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    sink: &'a str,
    status: u16,
    error: &'a str,
    rows: usize,
    samples: usize,
    series: Vec<Series<'a>>,
}

#[derive(serde::Serialize)]
struct Series<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    samples: Vec<(i64, String)>,
}

impl DeadLetter {
    pub(super) fn new(path: PathBuf, sink: Arc<str>) -> DeadLetter {
        DeadLetter {
            path,
            sink,
            file: None,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one refused request, flushed to the file before returning.
    pub(super) fn write(
        &mut self,
        request: &Request,
        status: u16,
        error: &str,
    ) -> Result<(), PrometheusSinkError> {
        let io_error = |source| PrometheusSinkError::DeadLetter {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_error)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io_error)?;
            self.file = Some(file);
        }
        // The body was made by this sink: it decodes.
        let decoded = proto::decode(&request.body).unwrap_or_default();
        let series = decoded
            .timeseries
            .iter()
            .map(|s| Series {
                labels: s
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|p| (p.timestamp, value_text(p.value)))
                    .collect(),
            })
            .collect();
        let line = Line {
            time: rfc3339(now_ns()),
            sink: &self.sink,
            status,
            error,
            rows: request.rows(),
            samples: request.samples,
            series,
        };
        let mut out = serde_json::to_vec(&line).map_err(|e| io_error(e.into()))?;
        out.push(b'\n');
        if let Some(file) = &mut self.file {
            file.write_all(&out).map_err(io_error)?;
            file.flush().map_err(io_error)?;
        }
        Ok(())
    }
}

/// A value as Prometheus's API writes it: `+Inf`, `-Inf`, or the shortest decimal.
fn value_text(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}
