//! Why the `mysql` sink stops, and which failures it waits out instead.

use sqlx::mysql::MySqlDatabaseError;

use super::DatabaseUrlError;
use crate::retry::Retriable;
use crate::sql::migration_cause;
use sluice_buffers::BufferError;

/// Why the `mysql` sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum MysqlSinkError {
    #[error(transparent)]
    InvalidUrl(#[from] DatabaseUrlError),
    #[error("cannot connect to MySQL at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: sqlx::Error,
    },
    #[error("cannot create database `{database}` at {endpoint}: {source}")]
    CreateDatabase {
        endpoint: String,
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot migrate the schema of MySQL database {endpoint}: {source}")]
    Migrate {
        endpoint: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "MySQL database {endpoint} does not match Sluice's schema: table {table} has no column {column}"
    )]
    MissingColumn {
        endpoint: String,
        table: &'static str,
        column: &'static str,
    },
    #[error("cannot write table {table} of MySQL database {endpoint}: {source}")]
    Write {
        endpoint: String,
        table: &'static str,
        source: sqlx::Error,
    },
    /// A rollup table of an extra width whose minute table the schema lacks, or a row for a
    /// table the sink did not prepare: a bug, not bad input.
    #[error("no statement for table {table}")]
    UnknownTable { table: &'static str },
    #[error(
        "MySQL at {endpoint} stayed unavailable for the shutdown timeout: abandoned {records} records held in memory"
    )]
    Abandoned { endpoint: String, records: u64 },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

impl MysqlSinkError {
    /// Whether waiting and trying again may succeed: the server is down, restarting,
    /// overloaded or failing over; a lock wait timed out or a deadlock was broken.
    pub fn is_retriable(&self) -> bool {
        match self {
            MysqlSinkError::Connect { source, .. }
            | MysqlSinkError::CreateDatabase { source, .. }
            | MysqlSinkError::Write { source, .. } => is_retriable(source),
            MysqlSinkError::Migrate { source, .. } => {
                migration_cause(source).is_some_and(is_retriable)
            }
            MysqlSinkError::InvalidUrl(_)
            | MysqlSinkError::MissingColumn { .. }
            | MysqlSinkError::UnknownTable { .. }
            | MysqlSinkError::Abandoned { .. }
            | MysqlSinkError::Buffer(_) => false,
        }
    }
}

impl Retriable for MysqlSinkError {
    fn is_retriable(&self) -> bool {
        MysqlSinkError::is_retriable(self)
    }
}

/// MySQL/MariaDB error numbers worth waiting out.
const RETRIABLE_ERRORS: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1152, 1153, 1158, 1159, 1160, 1161, // aborted connection, packet and network errors
    1205, // lock wait timeout
    1213, // deadlock
    1290, // --read-only (a failover in progress)
    1317, // query interrupted
    1836, // read-only mode
    1927, // connection killed
    2002, 2003, 2006, 2013, // cannot connect, server gone, lost connection
    4031, // disconnected by the server for inactivity
];

/// MySQL's "unknown database".
pub(super) const ER_BAD_DB_ERROR: u16 = 1049;

/// Whether a sqlx error is transient: connection-level failures, and the server errors above.
pub fn is_retriable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(_) => {
            error_number(error).is_some_and(|number| RETRIABLE_ERRORS.contains(&number))
        }
        _ => false,
    }
}

/// The server's error number, for an error the server sent.
pub(super) fn error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}
