//! Key rotation: a new version made by the key's backend and promoted to primary in one store
//! transaction, for CreateKeyVersion and for the scheduler that rotates keys whose
//! `NextRotationDate` has come.
//!
//! Safe with several replicas on one database: the promotion is compare-and-set on the primary
//! version the rotation started from (`Store::add_key_version`), so of two replicas rotating
//! one due key, one adds a version and the other's attempt fails with `Conflict` and releases
//! the material it made. A crash before the promotion leaves the old primary (and, on an HSM,
//! an unreferenced object); a crash after it leaves the new one: never two primaries.

use crate::backend::{BackendError, NewVersion, VersionMaterial};
use crate::ids::{KeyId, KeyVersionId};
use crate::instances::InstanceHandle;
use crate::store::{
    AuditEvent, AutomaticRotation, Key, KeyState, KeyVersion, Store, StoreError, UnixMillis,
};

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The backend could not make the material.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The store refused: another rotation came first (`Conflict`), the key left `Enabled`
    /// (`StateMismatch`), or the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asks for a rotation (for the backend's logs and the audit trail).
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The caller principal, or `kms-connector` for the scheduler.
    pub principal: &'a str,
    /// The request id.
    pub request_id: &'a str,
}

/// Adds a version made at `now` to `key` on `instance` and makes it primary; returns the key
/// as stored after, and the new version.
pub async fn rotate(
    store: &Store,
    instance: &InstanceHandle,
    key: &Key,
    by: Requester<'_>,
    now: UnixMillis,
) -> Result<(Key, KeyVersion), RotationError> {
    let key_id =
        KeyId::parse(&key.key_id).map_err(|_| StoreError::Corrupt("stored key id".to_owned()))?;
    let version_id = KeyVersionId::generate();
    let material = instance
        .backend
        .new_version(NewVersion {
            key_id: &key_id,
            version_id: &version_id,
            key_spec: key.key_spec,
            external_key_id: None,
            principal: by.principal,
            request_id: by.request_id,
        })
        .await?;
    let version = KeyVersion {
        key_version_id: version_id.to_string(),
        key_id: key.key_id.clone(),
        created_at: now,
        sealed_material: material.sealed.clone(),
        backend_ref: material.backend_ref.clone(),
    };
    match store
        .add_key_version(version.clone(), KeyState::Enabled, &key.primary_key_version)
        .await
    {
        Ok(rotated) => Ok((rotated, version)),
        Err(error) => {
            release(instance, &material, &key.key_id).await;
            Err(error.into())
        }
    }
}

async fn release(instance: &InstanceHandle, material: &VersionMaterial, key_id: &str) {
    if let Err(error) = instance.backend.destroy_version(material).await {
        tracing::warn!(key_id, %error, "cannot release the material of a version that was not stored");
    }
}

/// Rotates every key of `instance` whose rotation is due by `now` (at most `batch`); returns
/// how many this call rotated. Losing a race to another replica is not an error.
pub async fn rotate_due(
    store: &Store,
    instance: &InstanceHandle,
    now: UnixMillis,
    batch: u32,
) -> usize {
    if !instance.backend.capabilities().rotation {
        return 0;
    }
    let due = match store.keys_due_for_rotation(&instance.id, now, batch).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(instance = %instance.id, %error, "cannot list keys due for rotation");
            return 0;
        }
    };
    let mut rotated = 0;
    for key_id in due {
        let Ok(key) = store.get_key(&key_id).await else {
            continue;
        };
        // Read again after listing: another replica may have rotated it meanwhile (then its
        // next date moved on). The promotion is compare-and-set on the primary version read
        // here, so a rotation after this read makes ours fail instead of adding a second one.
        let still_due = key.automatic_rotation == AutomaticRotation::Enabled
            && key.key_state == KeyState::Enabled
            && key.next_rotation_date.is_some_and(|next| next <= now);
        if !still_due {
            continue;
        }
        let request_id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
        let by = Requester {
            principal: "kms-connector",
            request_id: &request_id,
        };
        match rotate(store, instance, &key, by, now).await {
            Ok((_, version)) => {
                rotated += 1;
                audit(store, &key, &request_id, &version.key_version_id).await;
            }
            Err(RotationError::Store(
                StoreError::Conflict(_) | StoreError::StateMismatch { .. },
            )) => {}
            Err(error) => {
                tracing::warn!(key_id = %key_id, %error, "automatic rotation failed; retried at the next pass");
            }
        }
    }
    rotated
}

async fn audit(store: &Store, key: &Key, request_id: &str, version_id: &str) {
    let event = AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        time: UnixMillis::now(),
        request_id: request_id.to_owned(),
        principal: "kms-connector".to_owned(),
        account_id: key.account_id.clone(),
        action: "RotateKey".to_owned(),
        key_id: Some(key.key_id.clone()),
        result: AuditEvent::SUCCESS.to_owned(),
        source_ip: None,
        detail: Some(format!(
            "automatic rotation: new primary version {version_id}"
        )),
    };
    if let Err(error) = store.append_audit(event).await {
        tracing::error!(key_id = %key.key_id, %error, "cannot append the audit event");
    }
}
