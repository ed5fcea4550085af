//! ListKmsInstances, GetKmsInstance (spec §5.1 fields that make sense here, plus
//! `InstanceType` and `ConnectionErrorCode`), and our own ConnectKmsInstance /
//! DisconnectKmsInstance, which drive an external instance's connection to its XKI proxy.

use schemas::kms::ErrorCode;
use serde_json::{Value, json};

use super::ctx::{Ctx, Reply, iso8601};
use super::error::ApiError;
use crate::backend::InstanceStatus;
use crate::ids::InstanceId;
use crate::instances::InstanceHandle;
use std::sync::Arc;

/// The instance the call names, once the caller's identity may use `permission` on it.
fn requested(ctx: &Ctx<'_>, permission: &str) -> Result<Arc<InstanceHandle>, ApiError> {
    let id = match ctx.params.optional("KmsInstanceId") {
        Some(id) => id,
        None => ctx
            .params
            .required("InstanceId")
            .map_err(|_| ApiError::Missing("KmsInstanceId"))?,
    };
    InstanceId::parse(id).map_err(|_| ApiError::invalid("KmsInstanceId"))?;
    // Authorized before the lookup, so that refused callers learn nothing of what exists.
    ctx.authorize_account(permission, &ctx.state.instance_arn(id))?;
    ctx.state
        .instances
        .get(id)
        .ok_or_else(|| ErrorCode::DkmsInstanceNotFound.into())
}

fn status_fields(reply: &mut Reply, status: InstanceStatus) {
    reply.insert("Status".into(), json!(status.state.as_str()));
    reply.insert(
        "ConnectionErrorCode".into(),
        json!(status.error.map(|e| e.as_str()).unwrap_or_default()),
    );
}

/// ListKmsInstances.
/// Lists the instances the caller may read (`kms:GetKmsInstance` on each).
pub async fn list_kms_instances(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    ctx.authorize_action()?;
    let page = ctx.params.page()?;
    let all: Vec<&Arc<InstanceHandle>> = ctx
        .state
        .instances
        .all()
        .filter(|h| {
            ctx.authorize_account("kms:GetKmsInstance", &ctx.state.instance_arn(&h.id))
                .is_ok()
        })
        .collect();
    let skip = (page.number() as usize - 1).saturating_mul(page.size() as usize);
    let items: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(page.size() as usize)
        .map(|h| {
            json!({
                "KmsInstanceId": h.id,
                "KmsInstanceArn": ctx.state.instance_arn(&h.id),
                "InstanceName": h.name,
                "InstanceType": h.kind.as_str(),
                "Status": h.backend.status().state.as_str(),
            })
        })
        .collect();
    let mut reply = Reply::new();
    reply.insert("KmsInstances".into(), json!({ "KmsInstance": items }));
    reply.insert("TotalCount".into(), json!(all.len()));
    reply.insert("PageNumber".into(), json!(page.number()));
    reply.insert("PageSize".into(), json!(page.size()));
    Ok(reply)
}

/// GetKmsInstance.
pub async fn get_kms_instance(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let handle = requested(ctx, "kms:GetKmsInstance")?;
    let row = ctx.state.instances.row(&handle.id).await?;
    let key_num = ctx.state.store.count_instance_keys(&handle.id).await?;
    let status = handle.backend.status();
    let mut instance = Reply::new();
    instance.insert("InstanceId".into(), json!(handle.id));
    instance.insert("InstanceName".into(), json!(handle.name));
    instance.insert("Arn".into(), json!(ctx.state.instance_arn(&handle.id)));
    instance.insert("InstanceType".into(), json!(handle.kind.as_str()));
    status_fields(&mut instance, status);
    instance.insert("KeyNum".into(), json!(key_num));
    instance.insert("CreateTime".into(), json!(iso8601(row.created_at)));
    instance.insert("ProductVersion".into(), json!("3"));
    let capabilities = handle.backend.capabilities();
    instance.insert(
        "ProtectionLevel".into(),
        json!(capabilities.protection_level),
    );
    instance.insert("KeySpecs".into(), json!(capabilities.key_specs));
    let mut reply = Reply::new();
    reply.insert("KmsInstance".into(), Value::Object(instance));
    Ok(reply)
}

/// ConnectKmsInstance (external instances).
pub async fn connect_kms_instance(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    drive(ctx, true).await
}

/// DisconnectKmsInstance (external instances).
pub async fn disconnect_kms_instance(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    drive(ctx, false).await
}

/// Needs `kms:ConnectKmsInstance` / `kms:DisconnectKmsInstance`: the account root, or an
/// identity policy granting it (other principals do not have it by default).
async fn drive(ctx: &mut Ctx<'_>, connect: bool) -> Result<Reply, ApiError> {
    let handle = requested(ctx, ctx.action.permission())?;
    let instances = &ctx.state.instances;
    let status = if connect {
        instances.connect(&handle).await?
    } else {
        instances.disconnect(&handle).await?
    };
    let status = status.ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::RejectedUnsupportedOperation,
            format!(
                "Unsupported operation: the {} instance {} has no connection to drive; only external instances connect and disconnect.",
                handle.kind, handle.id
            ),
        )
    })?;
    let mut reply = Reply::new();
    reply.insert("KmsInstanceId".into(), json!(handle.id));
    status_fields(&mut reply, status);
    Ok(reply)
}
