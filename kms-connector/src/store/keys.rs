//! Keys: creation (with first version, tags and policy in one transaction), lookups, listing
//! with filters and paging, and the final purge when the deletion window ends.

use std::collections::HashSet;

use diesel::prelude::*;
use schemas::kms::KeyState;

use super::Store;
use super::conn::{Db, DbConnection, read_transaction, write_transaction};
use super::error::{Entity, StoreError, on};
use super::instances::load_instance;
use super::models::{
    DEFAULT_POLICY_NAME, Key, KeyFilter, KeyRow, KeyTag, KeyVersion, NewKey, Tag, next_rotation,
};
use super::schema::{aliases, key_policies, key_versions, keys, tags};
use super::types::{AutomaticRotation, Page, Paged, UnixMillis, count_to_u64};

impl Store {
    /// Creates a key, its first (primary) version, its tags and its policy (stored as
    /// [`DEFAULT_POLICY_NAME`]) in one transaction: on any error nothing of it remains.
    ///
    /// `LastRotationDate` is set to the first version's creation; `NextRotationDate` follows
    /// from the rotation settings. Errors: `NotFound(Instance)`, `AlreadyExists(Key)`,
    /// `AlreadyExists(KeyVersion)` (version ids are global), `InvalidArgument` (version id not
    /// 36 ASCII chars, version of another key, the same tag key twice).
    pub async fn create_key(
        &self,
        new: NewKey,
        first_version: KeyVersion,
        tags: Vec<Tag>,
        policy: Option<String>,
    ) -> Result<Key, StoreError> {
        first_version.validate()?;
        if first_version.key_id != new.key_id {
            return Err(StoreError::InvalidArgument(
                "the first version must belong to the new key".to_owned(),
            ));
        }
        let mut seen = HashSet::new();
        if !tags.iter().all(|tag| seen.insert(tag.tag_key.as_str())) {
            return Err(StoreError::InvalidArgument("duplicate tag key".to_owned()));
        }
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                load_instance(conn, &new.instance_id)?;
                let last_rotation = Some(first_version.created_at);
                let row = KeyRow {
                    key_id: new.key_id.clone(),
                    account_id: new.account_id,
                    region: new.region,
                    instance_id: new.instance_id,
                    key_spec: new.key_spec.as_str().to_owned(),
                    key_usage: new.key_usage.as_str().to_owned(),
                    origin: new.origin.as_str().to_owned(),
                    protection_level: new.protection_level.as_str().to_owned(),
                    key_state: new.key_state.as_str().to_owned(),
                    description: new.description,
                    creator: new.creator,
                    created_at: new.created_at.0,
                    delete_date: None,
                    deletion_protection: false,
                    deletion_protection_description: None,
                    external_key_id: new.external_key_id,
                    primary_key_version: first_version.key_version_id.clone(),
                    automatic_rotation: new.automatic_rotation.as_str().to_owned(),
                    rotation_interval_secs: new.rotation_interval_secs,
                    last_rotation_date: last_rotation.map(|t| t.0),
                    next_rotation_date: next_rotation(
                        new.automatic_rotation,
                        new.rotation_interval_secs,
                        last_rotation,
                    )
                    .map(|t| t.0),
                    material_expire_time: new.material_expire_time.map(|t| t.0),
                };
                diesel::insert_into(keys::table)
                    .values(&row)
                    .execute(conn)
                    .map_err(on(Entity::Key))?;
                diesel::insert_into(key_versions::table)
                    .values(first_version)
                    .execute(conn)
                    .map_err(on(Entity::KeyVersion))?;
                // Row by row: the multi-backend connection has no multi-row INSERT.
                for tag in tags {
                    diesel::insert_into(tags::table)
                        .values(KeyTag {
                            key_id: new.key_id.clone(),
                            tag_key: tag.tag_key,
                            tag_value: tag.tag_value,
                        })
                        .execute(conn)?;
                }
                if let Some(policy) = policy {
                    diesel::insert_into(key_policies::table)
                        .values((
                            key_policies::key_id.eq(&new.key_id),
                            key_policies::policy_name.eq(DEFAULT_POLICY_NAME),
                            key_policies::policy.eq(policy),
                        ))
                        .execute(conn)?;
                }
                Key::try_from(row)
            })
        })
        .await
    }

    /// The key with this id (any state). `NotFound(Key)` otherwise.
    pub async fn get_key(&self, key_id: &str) -> Result<Key, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| load_key(conn, &key_id)).await
    }

    /// One page of an account's keys in a region, oldest first (ties by key id), matching
    /// `filter`, with the total count of matches.
    pub async fn list_keys(
        &self,
        account_id: &str,
        region: &str,
        filter: KeyFilter,
        page: Page,
    ) -> Result<Paged<Key>, StoreError> {
        let (account_id, region) = (account_id.to_owned(), region.to_owned());
        self.run(move |conn| {
            read_transaction(conn, |conn| {
                let total: i64 = filtered_keys(&account_id, &region, &filter)
                    .count()
                    .get_result(conn)?;
                let items = filtered_keys(&account_id, &region, &filter)
                    .order((keys::created_at.asc(), keys::key_id.asc()))
                    .limit(page.limit())
                    .offset(page.offset())
                    .select(KeyRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(Key::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Paged {
                    items,
                    total_count: count_to_u64(total),
                    page,
                })
            })
        })
        .await
    }

    /// Ids of an instance's keys pending deletion whose `DeleteDate` is at or before `now`,
    /// earliest first. Per instance, so that a replica sweeps the instances it serves and one
    /// instance's backlog never starves another's.
    pub async fn keys_due_for_deletion(
        &self,
        instance_id: &str,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            Ok(keys::table
                .filter(keys::instance_id.eq(&instance_id))
                .filter(keys::key_state.eq(KeyState::PendingDeletion.as_str()))
                .filter(keys::delete_date.le(now.0))
                .order((keys::delete_date.asc(), keys::key_id.asc()))
                .limit(i64::from(limit))
                .select(keys::key_id)
                .load(conn)?)
        })
        .await
    }

    /// Ids of an instance's `Enabled` keys with automatic rotation `Enabled` whose
    /// `NextRotationDate` is at or before `now`, earliest first.
    pub async fn keys_due_for_rotation(
        &self,
        instance_id: &str,
        now: UnixMillis,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            Ok(keys::table
                .filter(keys::instance_id.eq(&instance_id))
                .filter(keys::automatic_rotation.eq(AutomaticRotation::Enabled.as_str()))
                .filter(keys::key_state.eq(KeyState::Enabled.as_str()))
                .filter(keys::next_rotation_date.le(now.0))
                .order((keys::next_rotation_date.asc(), keys::key_id.asc()))
                .limit(i64::from(limit))
                .select(keys::key_id)
                .load(conn)?)
        })
        .await
    }

    /// Deletes a key whose deletion window has ended, with everything it owns (versions, tags,
    /// aliases, policies), in one transaction. Returns the deleted versions so the caller can
    /// destroy backend objects (HSM labels) they name.
    ///
    /// Guarded, so that a sweeper on any replica cannot race `CancelKeyDeletion`: the key must
    /// still be `PendingDeletion` with `DeleteDate` ≤ `now`, else `StateMismatch` (another
    /// state) or `Conflict` (window not ended). `NotFound(Key)` if already gone.
    pub async fn purge_key(
        &self,
        key_id: &str,
        now: UnixMillis,
    ) -> Result<Vec<KeyVersion>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                // A no-op update that takes the row lock only if the guard holds.
                let locked = diesel::update(
                    keys::table
                        .find(&key_id)
                        .filter(keys::key_state.eq(KeyState::PendingDeletion.as_str()))
                        .filter(keys::delete_date.le(now.0)),
                )
                .set(keys::key_state.eq(keys::key_state))
                .execute(conn)?;
                if locked == 0 {
                    let key = load_key(conn, &key_id)?;
                    return Err(if key.key_state == KeyState::PendingDeletion {
                        StoreError::Conflict("the deletion window has not ended".to_owned())
                    } else {
                        StoreError::StateMismatch {
                            actual: key.key_state,
                        }
                    });
                }
                let versions = key_versions::table
                    .filter(key_versions::key_id.eq(&key_id))
                    .order((
                        key_versions::created_at.asc(),
                        key_versions::key_version_id.asc(),
                    ))
                    .select(KeyVersion::as_select())
                    .load(conn)?;
                diesel::delete(tags::table.filter(tags::key_id.eq(&key_id))).execute(conn)?;
                diesel::delete(aliases::table.filter(aliases::key_id.eq(&key_id))).execute(conn)?;
                diesel::delete(key_policies::table.filter(key_policies::key_id.eq(&key_id)))
                    .execute(conn)?;
                diesel::delete(key_versions::table.filter(key_versions::key_id.eq(&key_id)))
                    .execute(conn)?;
                diesel::delete(keys::table.find(&key_id)).execute(conn)?;
                Ok(versions)
            })
        })
        .await
    }
}

