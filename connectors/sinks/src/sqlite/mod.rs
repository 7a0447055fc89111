//! The `sqlite` sink: Sluice's embedded store, one file holding the tables of SPEC §3.
//!
//! Received batches are gathered up to `batch_size` rows or `flush_interval`, then written in
//! one transaction on one connection (SQLite has one writer; more connections would only
//! queue on its lock). Rows go in through the shared SQL writer (`crate::sql`): cached
//! prepared statements that insert up to [`MAX_ROWS_PER_STATEMENT`] rows each, because a
//! round trip to sqlx's connection thread costs more than SQLite inserting a row. Raw streams
//! are `INSERT OR IGNORE`d and rollups upserted, so a retry or a replay changes nothing and a
//! provisional rollup row becomes the final one in place. A second connection only copies
//! the WAL into the file ([`Checkpointer`]), so the writer's commits do not.
//!
//! Another process holding the file's write lock is waited for by SQLite for `busy_timeout`,
//! then like any store that is down: one error, retries with capped backoff (counted in
//! `retries`) while the buffer holds the data, and at shutdown the decision of SPEC §8.
//!
//! The schema is created by the versioned migrations in `connectors/migrations/sqlite/`; the
//! rollup tables of the extra widths of `pipeline.windows` (`app_metric_rollup_1h`, ...) are
//! created at start like their minute tables. `dialect.rs` says how SQLite takes the INSERTs.

mod dialect;
mod retention;

pub use dialect::MAX_ROWS_PER_STATEMENT;

use self::retention::Retention;
use crate::retention::RetentionConfig;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_common::config::ByteSize;
use sluice_model::records::StreamName;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions};
use tracing::{debug, info};

use crate::batch::{Batch, BatchStore, Flow, write_batches};
use crate::retry::{Retriable, Retry, Stop};
use crate::rows;
use crate::sql::{InsertError, SqlWriter, WindowTableError, create_window_tables, migration_cause};
use crate::{Claim, Component, ComponentError, ComponentTask, Problem, Sink, SinkContext};
use sluice_buffers::BufferConfig;

/// `[sinks.<name>]` with `type = "sqlite"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSinkConfig {
    /// The database file; it and its parent directory are created when absent.
    pub path: PathBuf,
    /// The streams written to this file, each to its table of SPEC §3. Default: all of them.
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
    /// Rows gathered and written at a time.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// While rows arrive faster than they are written, how long one transaction stays open
    /// across batches before it commits (`"5s"`); an input that keeps up commits every
    /// batch, so a live job's rows are visible after `flush_interval`.
    #[serde(
        default = "default_commit_interval",
        with = "sluice_common::config::duration"
    )]
    pub commit_interval: Duration,
    /// Rows one transaction holds at most before it commits (they stay in memory until it
    /// has, to be written again should it fail).
    #[serde(default = "default_commit_rows")]
    pub commit_rows: NonZeroUsize,
    /// How long a received row may wait for a fuller batch before it is written (`"1s"`).
    #[serde(
        default = "default_flush_interval",
        with = "sluice_common::config::duration"
    )]
    pub flush_interval: Duration,
    /// SQLite's page cache of the writing connection (`"1GiB"`). A long transaction's dirty
    /// pages beyond it are spilled to the WAL mid-transaction (and written again when
    /// touched again), and index pages that fell out are read back: measured on 20 M
    /// envelopes, 1 GiB writes 13 % faster than 256 MiB (README "Retention").
    #[serde(default = "default_cache_size")]
    pub cache_size: ByteSize,
    /// The WAL size at which the writer copies the WAL into the file itself, inside a
    /// commit (`"1GiB"`). Below it a background connection copies each committed
    /// transaction while the writer goes on; the WAL restarts from its beginning only
    /// after a checkpoint by the writer, so this also bounds the WAL file.
    #[serde(default = "default_wal_autocheckpoint")]
    pub wal_autocheckpoint: ByteSize,
    /// The page size of a file the sink creates (`"16KiB"`, a power of two from 512 B to
    /// 64 KiB). A file that exists keeps the one it was made with: SQLite fixes it when the
    /// file is created. Measured on 20 M envelopes, 16 KiB pages write faster than
    /// SQLite's default 4 KiB (README "Retention", part 5).
    #[serde(default = "default_page_size")]
    pub page_size: PageSize,
    /// How long SQLite waits for another process's lock on the file before the write is
    /// reported busy and retried with backoff (`"5s"`).
    #[serde(
        default = "default_busy_timeout",
        with = "sluice_common::config::duration"
    )]
    pub busy_timeout: Duration,
    /// On Ctrl-C, how long a sink whose database stays locked keeps trying before it
    /// abandons what its memory buffer holds (a disk buffer keeps it for the next run
    /// instead).
    #[serde(
        default = "default_shutdown_timeout",
        with = "sluice_common::config::duration"
    )]
    pub shutdown_timeout: Duration,
    /// Deleting old rows by event time (SPEC §10):
    /// `retention = { enabled = true, raw = "2d", rollups = "14d" }`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where records wait before they are written (SPEC §8). Default: memory.
    #[serde(default)]
    pub buffer: BufferConfig,
}

