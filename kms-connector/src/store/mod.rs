//! The metadata store of the kms-connector: instances, keys and their versions, aliases, tags,
//! key policies, the audit trail and the OpenAPI nonce-replay table.
//!
//! One code path serves SQLite (one machine, the default) and PostgreSQL (replicas sharing one
//! database): queries are written against [`DbConnection`], a `diesel::MultiConnection` enum,
//! and drawn from an r2d2 pool. The schema is embedded per backend (`migrations/sqlite`,
//! `migrations/postgres`) and brought up to date by [`Store::open`].
//!
//! Every public method is `async` and runs its blocking diesel work on tokio's blocking pool,
//! never on the executor. State a replica needs from another (key states, nonces, aliases) lives
//! only in the database; updates that must not be won twice (state transitions, rotations,
//! purges) are conditional `UPDATE`s inside one transaction.
//!
//! Times are stored as `BIGINT` Unix milliseconds UTC ([`UnixMillis`]). The store never sees
//! clear key material: software versions carry bytes sealed by the caller.

mod aliases;
mod audit;
mod conn;
mod error;
mod extra;
mod instances;
mod keys;
mod lifecycle;
mod models;
mod nonces;
pub mod schema;
mod tags;
mod types;
mod versions;

use std::sync::Arc;

use diesel::connection::SimpleConnection;

pub use self::conn::{Backend, DEFAULT_OPERATION_TIMEOUT, StoreOptions};
pub use self::error::{Entity, StoreError};
pub use self::models::{
    Alias, AuditEvent, AuditQuery, DEFAULT_POLICY_NAME, Instance, Key, KeyFilter, KeyTag,
    KeyVersion, NewInstance, NewKey, StateChange, Tag,
};
pub use self::tags::MAX_TAGS_PER_KEY;
pub use self::types::{AutomaticRotation, ConnectionState, InstanceKind, Page, Paged, UnixMillis};
pub use schemas::kms::{KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel};

use self::conn::{DbConnection, DbPool, Target};

/// A handle on the metadata store; cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    backend: Backend,
    operation_timeout: std::time::Duration,
}

impl std::fmt::Debug for Store {
    // The URL may hold a password: only the backend is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `url` with default pool settings and runs pending migrations.
    ///
    /// `postgres://…` (or `postgresql://…`) selects PostgreSQL; `sqlite:///abs/path.db`,
    /// `sqlite:rel/path.db` or a bare path selects SQLite (the file and its directory are
    /// created if missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// [`Store::open`] with explicit pool settings.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let backend = target.backend();
        let operation_timeout = options.operation_timeout;
        let pool = tokio::task::spawn_blocking(move || conn::open_pool(target, &options))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                operation_timeout,
            }),
        })
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Checks that the database answers (readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| Ok(conn.batch_execute("SELECT 1")?)).await
    }

    /// Runs `work` with a pooled connection on the blocking pool, answering within the
    /// operation timeout whatever the database does: the pool wait, the SQLite busy timeout
    /// and the PostgreSQL statement timeout end the work itself soon after. (Work that the
    /// caller stopped waiting for may still complete: callers treat `Unavailable` like any
    /// timeout, whose outcome is unknown.)
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let timeout = inner.operation_timeout;
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .pool
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            work(&mut conn)
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(joined) => joined.map_err(|e| StoreError::Task(e.to_string()))?,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}
