//! Small additions the OpenAPI server needs: renaming an instance when its configuration
//! changes, and counting the keys of an instance (`KeyNum`).

use diesel::prelude::*;

use super::Store;
use super::conn::write_transaction;
use super::error::{Entity, StoreError};
use super::instances::load_instance;
use super::models::Instance;
use super::schema::{instances, keys};
use super::types::{UnixMillis, count_to_u64};

impl Store {
    /// Replaces the display name of an instance. `NotFound(Instance)` if there is none.
    pub async fn rename_instance(
        &self,
        instance_id: &str,
        name: String,
        now: UnixMillis,
    ) -> Result<Instance, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let updated = diesel::update(instances::table.find(&instance_id))
                    .set((instances::name.eq(name), instances::updated_at.eq(now.0)))
                    .execute(conn)?;
                if updated == 0 {
                    return Err(StoreError::NotFound(Entity::Instance));
                }
                load_instance(conn, &instance_id)
            })
        })
        .await
    }

    /// How many keys live in an instance (any state, any account).
    pub async fn count_instance_keys(&self, instance_id: &str) -> Result<u64, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            let count: i64 = keys::table
                .filter(keys::instance_id.eq(&instance_id))
                .count()
                .get_result(conn)?;
            Ok(count_to_u64(count))
        })
        .await
    }
}
