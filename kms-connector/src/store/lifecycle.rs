//! Key lifecycle updates: compare-and-set state transitions (with `DeleteDate`), description,
//! deletion protection and rotation policy.

use diesel::prelude::*;
use schemas::kms::KeyState;

use super::Store;
use super::conn::write_transaction;
use super::error::StoreError;
use super::keys::{load_key, lock_key};
use super::models::{Key, StateChange, next_rotation};
use super::schema::keys;
use super::types::AutomaticRotation;

impl Store {
    /// Moves a key from `change.expected` to `change.new` and stores `change.delete_date`,
    /// only if the key is still in `change.expected` when the update runs: of two requests or
    /// replicas racing from the same state, exactly one wins. Returns the key as updated.
    ///
    /// A `DeleteDate` goes with `PendingDeletion` and only with it (`InvalidArgument`
    /// otherwise). A protected key cannot enter `PendingDeletion` (`DeletionProtected`).
    /// `StateMismatch { actual }` when the key was not in the expected state.
    pub async fn compare_and_set_state(
        &self,
        key_id: &str,
        change: StateChange,
    ) -> Result<Key, StoreError> {
        let scheduling = change.new == KeyState::PendingDeletion;
        if scheduling != change.delete_date.is_some() {
            return Err(StoreError::InvalidArgument(
                "a delete date is set with PendingDeletion and only with it".to_owned(),
            ));
        }
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                // Scheduling deletion also requires the key to be unprotected.
                let allowed_protection = if scheduling {
                    vec![false]
                } else {
                    vec![false, true]
                };
                let updated = diesel::update(
                    keys::table
                        .find(&key_id)
                        .filter(keys::key_state.eq(change.expected.as_str()))
                        .filter(keys::deletion_protection.eq_any(allowed_protection)),
                )
                .set((
                    keys::key_state.eq(change.new.as_str()),
                    keys::delete_date.eq(change.delete_date.map(|t| t.0)),
                ))
                .execute(conn)?;
                if updated == 0 {
                    let key = load_key(conn, &key_id)?;
                    return Err(if key.key_state == change.expected {
                        StoreError::DeletionProtected
                    } else {
                        StoreError::StateMismatch {
                            actual: key.key_state,
                        }
                    });
                }
                load_key(conn, &key_id)
            })
        })
        .await
    }

    /// Replaces the key's description (empty clears it).
    pub async fn update_description(
        &self,
        key_id: &str,
        description: String,
    ) -> Result<Key, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                lock_key(conn, &key_id)?;
                diesel::update(keys::table.find(&key_id))
                    .set(keys::description.eq(description))
                    .execute(conn)?;
                load_key(conn, &key_id)
            })
        })
        .await
    }

    /// Turns deletion protection on (with its description) or off (clearing the description).
    /// Turning it on for a key pending deletion fails with `StateMismatch`.
    pub async fn set_deletion_protection(
        &self,
        key_id: &str,
        enabled: bool,
        description: Option<String>,
    ) -> Result<Key, StoreError> {
        let key_id = key_id.to_owned();
        let description = if enabled { description } else { None };
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let updated = diesel::update(
                    keys::table
                        .find(&key_id)
                        .filter(keys::key_state.ne(KeyState::PendingDeletion.as_str())),
                )
                .set((
                    keys::deletion_protection.eq(enabled),
                    keys::deletion_protection_description.eq(description),
                ))
                .execute(conn)?;
                if updated == 0 {
                    let key = load_key(conn, &key_id)?;
                    if enabled {
                        return Err(StoreError::StateMismatch {
                            actual: key.key_state,
                        });
                    }
                    // Off on a pending-deletion key: it cannot be protected, nothing to do.
                    return Ok(key);
                }
                load_key(conn, &key_id)
            })
        })
        .await
    }

    /// Sets `AutomaticRotation` and `RotationInterval`; `NextRotationDate` becomes
    /// `LastRotationDate` (or the creation date) + interval while rotation is `Enabled` or
    /// `Suspended`, and is cleared when `Disabled`. `Enabled` needs an interval
    /// (`InvalidArgument`).
    pub async fn set_rotation_policy(
        &self,
        key_id: &str,
        rotation: AutomaticRotation,
        interval_secs: Option<i64>,
    ) -> Result<Key, StoreError> {
        if rotation == AutomaticRotation::Enabled && interval_secs.is_none_or(|s| s <= 0) {
            return Err(StoreError::InvalidArgument(
                "automatic rotation needs a positive interval".to_owned(),
            ));
        }
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let key = lock_key(conn, &key_id)?;
                let last = key.last_rotation_date.unwrap_or(key.created_at);
                let next = next_rotation(rotation, interval_secs, Some(last));
                diesel::update(keys::table.find(&key_id))
                    .set((
                        keys::automatic_rotation.eq(rotation.as_str()),
                        keys::rotation_interval_secs.eq(interval_secs),
                        keys::next_rotation_date.eq(next.map(|t| t.0)),
                    ))
                    .execute(conn)?;
                load_key(conn, &key_id)
            })
        })
        .await
    }
}