/// Large transactions: a commit writes every page it dirtied to the WAL once, and the
/// per-app indexes and rollups spread a batch over one page per app, so the rows a page
/// takes per commit (and the write cost per row) grow with the batch (README "Retention").
const fn default_batch_size() -> NonZeroUsize {
    match NonZeroUsize::new(100_000) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// Long transactions while there is a backlog: a commit writes every page it dirtied, and
/// the per-app keys (one page per app and table) and the HTTP table's random request ids
/// (one page per row once the table is large) dirty about as many pages for a few rows of
/// each as for many (README "Retention").
const fn default_commit_interval() -> Duration {
    Duration::from_secs(5)
}

const fn default_commit_rows() -> NonZeroUsize {
    match NonZeroUsize::new(500_000) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

const fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

const fn default_cache_size() -> ByteSize {
    ByteSize(1 << 30)
}

const fn default_wal_autocheckpoint() -> ByteSize {
    ByteSize(1 << 30)
}

const fn default_page_size() -> PageSize {
    PageSize(16 * 1024)
}

/// A page size SQLite accepts: a power of two from 512 B to 64 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ByteSize")]
pub struct PageSize(u32);

impl PageSize {
    pub fn bytes(self) -> u32 {
        self.0
    }
}

impl TryFrom<ByteSize> for PageSize {
    type Error = String;

    fn try_from(size: ByteSize) -> Result<PageSize, String> {
        match u32::try_from(size.0) {
            Ok(bytes @ 512..=65536) if bytes.is_power_of_two() => Ok(PageSize(bytes)),
            _ => Err(format!(
                "invalid page_size of {} bytes: SQLite's pages are a power of two from 512 B \
                 to 64 KiB (e.g. \"4KiB\", \"16KiB\")",
                size.0
            )),
        }
    }
}

const fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SqliteSinkConfig {
    /// A config with the default batching for `path` and `streams`.
    pub fn new(path: impl Into<PathBuf>, streams: Vec<StreamName>) -> SqliteSinkConfig {
        SqliteSinkConfig {
            path: path.into(),
            streams,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            commit_interval: default_commit_interval(),
            commit_rows: default_commit_rows(),
            cache_size: default_cache_size(),
            wal_autocheckpoint: default_wal_autocheckpoint(),
            page_size: default_page_size(),
            busy_timeout: default_busy_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            retention: RetentionConfig::default(),
            buffer: BufferConfig::default(),
        }
    }
}

impl Component for SqliteSinkConfig {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let path = self.path.to_string_lossy();
        if path.trim().is_empty() {
            problems.push(Problem::new(
                "path",
                "is empty: SQLite would open a temporary database and lose every row",
            ));
        } else if path == ":memory:" || path.starts_with("file:") {
            problems.push(Problem::new(
                "path",
                format!(
                    "`{path}` is an in-memory or URI database: rows would be lost at exit (and \
                     the API could not read them); name a file"
                ),
            ));
        }
        problems.extend(crate::stream_problems(&self.streams));
        problems.extend(self.retention.problems());
        problems
    }

    fn resources(&self) -> Vec<Claim> {
        vec![Claim::path("path", "the SQLite database", &self.path)]
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl Sink for SqliteSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// An exclusive lock on `<database>.migrate-lock`, held while this process migrates the
/// database's schema; released when dropped (or however the process ends).
async fn migration_lock(database: &Path) -> std::io::Result<std::fs::File> {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(".migrate-lock");
    let path = database.with_file_name(name);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Why the `sqlite` sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SqliteSinkError {
    #[error("cannot create directory {} for the SQLite database: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open SQLite database {}: {source}", path.display())]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the schema of SQLite database {}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot write table {table} of SQLite database {}: {source}", path.display())]
    Write {
        path: PathBuf,
        table: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot commit a transaction to SQLite database {}: {source}", path.display())]
    Commit { path: PathBuf, source: sqlx::Error },
    /// A rollup table of an extra width whose minute table the schema does not have, or a
    /// row for a table the sink did not prepare: a bug, not bad input.
    #[error("SQLite database {}: no statement for table {table}", path.display())]
    Schema { path: PathBuf, table: &'static str },
    #[error(
        "SQLite database {} stayed locked for the shutdown timeout: abandoned {records} records held in memory",
        path.display()
    )]
    Abandoned { path: PathBuf, records: u64 },
    #[error(transparent)]
    Buffer(#[from] sluice_buffers::BufferError),
}

impl SqliteSinkError {
    /// A busy or locked database: another process holds the write lock; waiting may help.
    pub fn is_retriable(&self) -> bool {
        match self {
            SqliteSinkError::Write { source, .. }
            | SqliteSinkError::Commit { source, .. }
            | SqliteSinkError::Open { source, .. } => is_busy(source),
            SqliteSinkError::Migrate { source, .. } => migration_cause(source).is_some_and(is_busy),
            SqliteSinkError::CreateDir { .. }
            | SqliteSinkError::Schema { .. }
            | SqliteSinkError::Abandoned { .. }
            | SqliteSinkError::Buffer(_) => false,
        }
    }
}

impl Retriable for SqliteSinkError {
    fn is_retriable(&self) -> bool {
        SqliteSinkError::is_retriable(self)
    }
}

/// `SQLITE_BUSY` (5) or `SQLITE_LOCKED` (6), including their extended codes.
fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    matches!(code & 0xff, 5 | 6)
}

/// Runs the sink until its input closes: writes everything received to the file at
/// `config.path`, then closes it (checkpointing the WAL into the file) and returns.
pub async fn run(config: SqliteSinkConfig, mut ctx: SinkContext) -> Result<(), SqliteSinkError> {
    let path = &config.path;
    let abandoned = |records| SqliteSinkError::Abandoned {
        path: path.clone(),
        records,
    };
    let mut retry = Retry::new(
        "SQLite",
        &path.display().to_string(),
        config.shutdown_timeout,
    );
    let mut store = loop {
        match SqliteStore::open(path, &config, &ctx.windows).await {
            Ok(store) => break store,
            Err(error) => {
                if let Some(stop) = retry.wait_or_fail(error, 0, &mut ctx).await? {
                    return stop.end(abandoned);
                }
            }
        }
    };
    retry.recovered(&ctx);
    info!(sink = %ctx.name, path = %path.display(), "Opened the SQLite database.");
    let written = write_batches(
        &mut store,
        &mut ctx,
        &mut retry,
        &config.streams,
        config.batch_size.get(),
        config.flush_interval,
    )
    .await;
    // A finite run ends with a last pass at the final watermark, so the file holds exactly
    // the promised window; a run stopped by a signal leaves that to the next one.
    if matches!(written, Ok(None)) && !ctx.shutdown.is_cancelled() {
        store
            .retention
            .finish(
                &mut store.connection,
                ctx.watermark(),
                &ctx.name,
                &ctx.metrics,
            )
            .await;
    }
    store.close().await;
    if let Some(stop) = written? {
        stop.end(abandoned)?;
    }
    info!(sink = %ctx.name, rows = ctx.metrics.written_total(), "Closed the SQLite database.");
    Ok(())
}

/// The open database and its statements.
struct SqliteStore {
    path: PathBuf,
    pool: SqlitePool,
    /// The pool's one connection, held for the sink's lifetime.
    connection: PoolConnection<Sqlite>,
    writer: SqlWriter<Sqlite>,
    retention: Retention,
    checkpointer: Checkpointer,
    /// The rows written and not yet committed.
    open: Uncommitted,
    commit_interval: Duration,
    commit_rows: usize,
}

/// The batches of the transaction left open while the input has a backlog, kept until it
/// commits: a transaction that fails is rolled back and all of them are written again.
#[derive(Default)]
struct Uncommitted {
    /// Whether a transaction is open on the connection.
    begun: bool,
    /// When it began.
    since: Option<std::time::Instant>,
    /// The batches it holds, and how many rows each wrote per stream (the counters move
    /// once they are committed).
    batches: Vec<(Batch, Vec<(StreamName, usize)>)>,
    /// How many of `batches` the open transaction holds (the rest are still to be written).
    written: usize,
    rows: usize,
}

/// Copies committed pages from the WAL into the database file on a connection (and so a
/// thread) of its own, beside the writer instead of inside its commits: measured, the
/// writer's own checkpoints (copying every page a commit wrote a second time, and an
/// `fsync`) were a fifth of its time. PASSIVE checkpoints never wait for the writer or for
/// readers; whenever one has copied the whole WAL, the writer's next transaction starts the
/// log over. A writer that holds transactions open for a backlog starts its next one right
/// after each commit, so the WAL is never wholly copied at that moment: it grows until the
/// writer checkpoints itself at `wal_autocheckpoint`, and then copies only what the
/// checkpointer has not (the last transaction or so) before the log starts over.
struct Checkpointer {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How often the checkpointer copies the WAL into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

impl Checkpointer {
    async fn start(
        options: SqliteConnectOptions,
        path: &Path,
    ) -> Result<Checkpointer, SqliteSinkError> {
        // A checkpoint of a large WAL takes a second or more by design: not a slow statement
        // worth sqlx's warning.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.disable_statement_logging())
            .await
            .map_err(|source| SqliteSinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            let path = path.to_path_buf();
            async move {
                let mut every = tokio::time::interval(CHECKPOINT_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .execute(&pool)
                        .await
                    {
                        // The writer's own checkpoints take over; nothing is lost.
                        debug!(path = %path.display(), %error, "A background checkpoint failed.");
                    }
                }
                pool.close().await;
            }
        });
        Ok(Checkpointer { stop, task })
    }

    /// Stops the task and closes its connection (before the writer's, which checkpoints
    /// what is left and removes the WAL).
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl SqliteStore {
    /// Creates the file and its directory if absent, sets the pragmas, migrates the schema and
    /// creates the rollup tables of the extra `windows`.
    async fn open(
        path: &Path,
        config: &SqliteSinkConfig,
        windows: &[u32],
    ) -> Result<SqliteStore, SqliteSinkError> {
        let busy_timeout = config.busy_timeout;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| SqliteSinkError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL is durable against application crashes; a power loss may lose
            // the last commits, which a replay re-writes idempotently.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            // Multi-row INSERTs and upserts keep a statement journal (to undo a statement
            // that fails half-way); in memory rather than in a temporary file.
            .pragma("temp_store", "MEMORY")
            // After a checkpoint the WAL file is cut back to 64 MiB.
            .pragma("journal_size_limit", "67108864")
            // Only a file being created takes it; SQLite ignores it for one that exists.
            .page_size(config.page_size.bytes());
        // A transaction held open for a backlog commits some hundred thousand rows at once:
        // a commit of a second or two is expected then, not a slow statement worth a warning.
        // The writer's page cache holds what a transaction held open for a backlog dirties
        // (the end of every append-like index, a page per app in the per-app structures,
        // and the HTTP key's random pages), so it is neither spilled nor read back; the
        // checkpointer's connection only copies pages and keeps SQLite's small default.
        let writer_options = options
            .clone()
            .pragma("cache_size", format!("-{}", config.cache_size.0 / 1024))
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(10));
        let open_error = |source| SqliteSinkError::Open {
            path: path.to_path_buf(),
            source,
        };
        // One connection: SQLite has a single writer, and the cached statements live on it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options)
            .await
            .map_err(open_error)?;
        // Migrating through the pool rather than `&mut SqliteConnection`: the latter's
        // `Acquire` impl makes this future not provably `Send` (a known rustc limitation).
        // Processes of a cluster (SPEC §12) may open one file together: they migrate one at
        // a time, under an exclusive lock on a file beside the database (not the database
        // file itself: closing another descriptor of it would drop SQLite's own POSIX locks).
        // A migration is also one transaction, so a migrator that lost a race anyway fails
        // whole and, tried again, finds the schema migrated.
        let _migrating = migration_lock(path)
            .await
            .map_err(|source| SqliteSinkError::Open {
                path: path.to_path_buf(),
                source: sqlx::Error::Io(source),
            })?;
        let migrator = sqlx::migrate!("migrations/sqlite");
        // An upgrade may rewrite a table (0004 reads every log line): say so, since the sink
        // writes nothing until it is done.
        let upgrade = schema_upgrade(&pool, &migrator).await;
        if let Some(pending) = &upgrade {
            info!(path = %path.display(), migrations = %pending.join(", "),
                "Upgrading the database's schema; on a large file this takes minutes, \
                 and nothing is written until it is done (README \"Retention\", \"Upgrading\").");
        }
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            match migrator.run(&pool).await {
                Ok(()) => break,
                Err(sqlx::migrate::MigrateError::ExecuteMigration(..)) if attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(SqliteSinkError::Migrate {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
        if upgrade.is_some() {
            info!(path = %path.display(), elapsed = ?started.elapsed(),
                "Upgraded the database's schema.");
        }
        let mut connection = pool.acquire().await.map_err(open_error)?;
        set_wal_autocheckpoint(&mut connection, path, config)
            .await
            .map_err(open_error)?;
        let tables = rows::tables_for(windows);
        create_window_tables::<Sqlite>(&mut connection, &tables)
            .await
            .map_err(|e| match e {
                WindowTableError::NotInSchema { table } => SqliteSinkError::Schema {
                    path: path.to_path_buf(),
                    table,
                },
                WindowTableError::Create { table, source } => SqliteSinkError::Write {
                    path: path.to_path_buf(),
                    table,
                    source,
                },
            })?;
        // Every table's time index, which retention's range deletes go through (in the
        // migration's tables and the extra widths' alike; not the directory, which has no
        // history; not `log_message`, whose time-led key serves).
        for (table, ddl) in tables
            .iter()
            .filter(|table| crate::retention::has_history(table))
            .filter_map(|table| Some((table, Retention::index_ddl(table)?)))
        {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut *connection)
                .await
                .map_err(|source| SqliteSinkError::Write {
                    path: path.to_path_buf(),
                    table: table.name,
                    source,
                })?;
        }
        let checkpointer = Checkpointer::start(options, path).await?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            pool,
            checkpointer,
            connection,
            writer: SqlWriter::new(&tables),
            retention: Retention::new(config.retention.clone(), &tables),
            open: Uncommitted::default(),
            commit_interval: config.commit_interval,
            commit_rows: config.commit_rows.get(),
        })
    }

    /// Writes the held batches the open transaction lacks, beginning one if none is open.
    /// IMMEDIATE takes the write lock up front, so waiting for another writer happens in
    /// SQLite's busy handler instead of failing half-way through a batch.
    async fn write_held(&mut self, ctx: &SinkContext) -> Result<(), SqliteSinkError> {
        let commit_error = |source| SqliteSinkError::Commit {
            path: self.path.clone(),
            source,
        };
        if !self.open.begun {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *self.connection)
                .await
                .map_err(commit_error)?;
            self.open.begun = true;
            self.open.since = Some(std::time::Instant::now());
            self.open.written = 0;
        }
        while self.open.written < self.open.batches.len() {
            let (batch, counts) = &mut self.open.batches[self.open.written];
            let tables = batch.table_rows(ctx);
            counts.clear();
            for rows in &tables {
                let table = rows.table.name;
                self.writer
                    .insert(&mut self.connection, rows)
                    .await
                    .map_err(|e| match e {
                        InsertError::UnknownTable => SqliteSinkError::Schema {
                            path: self.path.clone(),
                            table,
                        },
                        InsertError::Sql(source) => SqliteSinkError::Write {
                            path: self.path.clone(),
                            table,
                            source,
                        },
                    })?;
                counts.push((rows.table.stream, rows.rows()));
            }
            self.open.written += 1;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), SqliteSinkError> {
        sqlx::query("COMMIT")
            .execute(&mut *self.connection)
            .await
            .map_err(|source| SqliteSinkError::Commit {
                path: self.path.clone(),
                source,
            })?;
        self.open.begun = false;
        Ok(())
    }

    /// After a failed statement: the transaction, if SQLite has not ended it already, is
    /// rolled back, and every held batch will be written again.
    async fn roll_back(&mut self) {
        if self.open.begun {
            // Fails harmlessly when SQLite already rolled the transaction back itself.
            let _ = sqlx::query("ROLLBACK").execute(&mut *self.connection).await;
        }
        self.open.begun = false;
        self.open.written = 0;
    }

    /// Whether the open transaction should commit now: the input keeps up (or has closed),
    /// or the transaction has held its rows or time long enough.
    fn commit_due(&self, flow: Flow, ctx: &SinkContext) -> bool {
        flow != Flow::Backlog
            || self.open.rows >= self.commit_rows
            || self
                .open
                .since
                .is_some_and(|since| since.elapsed() >= self.commit_interval)
            || ctx.shutdown.is_cancelled()
    }

    /// Closes the connection; SQLite checkpoints the WAL into the database file.
    async fn close(self) {
        self.checkpointer.stop().await;
        drop(self.connection);
        self.pool.close().await;
    }
}

/// The descriptions of the migrations `migrator` has left to apply to a file that already has
/// a schema (made by an earlier release); `None` for a file that is new or up to date.
async fn schema_upgrade(
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
) -> Option<Vec<String>> {
    // A new file has no migrations table: creating its schema is quick.
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .ok()
            .filter(|applied: &Vec<i64>| !applied.is_empty())?;
    let pending: Vec<String> = migrator
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
        .map(|migration| format!("{:04} {}", migration.version, migration.description))
        .collect();
    (!pending.is_empty()).then_some(pending)
}

/// `wal_autocheckpoint` is counted in pages, and the file's page size is known only once it
/// exists (a file made by an earlier release, or with another `page_size`, keeps its own):
/// so it is set on the writer's connection after the migrations, from the file's page size.
/// The writer holds that connection for the store's life, so the setting stays with it.
async fn set_wal_autocheckpoint(
    connection: &mut SqliteConnection,
    path: &Path,
    config: &SqliteSinkConfig,
) -> Result<(), sqlx::Error> {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *connection)
        .await?;
    if page_size != i64::from(config.page_size.bytes()) {
        info!(
            path = %path.display(),
            page_size,
            configured = config.page_size.bytes(),
            "The database file keeps the page size it was created with."
        );
    }
    let pages = (config.wal_autocheckpoint.0 / page_size.max(512) as u64).max(1);
    sqlx::query(AssertSqlSafe(format!(
        "PRAGMA wal_autocheckpoint = {pages}"
    )))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

impl BatchStore for SqliteStore {
    type Error = SqliteSinkError;

    /// Adds the batch to the open transaction (beginning one if none is open), deletes what
    /// retention has expired in it, and commits unless the input has a backlog and the
    /// transaction is still young and small. A failure rolls the transaction back and,
    /// once `retry` has waited it out, writes every batch it held again.
    async fn flush(
        &mut self,
        batch: &mut Batch,
        ctx: &mut SinkContext,
        retry: &mut Retry,
        flow: Flow,
    ) -> Result<Option<Stop>, SqliteSinkError> {
        let taken = std::mem::take(batch);
        let new_rows = taken.rows;
        if new_rows > 0 {
            self.open.rows += new_rows;
            self.open.batches.push((taken, Vec::new()));
        }
        if self.open.batches.is_empty() {
            return Ok(None);
        }
        let commit = self.commit_due(flow, ctx);
        loop {
            let mut result = self.write_held(ctx).await;
            if result.is_ok() {
                // Expired rows go in the same transaction: their pages are written once.
                self.retention
                    .after_flush(
                        &mut self.connection,
                        ctx.watermark(),
                        new_rows,
                        &ctx.name,
                        &ctx.metrics,
                    )
                    .await;
                if commit {
                    result = self.commit().await;
                }
            }
            match result {
                Ok(()) => break,
                Err(error) => {
                    self.roll_back().await;
                    if let Some(stop) = retry.wait_or_fail(error, self.open.rows, ctx).await? {
                        return Ok(Some(stop));
                    }
                }
            }
        }
        retry.recovered(ctx);
        if commit {
            for (_, counts) in self.open.batches.drain(..) {
                for (stream, rows) in counts {
                    ctx.metrics.written(stream, rows);
                }
            }
            debug!(sink = %ctx.name, rows = self.open.rows, "Committed rows to SQLite.");
            self.open = Uncommitted::default();
        }
        Ok(None)
    }

    fn durable(&self) -> bool {
        !self.open.begun && self.open.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_keys() {
        let config: SqliteSinkConfig =
            parse(r#"{"path": "a.db", "streams": ["logs"], "flush_interval": "250ms"}"#)
                .expect("valid config");
        assert_eq!(config.batch_size.get(), 100_000);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.cache_size, ByteSize(1 << 30));
        assert_eq!(config.wal_autocheckpoint, ByteSize(1 << 30));
        assert_eq!(config.page_size.bytes(), 16 * 1024);
        let sized: SqliteSinkConfig =
            parse(r#"{"path": "a.db", "cache_size": "256MiB", "wal_autocheckpoint": "64MiB"}"#)
                .expect("valid sizes");
        assert_eq!(sized.cache_size, ByteSize(256 << 20));
        assert_eq!(sized.wal_autocheckpoint, ByteSize(64 << 20));
        let bad_size = parse(r#"{"path": "a.db", "cache_size": "1 lots"}"#);
        assert!(bad_size.is_err_and(|e| e.to_string().contains("1 lots")));
        let unknown = parse(r#"{"path": "a.db", "streams": [], "bacth_size": 1}"#);
        assert!(unknown.is_err_and(|e| e.to_string().contains("bacth_size")));
        let zero = parse(r#"{"path": "a.db", "streams": [], "batch_size": 0}"#);
        assert!(zero.is_err());
    }

    /// The sizes are pragmas of the writer's connection: what the configured values must
    /// reach (values other than the defaults, so a config parsed but not applied fails).
    #[tokio::test]
    async fn a_new_file_takes_the_configured_page_size_cache_and_autocheckpoint() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("sized.db");
        let config = sized_config(&path, "8KiB");
        let mut store = SqliteStore::open(&path, &config, &[])
            .await
            .expect("the store opens");
        assert_eq!(writer_pragma(&mut store, "page_size").await, 8192);
        // A negative cache_size is KiB rather than pages.
        assert_eq!(writer_pragma(&mut store, "cache_size").await, -48 * 1024);
        assert_eq!(
            writer_pragma(&mut store, "wal_autocheckpoint").await,
            (8 << 20) / 8192
        );
        store.close().await;
    }

    /// SQLite fixes a file's page size when it is created: a file made with other pages (by
    /// an earlier release, whose pages were 4 KiB) keeps them, and the WAL's limit, counted
    /// in pages, is reckoned in that file's pages.
    #[tokio::test]
    async fn a_file_that_exists_keeps_its_page_size_and_its_wal_limit_in_bytes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("old.db");
        let store = SqliteStore::open(&path, &sized_config(&path, "4KiB"), &[])
            .await
            .expect("the store creates the file");
        store.close().await;
        let mut store = SqliteStore::open(&path, &sized_config(&path, "16KiB"), &[])
            .await
            .expect("the store opens the file again");
        assert_eq!(writer_pragma(&mut store, "page_size").await, 4096);
        assert_eq!(
            writer_pragma(&mut store, "wal_autocheckpoint").await,
            (8 << 20) / 4096
        );
        store.close().await;
    }

    /// The upgrade is announced (it may take minutes) only for a file that has a schema from
    /// an earlier release, and names what is left to apply.
    #[tokio::test]
    async fn an_upgrade_names_the_migrations_left_and_only_for_an_older_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let migrator = sqlx::migrate!("migrations/sqlite");
        let pool = |name: &str| {
            let path = dir.path().join(name);
            async move {
                SqlitePool::connect_with(
                    SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true),
                )
                .await
                .expect("pool")
            }
        };
        let new = pool("new.db").await;
        assert_eq!(schema_upgrade(&new, &migrator).await, None, "a new file");
        migrator.run(&new).await.expect("migrated");
        assert_eq!(
            schema_upgrade(&new, &migrator).await,
            None,
            "an up-to-date file"
        );

        // A file of the releases before issue #14: migrations 0001 and 0002 only.
        let old = pool("old.db").await;
        let first_two = dir.path().join("first-two");
        std::fs::create_dir(&first_two).expect("directory");
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for file in ["0001_tables.sql", "0002_metadata.sql"] {
            std::fs::copy(here.join(file), first_two.join(file)).expect("copy");
        }
        sqlx::migrate::Migrator::new(first_two.as_path())
            .await
            .expect("old migrations")
            .run(&old)
            .await
            .expect("old schema");
        let pending = schema_upgrade(&old, &migrator).await.expect("an upgrade");
        assert_eq!(pending, ["0003 append like", "0004 log retention by id"]);
    }

    #[test]
    fn page_sizes_are_those_sqlite_accepts() {
        let page = |size: &str| {
            parse(&format!(r#"{{"path": "a.db", "page_size": "{size}"}}"#))
                .map(|config| config.page_size.bytes())
        };
        assert_eq!(page("16KiB").expect("16 KiB"), 16384);
        assert_eq!(page("512B").expect("512 B"), 512);
        assert_eq!(page("64KiB").expect("64 KiB"), 65536);
        for bad in ["3KiB", "256B", "128KiB"] {
            let error = page(bad).expect_err(bad).to_string();
            assert!(error.contains("invalid page_size"), "{bad}: {error}");
        }
    }

    fn sized_config(path: &Path, page_size: &str) -> SqliteSinkConfig {
        parse(&format!(
            r#"{{"path": {path:?}, "cache_size": "48MiB", "wal_autocheckpoint": "8MiB",
                "page_size": "{page_size}"}}"#
        ))
        .expect("valid sizes")
    }

    /// A pragma's value on the writer's connection.
    async fn writer_pragma(store: &mut SqliteStore, name: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(&mut *store.connection)
            .await
            .expect(name)
    }

    fn parse(json: &str) -> Result<SqliteSinkConfig, serde_json::Error> {
        serde_json::from_str(json)
    }
}
