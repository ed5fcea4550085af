//! Tags and key policies: small per-key rows, written with upsert semantics.
//!
//! diesel's multi-backend connection has no `ON CONFLICT`, so an upsert is `UPDATE`, then
//! `INSERT` when nothing was updated, under the key's row lock: concurrent writers of one key
//! take turns, so the `INSERT` cannot collide and no value is lost.

use diesel::prelude::*;

use super::Store;
use super::conn::write_transaction;
use super::error::{Entity, StoreError, on};
use super::keys::lock_key;
use super::models::{KeyTag, Tag};
use super::schema::{key_policies, tags};

/// Most tags one key carries (spec §4.6).
pub const MAX_TAGS_PER_KEY: usize = 20;

impl Store {
    /// Adds or overwrites these tags of a key; other tags stay. `TooManyTags` (and nothing
    /// written) if the key would carry more than [`MAX_TAGS_PER_KEY`]: the count is taken in
    /// the same transaction, under the key's row lock, so concurrent callers cannot pass it
    /// together. `NotFound(Key)` if the key does not exist.
    pub async fn set_tags(&self, key_id: &str, new_tags: Vec<Tag>) -> Result<(), StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                lock_key(conn, &key_id)?;
                for tag in new_tags {
                    let updated = diesel::update(tags::table.find((&key_id, &tag.tag_key)))
                        .set(tags::tag_value.eq(&tag.tag_value))
                        .execute(conn)?;
                    if updated == 0 {
                        diesel::insert_into(tags::table)
                            .values(KeyTag {
                                key_id: key_id.clone(),
                                tag_key: tag.tag_key,
                                tag_value: tag.tag_value,
                            })
                            .execute(conn)?;
                    }
                }
                let count: i64 = tags::table
                    .filter(tags::key_id.eq(&key_id))
                    .count()
                    .get_result(conn)?;
                if usize::try_from(count).unwrap_or(usize::MAX) > MAX_TAGS_PER_KEY {
                    return Err(StoreError::TooManyTags {
                        max: MAX_TAGS_PER_KEY,
                    });
                }
                Ok(())
            })
        })
        .await
    }

    /// Removes these tag keys from a key; returns how many existed.
    pub async fn remove_tags(
        &self,
        key_id: &str,
        tag_keys: Vec<String>,
    ) -> Result<usize, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            Ok(diesel::delete(
                tags::table
                    .filter(tags::key_id.eq(&key_id))
                    .filter(tags::tag_key.eq_any(&tag_keys)),
            )
            .execute(conn)?)
        })
        .await
    }

    /// A key's tags, by tag key.
    pub async fn list_tags(&self, key_id: &str) -> Result<Vec<Tag>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            let rows = tags::table
                .filter(tags::key_id.eq(&key_id))
                .order(tags::tag_key.asc())
                .select(KeyTag::as_select())
                .load(conn)?;
            Ok(rows
                .into_iter()
                .map(|row| Tag::new(row.tag_key, row.tag_value))
                .collect())
        })
        .await
    }

    /// The tags of several keys (ListTagResources), by key id then tag key.
    pub async fn list_tags_for_keys(
        &self,
        key_ids: Vec<String>,
    ) -> Result<Vec<KeyTag>, StoreError> {
        self.run(move |conn| {
            Ok(tags::table
                .filter(tags::key_id.eq_any(&key_ids))
                .order((tags::key_id.asc(), tags::tag_key.asc()))
                .select(KeyTag::as_select())
                .load(conn)?)
        })
        .await
    }

    /// The key's policy document by name. `NotFound(Policy)` if none is stored.
    pub async fn get_policy(&self, key_id: &str, policy_name: &str) -> Result<String, StoreError> {
        let (key_id, policy_name) = (key_id.to_owned(), policy_name.to_owned());
        self.run(move |conn| {
            key_policies::table
                .find((&key_id, &policy_name))
                .select(key_policies::policy)
                .first(conn)
                .map_err(on(Entity::Policy))
        })
        .await
    }

    /// The policy documents named `policy_name` of these keys, by key id (keys without one
    /// are absent).
    pub async fn get_policies(
        &self,
        key_ids: Vec<String>,
        policy_name: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let policy_name = policy_name.to_owned();
        self.run(move |conn| {
            let rows: Vec<(String, String)> = key_policies::table
                .filter(key_policies::key_id.eq_any(&key_ids))
                .filter(key_policies::policy_name.eq(&policy_name))
                .select((key_policies::key_id, key_policies::policy))
                .load(conn)?;
            Ok(rows.into_iter().collect())
        })
        .await
    }

    /// Stores (creates or replaces) the key's policy document under a name.
    pub async fn set_policy(
        &self,
        key_id: &str,
        policy_name: &str,
        policy: String,
    ) -> Result<(), StoreError> {
        let (key_id, policy_name) = (key_id.to_owned(), policy_name.to_owned());
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                lock_key(conn, &key_id)?;
                let updated = diesel::update(key_policies::table.find((&key_id, &policy_name)))
                    .set(key_policies::policy.eq(&policy))
                    .execute(conn)?;
                if updated == 0 {
                    diesel::insert_into(key_policies::table)
                        .values((
                            key_policies::key_id.eq(&key_id),
                            key_policies::policy_name.eq(&policy_name),
                            key_policies::policy.eq(&policy),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            })
        })
        .await
    }
}
