//! Key state transitions (EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion),
//! deletion protection, the description, and the key policy. Transitions are compare-and-set
//! in the store: of two racing requests one wins, the other gets `Rejected.StateModifiedFailed`.

use schemas::kms::{ErrorCode, KeyState};
use serde_json::json;

use super::ctx::{Ctx, Reply};
use super::error::ApiError;
use super::keys::check_description;
use super::policy::{KeyPolicy, default_policy};
use crate::store::{DEFAULT_POLICY_NAME, Entity, StateChange, StoreError, UnixMillis};

const SECONDS_PER_DAY: i64 = 86_400;

/// EnableKey.
pub async fn enable_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    set_state(ctx, KeyState::Enabled).await
}

/// DisableKey.
pub async fn disable_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    set_state(ctx, KeyState::Disabled).await
}

async fn set_state(ctx: &mut Ctx<'_>, target: KeyState) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    if key.key_state != target {
        ctx.state
            .store
            .compare_and_set_state(
                &key.key_id,
                StateChange {
                    expected: key.key_state,
                    new: target,
                    delete_date: None,
                },
            )
            .await?;
    }
    Ok(Reply::new())
}

/// ScheduleKeyDeletion: `PendingWindowInDays` 7–366.
pub async fn schedule_key_deletion(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let days = ctx
        .params
        .int("PendingWindowInDays", 7, 366)?
        .ok_or(ApiError::Missing("PendingWindowInDays"))?;
    let key = ctx.key_for_action("KeyId").await?;
    if key.deletion_protection {
        return Err(StoreError::DeletionProtected.into());
    }
    let delete_date = UnixMillis::now().plus_secs(days * SECONDS_PER_DAY);
    ctx.state
        .store
        .compare_and_set_state(
            &key.key_id,
            StateChange {
                expected: key.key_state,
                new: KeyState::PendingDeletion,
                delete_date: Some(delete_date),
            },
        )
        .await?;
    Ok(Reply::new())
}

/// CancelKeyDeletion: back to `Enabled`, whatever the state before.
pub async fn cancel_key_deletion(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    ctx.state
        .store
        .compare_and_set_state(
            &key.key_id,
            StateChange {
                expected: KeyState::PendingDeletion,
                new: KeyState::Enabled,
                delete_date: None,
            },
        )
        .await?;
    Ok(Reply::new())
}

/// SetDeletionProtection: the key by `ProtectedResourceArn` or `KeyId`.
pub async fn set_deletion_protection(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let enable = ctx
        .params
        .bool("EnableDeletionProtection")?
        .ok_or(ApiError::Missing("EnableDeletionProtection"))?;
    let description = ctx
        .params
        .optional("DeletionProtectionDescription")
        .map(str::to_owned);
    if let Some(text) = &description {
        check_description(text).map_err(|_| {
            ApiError::invalid_because(
                "DeletionProtectionDescription",
                "longer than 8192 characters",
            )
        })?;
    }
    let name = if ctx.params.optional("ProtectedResourceArn").is_some() {
        "ProtectedResourceArn"
    } else if ctx.params.optional("KeyId").is_some() {
        "KeyId"
    } else {
        return Err(ApiError::Missing("ProtectedResourceArn"));
    };
    let key = ctx.key_for_action(name).await?;
    ctx.state
        .store
        .set_deletion_protection(&key.key_id, enable, description)
        .await?;
    Ok(Reply::new())
}

/// UpdateKeyDescription: `Description` is required but may be empty (clears it).
pub async fn update_key_description(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let description = ctx
        .params
        .raw("Description")
        .ok_or(ApiError::Missing("Description"))?
        .to_owned();
    check_description(&description)?;
    let key = ctx.key_for_action("KeyId").await?;
    ctx.state
        .store
        .update_description(&key.key_id, description)
        .await?;
    Ok(Reply::new())
}

fn check_policy_name(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    match ctx.params.optional("PolicyName") {
        None | Some(DEFAULT_POLICY_NAME) => Ok(()),
        Some(_) => Err(ApiError::with_message(
            ErrorCode::ResourceNotFound,
            "Policy not found.",
        )),
    }
}

/// GetKeyPolicy.
pub async fn get_key_policy(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    check_policy_name(ctx)?;
    let key = ctx.key_for_action("KeyId").await?;
    let policy = match ctx
        .state
        .store
        .get_policy(&key.key_id, DEFAULT_POLICY_NAME)
        .await
    {
        Ok(policy) => policy,
        Err(StoreError::NotFound(Entity::Policy)) => default_policy(&key.account_id),
        Err(other) => return Err(other.into()),
    };
    let mut reply = Reply::new();
    reply.insert("Policy".into(), json!(policy));
    Ok(reply)
}

/// SetKeyPolicy.
pub async fn set_key_policy(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    check_policy_name(ctx)?;
    let policy = ctx.params.required("Policy")?.to_owned();
    KeyPolicy::parse(&policy).map_err(|reason| ApiError::invalid_because("Policy", reason))?;
    let key = ctx.key_for_action("KeyId").await?;
    ctx.state
        .store
        .set_policy(&key.key_id, DEFAULT_POLICY_NAME, policy)
        .await?;
    Ok(Reply::new())
}
