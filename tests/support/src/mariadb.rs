//! MariaDB for tests: a fresh database per test on the shared server, a private `mariadbd`
//! a test may stop and restart, and table dumps comparable with SQLite's.
//!
//! The shared server is `SLUICE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`);
//! `scripts/test.sh` makes sure one runs. Shared by the connector tests and the whole-program
//! tests.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, TypeInfo, ValueRef};

/// The server every test shares, without a database.
pub fn server_url() -> String {
    std::env::var("SLUICE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

pub async fn connect(url: &str) -> MySqlConnection {
    let options: MySqlConnectOptions = url.parse().expect("a MySQL URL");
    options.connect().await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test MariaDB at {url}: {e} \
             (run the tests with scripts/test.sh, which starts one, or set SLUICE_TEST_MYSQL_URL)"
        )
    })
}

/// A database of its own on a server, dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    server: String,
    pub name: String,
}

impl TestDatabase {
    /// A name no other test (or run) uses; the database itself is created by the sink.
    pub fn new(server: &str, test: &str) -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!(
            "sluice_test_{test}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TestDatabase {
            server: server.to_owned(),
            name,
        }
    }

    /// On the shared server.
    pub fn shared(test: &str) -> TestDatabase {
        TestDatabase::new(&server_url(), test)
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    pub async fn connect(&self) -> MySqlConnection {
        connect(&self.url()).await
    }

    pub async fn drop_database(self) {
        let mut connection = connect(&self.server).await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{}`",
            self.name
        )))
        .execute(&mut connection)
        .await
        .expect("database dropped");
    }

    /// Rows in `table` (a SPEC table name).
    pub async fn count(&self, table: &str) -> i64 {
        let mut connection = self.connect().await;
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut connection)
            .await
            .expect("table readable")
    }
}

/// A stored value, by the column's type, so the two stores compare cell by cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// The tables of SPEC §3: every stream's rows, the ones a restart continues exactly (§9).
pub const SECTION_3_TABLES: [&str; 7] = [
    "log_message",
    "container_metric",
    "http_start_stop",
    "app_event",
    "app_metric_rollup",
    "platform_metric_rollup",
    "platform_error",
];

/// `(table, primary key)` of every SPEC table.
pub const TABLE_KEYS: [(&str, &str); 10] = [
    ("log_message", "id"),
    ("container_metric", "app_id, instance_index, ts"),
    ("http_start_stop", "request_id, peer_type"),
    ("app_event", "app_id, ts, event"),
    ("app_metric_rollup", "app_id, minute"),
    (
        "platform_metric_rollup",
        "origin, job, instance, name, minute",
    ),
    ("platform_error", "origin, ts, source, code"),
    // SPEC §11 (`app` last: the names above start with it).
    ("space_metric_rollup", "space_id, minute"),
    ("org_metric_rollup", "org_id, minute"),
    ("app", "app_id"),
];

/// The key of a SPEC table, or of a rollup table of an extra width (`app_metric_rollup_1h`).
fn order_by(table: &str) -> &'static str {
    TABLE_KEYS
        .iter()
        .find(|(name, _)| {
            table
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        })
        .map(|(_, key)| *key)
        .expect("a SPEC table")
}

/// Every row of `table` in a MySQL database, ordered by primary key.
pub async fn dump_mysql(connection: &mut MySqlConnection, table: &str) -> Vec<Vec<Cell>> {
    let sql = format!("SELECT * FROM {table} ORDER BY {}", order_by(table));
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(connection)
        .await
        .expect("table readable");
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("column");
                    if raw.is_null() {
                        return Cell::Null;
                    }
                    match raw.type_info().name() {
                        "BIGINT" => Cell::Int(row.get(i)),
                        "INT" => Cell::Int(i64::from(row.get::<i32, _>(i))),
                        "DOUBLE" => Cell::Real(row.get(i)),
                        "CHAR" | "VARCHAR" | "TEXT" | "MEDIUMTEXT" => Cell::Text(row.get(i)),
                        // Text in a binary collation (utf8mb4_bin) is reported as bytes.
                        "BINARY" | "VARBINARY" | "BLOB" | "MEDIUMBLOB" => Cell::Text(
                            String::from_utf8(row.get::<Vec<u8>, _>(i)).expect("UTF-8 text"),
                        ),
                        other => panic!("unexpected column type {other} in {table}"),
                    }
                })
                .collect()
        })
        .collect()
}

/// Every row of `table` in a SQLite file, ordered by primary key; typed by storage class.
pub async fn dump_sqlite(path: &Path, table: &str) -> Vec<Vec<Cell>> {
    let mut connection: SqliteConnection = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .expect("the SQLite store exists");
    let sql = format!("SELECT * FROM {table} ORDER BY {}", order_by(table));
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut connection)
        .await
        .expect("table readable");
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("column");
                    if raw.is_null() {
                        return Cell::Null;
                    }
                    match raw.type_info().name() {
                        "INTEGER" => Cell::Int(row.get(i)),
                        "REAL" => Cell::Real(row.get(i)),
                        "TEXT" => Cell::Text(row.get(i)),
                        other => panic!("unexpected storage class {other} in {table}"),
                    }
                })
                .collect()
        })
        .collect()
}

/// A `mariadbd` of the test's own, on a free port with a temporary data directory, so a
/// test can stop and restart it without disturbing the shared server. No grant tables:
/// any user may connect.
pub struct PrivateServer {
    pub port: u16,
    datadir: tempfile::TempDir,
    child: Option<Child>,
}

fn mariadbd() -> PathBuf {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("mariadbd is installed (scripts/test.sh installs mariadb-server)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PrivateServer {
    /// Initialises a data directory and starts the server; returns once it accepts queries.
    pub async fn start() -> PrivateServer {
        let datadir = tempfile::tempdir().expect("temporary data directory");
        let data = datadir.path().join("data");
        let status = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={}", current_user()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db runs");
        assert!(status.success(), "mariadb-install-db failed: {status}");
        let mut server = PrivateServer {
            port: free_port(),
            datadir,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Starts the server on its data directory and port (after [`PrivateServer::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the private server is running");
        let dir = self.datadir.path();
        let child = Command::new(mariadbd())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", current_user()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M",
                "--skip-log-bin",
            ])
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let options: MySqlConnectOptions = self.url().parse().expect("a MySQL URL");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(connection) = options.connect().await {
                let _ = connection.close().await;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("the private mariadbd exited ({status}):\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private mariadbd did not accept connections within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server at once (SIGKILL): an outage, as a crash or a network cut looks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".to_owned())
}
