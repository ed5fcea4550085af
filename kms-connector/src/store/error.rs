//! The store's error vocabulary. Messages name tables, constraints and states, never values:
//! no row content (and so no sealed material or secret) ever reaches an error.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use schemas::kms::KeyState;

/// What a [`StoreError::NotFound`] or [`StoreError::AlreadyExists`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A KMS instance (`kst-…`).
    Instance,
    /// A key (`key-…`).
    Key,
    /// A key version (36-char id).
    KeyVersion,
    /// An alias (`alias/…`).
    Alias,
    /// A key policy.
    Policy,
    /// An audit event (by event id).
    AuditEvent,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Instance => "instance",
            Self::Key => "key",
            Self::KeyVersion => "key version",
            Self::Alias => "alias",
            Self::Policy => "key policy",
            Self::AuditEvent => "audit event",
        })
    }
}

/// Everything a [`Store`](super::Store) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(Entity),
    /// A row with the same unique identifier exists (alias name taken, duplicate key or
    /// version id, …).
    #[error("{0} already exists")]
    AlreadyExists(Entity),
    /// Compare-and-set lost: the key is not in the state the caller expected (another request
    /// or replica changed it first). `actual` is the state seen in the same transaction.
    #[error("key state is {}, not the expected one", actual.as_str())]
    StateMismatch {
        /// The state the key was in when the update was refused.
        actual: KeyState,
    },
    /// A key with deletion protection cannot be scheduled for deletion.
    #[error("key is protected from deletion")]
    DeletionProtected,
    /// Another constraint or precondition refused the write (a concurrent rotation, a deletion
    /// window that has not ended, a referenced row in use, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A key would carry more tags than it may.
    #[error("a key carries at most {max} tags")]
    TooManyTags {
        /// The limit.
        max: usize,
    },
    /// The caller passed a value the store cannot hold (bad page, bad version id, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The database is locked or a serialisation failure occurred: retrying may succeed.
    #[error("database busy: {0}")]
    Busy(String),
    /// The pool could not hand out a connection (database down, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Bringing the schema up to date failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored value is not one the store writes (an unknown state name, …).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// The blocking task running the query panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation => Self::Conflict(message),
                    DatabaseErrorKind::SerializationFailure => Self::Busy(message),
                    DatabaseErrorKind::ClosedConnection => Self::Unavailable(message),
                    _ if is_sqlite_busy(&message) => Self::Busy(message),
                    _ => Self::Database(message),
                }
            }
            // Callers that expect "no row" map it to NotFound(entity) themselves.
            DieselError::NotFound => Self::Database("unexpected empty result".to_owned()),
            other => Self::Database(other.to_string()),
        }
    }
}

/// A lock the database did not grant within its timeout: SQLite's busy timeout, or
/// PostgreSQL's `statement_timeout` / `lock_timeout`. Retrying may succeed.
fn is_sqlite_busy(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("database table is locked")
        || message.contains("canceling statement due to statement timeout")
        || message.contains("canceling statement due to lock timeout")
}

/// Maps a diesel error seen while reading or writing `entity`: a missing row becomes
/// `NotFound(entity)`, a unique violation `AlreadyExists(entity)`; the rest as [`From`].
pub(crate) fn on(entity: Entity) -> impl Fn(DieselError) -> StoreError {
    move |error| match error {
        DieselError::NotFound => StoreError::NotFound(entity),
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StoreError::AlreadyExists(entity)
        }
        other => other.into(),
    }
}
