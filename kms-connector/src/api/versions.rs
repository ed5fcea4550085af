//! Key versions and rotation: CreateKeyVersion, UpdateRotationPolicy, ListKeyVersions and
//! DescribeKeyVersion. Only keys whose versions KMS manages have them (external keys' versions
//! live in the external key manager, seed 000), and only instances that can make new material
//! rotate (`Capabilities::rotation`).

use schemas::kms::{ErrorCode, Origin, RotationInterval};
use serde_json::{Value, json};

use super::ctx::{Ctx, Reply, iso8601};
use super::error::ApiError;
use crate::ids::KeyVersionId;
use crate::instances::InstanceHandle;
use crate::rotation::{Requester, RotationError, rotate};
use crate::store::{AutomaticRotation, Key, KeyVersion, Page, UnixMillis};

/// Most versions a key gets by CreateKeyVersion (automatic rotation is not capped).
pub const MAX_MANUAL_VERSIONS: u64 = 50;

/// CreateKeyVersion: a new primary version, now.
pub async fn create_key_version(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    versions_managed_here(ctx, &key)?;
    let instance = rotatable(ctx, &key)?;
    let versions = ctx
        .state
        .store
        .list_key_versions(&key.key_id, Page::new(1, 1)?)
        .await?;
    if versions.total_count >= MAX_MANUAL_VERSIONS {
        return Err(ApiError::with_message(
            ErrorCode::RejectedLimitExceeded,
            format!(
                "The request was rejected because user create resource limit was exceeded: a key has at most {MAX_MANUAL_VERSIONS} versions."
            ),
        ));
    }
    let instance = ctx.connected_instance(&key).map(|_| instance)?;
    let by = Requester {
        principal: ctx.caller.principal.arn(),
        request_id: ctx.request_id,
    };
    let (_, version) = rotate(&ctx.state.store, &instance, &key, by, UnixMillis::now())
        .await
        .map_err(|e| match e {
            RotationError::Backend(error) => ApiError::new_key(error),
            RotationError::Store(error) => error.into(),
        })?;
    let mut reply = Reply::new();
    reply.insert("KeyVersion".into(), version_json(&version));
    Ok(reply)
}

/// UpdateRotationPolicy: `EnableAutomaticRotation` (required) and, when enabling,
/// `RotationInterval` (7–365 days).
pub async fn update_rotation_policy(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    let enable = ctx
        .params
        .bool("EnableAutomaticRotation")?
        .ok_or(ApiError::Missing("EnableAutomaticRotation"))?;
    let interval = match ctx.params.optional("RotationInterval") {
        Some(text) => Some(
            RotationInterval::parse(text)
                .map_err(|e| ApiError::invalid_because("RotationInterval", e.to_string()))?,
        ),
        None if enable => return Err(ApiError::Missing("RotationInterval")),
        None => None,
    };
    rotatable(ctx, &key)?;
    let (rotation, secs) = if enable {
        (
            AutomaticRotation::Enabled,
            interval.map(|i| i64::try_from(i.as_secs()).unwrap_or(i64::MAX)),
        )
    } else {
        (AutomaticRotation::Disabled, None)
    };
    ctx.state
        .store
        .set_rotation_policy(&key.key_id, rotation, secs)
        .await?;
    Ok(Reply::new())
}

/// The key's instance, which must make new material for keys like this one.
fn rotatable(ctx: &Ctx<'_>, key: &Key) -> Result<std::sync::Arc<InstanceHandle>, ApiError> {
    let unsupported = |why: String| {
        Err(ApiError::with_message(
            ErrorCode::RejectedUnsupportedOperation,
            format!("Unsupported operation: {why}"),
        ))
    };
    let Some(instance) = ctx.state.instances.get(&key.instance_id) else {
        return unsupported(format!(
            "the KMS instance {} is not served by this connector.",
            key.instance_id
        ));
    };
    if !instance.backend.capabilities().rotation {
        return unsupported(format!(
            "keys of the {} instance {} do not rotate.",
            instance.kind, instance.id
        ));
    }
    if key.origin == Origin::External {
        return unsupported("imported key material cannot rotate.".into());
    }
    if !key.key_spec.is_symmetric() {
        return unsupported(format!(
            "{} keys do not rotate automatically.",
            key.key_spec
        ));
    }
    Ok(instance)
}

/// DescribeKeyVersion.
pub async fn describe_key_version(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    versions_managed_here(ctx, &key)?;
    let version_id = ctx.params.required("KeyVersionId")?;
    KeyVersionId::parse(version_id)?;
    let version = ctx.state.store.get_key_version(version_id).await?;
    if version.key_id != key.key_id {
        return Err(ErrorCode::KeyVersionNotFound.into());
    }
    let mut reply = Reply::new();
    reply.insert("KeyVersion".into(), version_json(&version));
    Ok(reply)
}

/// ListKeyVersions.
pub async fn list_key_versions(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    versions_managed_here(ctx, &key)?;
    let page = ctx.params.page()?;
    let paged = ctx.state.store.list_key_versions(&key.key_id, page).await?;
    let items: Vec<Value> = paged.items.iter().map(version_json).collect();
    let mut reply = Reply::new();
    reply.insert("KeyVersions".into(), json!({ "KeyVersion": items }));
    reply.insert("TotalCount".into(), json!(paged.total_count));
    reply.insert("PageNumber".into(), json!(page.number()));
    reply.insert("PageSize".into(), json!(page.size()));
    Ok(reply)
}

/// The version APIs serve keys whose versions KMS manages (not those of external instances).
pub fn versions_managed_here(ctx: &Ctx<'_>, key: &Key) -> Result<(), ApiError> {
    let managed = ctx
        .state
        .instances
        .get(&key.instance_id)
        .is_none_or(|i| i.backend.capabilities().versions);
    if managed {
        Ok(())
    } else {
        Err(ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            "This action is not supported: the versions of a key of an external key instance are managed by the external key manager, not by KMS.",
        ))
    }
}

fn version_json(version: &KeyVersion) -> Value {
    json!({
        "KeyId": version.key_id,
        "KeyVersionId": version.key_version_id,
        "CreationDate": iso8601(version.created_at),
    })
}
