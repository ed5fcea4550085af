//! Key versions: rotation (a new primary version), lookups by version id (Decrypt routes on
//! the 36-byte id at the head of the ciphertext) and listing.

use diesel::prelude::*;
use schemas::kms::KeyState;

use super::Store;
use super::conn::{DbConnection, read_transaction, write_transaction};
use super::error::{Entity, StoreError, on};
use super::keys::{load_key, lock_key};
use super::models::{Key, KeyVersion, next_rotation};
use super::schema::{key_versions, keys};
use super::types::{Page, Paged, count_to_u64};

impl Store {
    /// Adds `version` to its key and makes it the primary version (rotation, CreateKeyVersion):
    /// `LastRotationDate` becomes its creation time and `NextRotationDate` follows.
    ///
    /// Compare-and-set on both the key state (`StateMismatch` if not `expected_state`) and the
    /// primary version the caller saw (`Conflict` if another rotation got there first), so
    /// two replicas rotating the same key add one version, not two.
    pub async fn add_key_version(
        &self,
        version: KeyVersion,
        expected_state: KeyState,
        expected_primary_version: &str,
    ) -> Result<Key, StoreError> {
        version.validate()?;
        let expected_primary_version = expected_primary_version.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let key = lock_key(conn, &version.key_id)?;
                if key.key_state != expected_state {
                    return Err(StoreError::StateMismatch {
                        actual: key.key_state,
                    });
                }
                if key.primary_key_version != expected_primary_version {
                    return Err(StoreError::Conflict(
                        "the primary key version changed concurrently".to_owned(),
                    ));
                }
                let key_id = version.key_id.clone();
                let primary = version.key_version_id.clone();
                let last = version.created_at;
                diesel::insert_into(key_versions::table)
                    .values(version)
                    .execute(conn)
                    .map_err(on(Entity::KeyVersion))?;
                let next = next_rotation(
                    key.automatic_rotation,
                    key.rotation_interval_secs,
                    Some(last),
                );
                diesel::update(keys::table.find(&key_id))
                    .set((
                        keys::primary_key_version.eq(primary),
                        keys::last_rotation_date.eq(last.0),
                        keys::next_rotation_date.eq(next.map(|t| t.0)),
                    ))
                    .execute(conn)?;
                load_key(conn, &key_id)
            })
        })
        .await
    }

    /// The version with this id. `NotFound(KeyVersion)` otherwise.
    pub async fn get_key_version(&self, key_version_id: &str) -> Result<KeyVersion, StoreError> {
        let key_version_id = key_version_id.to_owned();
        self.run(move |conn| load_version(conn, &key_version_id))
            .await
    }

    /// The version with this id and its key, read together (the Decrypt path).
    pub async fn get_key_by_version(
        &self,
        key_version_id: &str,
    ) -> Result<(Key, KeyVersion), StoreError> {
        let key_version_id = key_version_id.to_owned();
        self.run(move |conn| {
            read_transaction(conn, |conn| {
                let version = load_version(conn, &key_version_id)?;
                let key = load_key(conn, &version.key_id)?;
                Ok((key, version))
            })
        })
        .await
    }

    /// Up to `limit` versions with sealed material (software keys) whose id sorts after
    /// `after`, by id: a resumable walk over every sealed row (root key rotation).
    pub async fn sealed_versions_after(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<KeyVersion>, StoreError> {
        self.run(move |conn| {
            let mut query = key_versions::table
                .filter(key_versions::sealed_material.is_not_null())
                .into_boxed();
            if let Some(after) = &after {
                query = query.filter(key_versions::key_version_id.gt(after));
            }
            Ok(query
                .order(key_versions::key_version_id.asc())
                .limit(i64::from(limit))
                .select(KeyVersion::as_select())
                .load(conn)?)
        })
        .await
    }

    /// Replaces a version's sealed material if it is still `old` (compare-and-set, so that a
    /// rotation run twice, or beside another, never overwrites a newer seal). Returns whether
    /// it replaced it.
    pub async fn replace_sealed_material(
        &self,
        key_version_id: &str,
        old: Vec<u8>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let key_version_id = key_version_id.to_owned();
        self.run(move |conn| {
            let updated = diesel::update(
                key_versions::table
                    .find(&key_version_id)
                    .filter(key_versions::sealed_material.eq(&old)),
            )
            .set(key_versions::sealed_material.eq(&new))
            .execute(conn)?;
            Ok(updated == 1)
        })
        .await
    }

    /// One page of a key's versions, oldest first. `NotFound(Key)` if the key does not exist.
    pub async fn list_key_versions(
        &self,
        key_id: &str,
        page: Page,
    ) -> Result<Paged<KeyVersion>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            read_transaction(conn, |conn| {
                let total: i64 = key_versions::table
                    .filter(key_versions::key_id.eq(&key_id))
                    .count()
                    .get_result(conn)?;
                if total == 0 {
                    // Every key has a version; none means no key.
                    load_key(conn, &key_id)?;
                }
                let items = key_versions::table
                    .filter(key_versions::key_id.eq(&key_id))
                    .order((
                        key_versions::created_at.asc(),
                        key_versions::key_version_id.asc(),
                    ))
                    .limit(page.limit())
                    .offset(page.offset())
                    .select(KeyVersion::as_select())
                    .load(conn)?;
                Ok(Paged {
                    items,
                    total_count: count_to_u64(total),
                    page,
                })
            })
        })
        .await
    }
}

fn load_version(conn: &mut DbConnection, key_version_id: &str) -> Result<KeyVersion, StoreError> {
    key_versions::table
        .find(key_version_id)
        .select(KeyVersion::as_select())
        .first(conn)
        .map_err(on(Entity::KeyVersion))
}
