//! Aliases: names unique per account and region, each resolving to one key of that account and
//! region.

use diesel::prelude::*;

use super::Store;
use super::conn::{DbConnection, read_transaction, write_transaction};
use super::error::{Entity, StoreError, on};
use super::keys::load_key;
use super::models::Alias;
use super::schema::aliases;
use super::types::{Page, Paged, UnixMillis, count_to_u64};

impl Store {
    /// Creates an alias. `AlreadyExists(Alias)` if the name is taken in that account and
    /// region; `NotFound(Key)` if the target key does not exist there.
    pub async fn create_alias(&self, alias: Alias) -> Result<Alias, StoreError> {
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                check_target(conn, &alias.account_id, &alias.region, &alias.key_id)?;
                diesel::insert_into(aliases::table)
                    .values(alias.clone())
                    .execute(conn)
                    .map_err(on(Entity::Alias))?;
                Ok(alias)
            })
        })
        .await
    }

    /// Resolves an alias. `NotFound(Alias)` otherwise.
    pub async fn get_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<Alias, StoreError> {
        let id = (
            account_id.to_owned(),
            region.to_owned(),
            alias_name.to_owned(),
        );
        self.run(move |conn| load_alias(conn, &id)).await
    }

    /// Points an existing alias at another key of the same account and region.
    pub async fn update_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
        key_id: &str,
        now: UnixMillis,
    ) -> Result<Alias, StoreError> {
        let id = (
            account_id.to_owned(),
            region.to_owned(),
            alias_name.to_owned(),
        );
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                check_target(conn, &id.0, &id.1, &key_id)?;
                let updated = diesel::update(aliases::table.find((&id.0, &id.1, &id.2)))
                    .set((aliases::key_id.eq(&key_id), aliases::updated_at.eq(now.0)))
                    .execute(conn)?;
                if updated == 0 {
                    return Err(StoreError::NotFound(Entity::Alias));
                }
                load_alias(conn, &id)
            })
        })
        .await
    }

    /// Deletes an alias. `NotFound(Alias)` if there is none.
    pub async fn delete_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<(), StoreError> {
        let id = (
            account_id.to_owned(),
            region.to_owned(),
            alias_name.to_owned(),
        );
        self.run(move |conn| {
            let deleted =
                diesel::delete(aliases::table.find((&id.0, &id.1, &id.2))).execute(conn)?;
            if deleted == 0 {
                return Err(StoreError::NotFound(Entity::Alias));
            }
            Ok(())
        })
        .await
    }

    /// One page of an account's aliases in a region, by name.
    pub async fn list_aliases(
        &self,
        account_id: &str,
        region: &str,
        page: Page,
    ) -> Result<Paged<Alias>, StoreError> {
        let (account_id, region) = (account_id.to_owned(), region.to_owned());
        self.run(move |conn| {
            read_transaction(conn, |conn| {
                let scope = || {
                    aliases::table
                        .filter(aliases::account_id.eq(account_id.clone()))
                        .filter(aliases::region.eq(region.clone()))
                };
                let total: i64 = scope().count().get_result(conn)?;
                let items = scope()
                    .order(aliases::alias_name.asc())
                    .limit(page.limit())
                    .offset(page.offset())
                    .select(Alias::as_select())
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

    /// One page of the aliases of a key, by name.
    pub async fn list_aliases_by_key(
        &self,
        key_id: &str,
        page: Page,
    ) -> Result<Paged<Alias>, StoreError> {
        let key_id = key_id.to_owned();
        self.run(move |conn| {
            read_transaction(conn, |conn| {
                let total: i64 = aliases::table
                    .filter(aliases::key_id.eq(&key_id))
                    .count()
                    .get_result(conn)?;
                let items = aliases::table
                    .filter(aliases::key_id.eq(&key_id))
                    .order(aliases::alias_name.asc())
                    .limit(page.limit())
                    .offset(page.offset())
                    .select(Alias::as_select())
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

fn load_alias(
    conn: &mut DbConnection,
    (account_id, region, alias_name): &(String, String, String),
) -> Result<Alias, StoreError> {
    aliases::table
        .find((account_id, region, alias_name))
        .select(Alias::as_select())
        .first(conn)
        .map_err(on(Entity::Alias))
}

/// An alias may only name a key of its own account and region; any other key is "not found".
fn check_target(
    conn: &mut DbConnection,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> Result<(), StoreError> {
    let key = load_key(conn, key_id)?;
    if key.account_id != account_id || key.region != region {
        return Err(StoreError::NotFound(Entity::Key));
    }
    Ok(())
}