/// Takes the key's row lock for the rest of the transaction (a no-op `UPDATE`: PostgreSQL has no
/// `SELECT … FOR UPDATE` that SQLite shares; SQLite's `BEGIN IMMEDIATE` already serialises
/// writers) and returns the key as it is now. Read-modify-write sequences start with it.
pub(crate) fn lock_key(conn: &mut DbConnection, key_id: &str) -> Result<Key, StoreError> {
    let locked = diesel::update(keys::table.find(key_id))
        .set(keys::key_state.eq(keys::key_state))
        .execute(conn)?;
    if locked == 0 {
        return Err(StoreError::NotFound(Entity::Key));
    }
    load_key(conn, key_id)
}

pub(crate) fn load_key(conn: &mut DbConnection, key_id: &str) -> Result<Key, StoreError> {
    keys::table
        .find(key_id)
        .select(KeyRow::as_select())
        .first(conn)
        .map_err(on(Entity::Key))
        .and_then(Key::try_from)
}

/// The keys of one account and region that pass `filter` (AND across fields, OR within).
fn filtered_keys<'a>(
    account_id: &'a str,
    region: &'a str,
    filter: &'a KeyFilter,
) -> keys::BoxedQuery<'a, Db> {
    let mut query = keys::table
        .filter(keys::account_id.eq(account_id))
        .filter(keys::region.eq(region))
        .into_boxed();
    if !filter.key_states.is_empty() {
        let states: Vec<&str> = filter.key_states.iter().map(|s| s.as_str()).collect();
        query = query.filter(keys::key_state.eq_any(states));
    }
    if !filter.key_specs.is_empty() {
        let specs: Vec<&str> = filter.key_specs.iter().map(|s| s.as_str()).collect();
        query = query.filter(keys::key_spec.eq_any(specs));
    }
    if !filter.key_usages.is_empty() {
        let usages: Vec<&str> = filter.key_usages.iter().map(|u| u.as_str()).collect();
        query = query.filter(keys::key_usage.eq_any(usages));
    }
    if !filter.protection_levels.is_empty() {
        let levels: Vec<&str> = filter
            .protection_levels
            .iter()
            .map(|p| p.as_str())
            .collect();
        query = query.filter(keys::protection_level.eq_any(levels));
    }
    if !filter.instance_ids.is_empty() {
        query = query.filter(keys::instance_id.eq_any(&filter.instance_ids));
    }
    query
}
