//! Test databases for the store suite: SQLite in a temp dir, or a fresh PostgreSQL database per
//! test on the cluster of `HYOK_TEST_DATABASE_URL` (started by `scripts/pg-test.sh` when unset).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::{Connection, PgConnection, RunQueryDsl};
use kms_connector::store::Store;

pub mod fixtures;
pub mod keys;
pub mod lifecycle;
pub mod metadata;
pub mod trail;

/// A store on a database of its own, dropped with it.
pub struct TestDb {
    /// The store under test.
    pub store: Store,
    /// Its URL, to open more handles (replicas) on the same database.
    pub url: String,
    // Dropped after `store` (declaration order), once its pooled connections are closed.
    _dir: Option<tempfile::TempDir>,
    _postgres: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A SQLite database in a fresh temp dir, opened through a `sqlite://` URL.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::open(&url).await.expect("open SQLite store");
        Self {
            store,
            url,
            _dir: Some(dir),
            _postgres: None,
        }
    }

    /// A fresh PostgreSQL database named after the test.
    pub async fn postgres(test: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin_url = pg_admin_url();
        let suffix: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "hyok_{}_{}_{suffix}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let create = {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            tokio::task::spawn_blocking(move || {
                let mut admin = PgConnection::establish(&admin_url).unwrap_or_else(|e| {
                    panic!("cannot connect to PostgreSQL at the test URL: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE template0"))
                    .execute(&mut admin)
                    .expect("CREATE DATABASE");
            })
        };
        create.await.expect("create database task");
        let url = with_database(&admin_url, &name);
        let store = Store::open(&url).await.expect("open PostgreSQL store");
        Self {
            store,
            url,
            _dir: None,
            _postgres: Some(PgDatabase { admin_url, name }),
        }
    }

    /// Another handle on the same database: its own pool, like another replica.
    pub async fn replica(&self) -> Store {
        Store::open(&self.url).await.expect("open a second store")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort (the cluster is throwaway); FORCE in case a handle is still open.
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// The admin URL of the test cluster: `HYOK_TEST_DATABASE_URL`, or what
/// `scripts/pg-test.sh start` prints. Panics (fails the test) if PostgreSQL cannot be had:
/// the PostgreSQL half of the suite is never skipped.
pub fn pg_admin_url() -> String {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("HYOK_TEST_DATABASE_URL") {
            if !url.trim().is_empty() {
                return Ok(url.trim().to_owned());
            }
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} start failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .rev()
            .find(|line| line.starts_with("postgres://"))
            .map(str::to_owned)
            .ok_or_else(|| format!("{} start printed no URL:\n{stdout}", script.display()))
    })
    .clone()
    .unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for the store tests and could not be started.\n{e}\n\
             Set HYOK_TEST_DATABASE_URL to a PostgreSQL superuser URL, or install the server \
             (scripts/deps.sh) so that scripts/pg-test.sh can start one."
        )
    })
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let base = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    format!("{base}/{name}{query}")
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://u@h:1/a?sslmode=disable", "b"),
        "postgres://u@h:1/b?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "b"), "postgres://u@h:1/b");
}
