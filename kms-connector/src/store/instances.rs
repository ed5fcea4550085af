//! KMS instances (`kst-…`) and their connection state.

use diesel::prelude::*;

use super::Store;
use super::conn::{DbConnection, write_transaction};
use super::error::{Entity, StoreError, on};
use super::models::{Instance, InstanceRow, NewInstance};
use super::schema::instances;
use super::types::{ConnectionState, UnixMillis};

impl Store {
    /// Creates an instance. `AlreadyExists(Instance)` if the id is taken.
    pub async fn create_instance(&self, new: NewInstance) -> Result<Instance, StoreError> {
        self.run(move |conn| {
            let row = InstanceRow {
                instance_id: new.instance_id,
                kind: new.kind.as_str().to_owned(),
                name: new.name,
                spec: new.spec,
                connection_state: new.connection_state.as_str().to_owned(),
                connection_error_code: None,
                created_at: new.created_at.0,
                updated_at: new.created_at.0,
            };
            diesel::insert_into(instances::table)
                .values(&row)
                .execute(conn)
                .map_err(on(Entity::Instance))?;
            Instance::try_from(row)
        })
        .await
    }

    /// The instance with this id.
    pub async fn get_instance(&self, instance_id: &str) -> Result<Instance, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| load_instance(conn, &instance_id))
            .await
    }

    /// Every instance, oldest first.
    pub async fn list_instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.run(|conn| {
            instances::table
                .order((instances::created_at.asc(), instances::instance_id.asc()))
                .select(InstanceRow::as_select())
                .load(conn)?
                .into_iter()
                .map(Instance::try_from)
                .collect()
        })
        .await
    }

    /// Records a connection state change (and the error code with `Error`; `None` clears it)
    /// unconditionally: the operator's connect (`Connecting`) or disconnect, which every
    /// replica follows.
    pub async fn update_instance_connection(
        &self,
        instance_id: &str,
        state: ConnectionState,
        error_code: Option<String>,
        now: UnixMillis,
    ) -> Result<Instance, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let updated = diesel::update(instances::table.find(&instance_id))
                    .set((
                        instances::connection_state.eq(state.as_str()),
                        instances::connection_error_code.eq(error_code),
                        instances::updated_at.eq(now.0),
                    ))
                    .execute(conn)?;
                if updated == 0 {
                    return Err(StoreError::NotFound(Entity::Instance));
                }
                load_instance(conn, &instance_id)
            })
        })
        .await
    }

    /// Records what a replica observed of a connection the operator wants up (`Connected`, or
    /// `Error` with its code), unless the stored state says the operator wants it down
    /// (`Disconnected`, `Uninitialized`): a health answer that was in flight when another
    /// replica disconnected never undoes the disconnect. Returns whether the row changed.
    pub async fn observe_instance_connection(
        &self,
        instance_id: &str,
        state: ConnectionState,
        error_code: Option<String>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let updated = diesel::update(
                    instances::table.find(&instance_id).filter(
                        instances::connection_state
                            .eq_any(ConnectionState::WANTED_UP.iter().map(|s| s.as_str())),
                    ),
                )
                .set((
                    instances::connection_state.eq(state.as_str()),
                    instances::connection_error_code.eq(error_code),
                    instances::updated_at.eq(now.0),
                ))
                .execute(conn)?;
                if updated == 0 {
                    // Refused by the filter, or no such instance.
                    load_instance(conn, &instance_id)?;
                }
                Ok(updated > 0)
            })
        })
        .await
    }

    /// Replaces the instance's non-secret settings (JSON).
    pub async fn update_instance_spec(
        &self,
        instance_id: &str,
        spec: String,
        now: UnixMillis,
    ) -> Result<Instance, StoreError> {
        let instance_id = instance_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let updated = diesel::update(instances::table.find(&instance_id))
                    .set((instances::spec.eq(spec), instances::updated_at.eq(now.0)))
                    .execute(conn)?;
                if updated == 0 {
                    return Err(StoreError::NotFound(Entity::Instance));
                }
                load_instance(conn, &instance_id)
            })
        })
        .await
    }
}

pub(crate) fn load_instance(
    conn: &mut DbConnection,
    instance_id: &str,
) -> Result<Instance, StoreError> {
    instances::table
        .find(instance_id)
        .select(InstanceRow::as_select())
        .first(conn)
        .map_err(on(Entity::Instance))
        .and_then(Instance::try_from)
}
