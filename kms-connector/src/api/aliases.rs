//! CreateAlias, UpdateAlias, DeleteAlias, ListAliases, ListAliasesByKeyId. Aliases are unique
//! per account and region; `alias/acs…` is reserved.

use serde_json::{Value, json};

use super::ctx::{Ctx, Reply};
use super::error::ApiError;
use crate::ids::{AliasName, alias_arn};
use crate::store::{Alias, Paged, UnixMillis};

fn alias_name(ctx: &Ctx<'_>) -> Result<AliasName, ApiError> {
    let text = ctx.params.required("AliasName")?;
    AliasName::parse(text).map_err(|e| ApiError::invalid_because("AliasName", e.0.to_owned()))
}

/// CreateAlias.
pub async fn create_alias(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let name = alias_name(ctx)?;
    let key = ctx.key_for_action("KeyId").await?;
    let now = UnixMillis::now();
    ctx.state
        .store
        .create_alias(Alias {
            account_id: ctx.state.account_id.clone(),
            region: ctx.state.region.clone(),
            alias_name: name.to_string(),
            key_id: key.key_id,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok(Reply::new())
}

/// UpdateAlias: `kms:UpdateAlias` on the key the alias points to now and on the new target
/// (otherwise a caller could take over an alias that other applications encrypt through); only
/// the new target's state matters.
pub async fn update_alias(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let name = alias_name(ctx)?;
    let state = ctx.state;
    // The alias must exist before anything is said about the new target.
    let alias = state
        .store
        .get_alias(&state.account_id, &state.region, name.as_str())
        .await?;
    let current = state.store.get_key(&alias.key_id).await?;
    ctx.authorize(&current, ctx.action.permission()).await?;
    let key = ctx.key_for_action("KeyId").await?;
    state
        .store
        .update_alias(
            &state.account_id,
            &state.region,
            name.as_str(),
            &key.key_id,
            UnixMillis::now(),
        )
        .await?;
    Ok(Reply::new())
}

/// DeleteAlias: allowed in every key state; needs `kms:DeleteAlias` on the aliased key.
pub async fn delete_alias(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let name = alias_name(ctx)?;
    let state = ctx.state;
    let alias = state
        .store
        .get_alias(&state.account_id, &state.region, name.as_str())
        .await?;
    let key = state.store.get_key(&alias.key_id).await?;
    ctx.key_id = Some(key.key_id.clone());
    ctx.authorize(&key, ctx.action.permission()).await?;
    ctx.check_state(&key)?;
    state
        .store
        .delete_alias(&state.account_id, &state.region, name.as_str())
        .await?;
    Ok(Reply::new())
}

/// ListAliases.
pub async fn list_aliases(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    ctx.authorize_action()?;
    let page = ctx.params.page()?;
    let state = ctx.state;
    let paged = state
        .store
        .list_aliases(&state.account_id, &state.region, page)
        .await?;
    Ok(alias_page(&paged))
}

/// ListAliasesByKeyId.
pub async fn list_aliases_by_key_id(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let page = ctx.params.page()?;
    let key = ctx.key_for_action("KeyId").await?;
    let paged = ctx
        .state
        .store
        .list_aliases_by_key(&key.key_id, page)
        .await?;
    Ok(alias_page(&paged))
}

fn alias_page(paged: &Paged<Alias>) -> Reply {
    let items: Vec<Value> = paged
        .items
        .iter()
        .map(|a| {
            let arn = AliasName::parse(&a.alias_name)
                .map(|n| alias_arn(&a.region, &a.account_id, &n))
                .unwrap_or_else(|_| {
                    format!("acs:kms:{}:{}:{}", a.region, a.account_id, a.alias_name)
                });
            json!({"AliasName": a.alias_name, "AliasArn": arn, "KeyId": a.key_id})
        })
        .collect();
    let mut reply = Reply::new();
    reply.insert("Aliases".into(), json!({ "Alias": items }));
    reply.insert("TotalCount".into(), json!(paged.total_count));
    reply.insert("PageNumber".into(), json!(paged.page.number()));
    reply.insert("PageSize".into(), json!(paged.page.size()));
    reply
}
