//! The request context handlers work with: the caller, the parameters, and the three checks
//! every key operation makes in this order — resolve the `KeyId` (id, alias or ARN; 404),
//! authorize against the key policy (403), check the key state (409).

use std::sync::Arc;

use schemas::kms::ErrorCode;
use serde_json::{Map, Value};

use super::ApiState;
use super::actions::{Action, check_state};
use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::policy::{Decision, KeyPolicy, default_policy};
use crate::ids::{KeyRef, key_arn};
use crate::instances::InstanceHandle;
use crate::store::{ConnectionState, DEFAULT_POLICY_NAME, Entity, Key, StoreError};

/// A JSON response body (without `RequestId`, which the router adds).
pub type Reply = Map<String, Value>;

/// What a handler gets.
pub struct Ctx<'a> {
    /// Shared state.
    pub state: &'a ApiState,
    /// Who is calling.
    pub caller: &'a Caller,
    /// The request parameters.
    pub params: Params,
    /// The action being served.
    pub action: Action,
    /// The request id.
    pub request_id: &'a str,
    /// The key the call concerned, for the audit trail (set by [`Ctx::resolve_key`]).
    pub key_id: Option<String>,
}

impl Ctx<'_> {
    /// Resolves the key the parameter `name` names (id, `alias/…` or ARN of either) in the
    /// configured account and region; anything else is `Forbidden.KeyNotFound` /
    /// `Forbidden.AliasNotFound`. Records the key for the audit trail.
    pub async fn resolve_key(&mut self, name: &'static str) -> Result<Key, ApiError> {
        let text = self.params.required(name)?.to_owned();
        let key = self
            .state
            .resolve_key_text(&text)
            .await
            .map_err(|e| match e {
                ApiError::Id(_) => ApiError::invalid(name),
                other => other,
            })?;
        self.key_id = Some(key.key_id.clone());
        Ok(key)
    }

    /// Resolve, authorize with `self.action`'s permission, check the state matrix.
    pub async fn key_for_action(&mut self, name: &'static str) -> Result<Key, ApiError> {
        let key = self.resolve_key(name).await?;
        self.authorize(&key, self.action.permission()).await?;
        self.check_state(&key)?;
        Ok(key)
    }

    /// The key policy must allow `permission` to the caller.
    pub async fn authorize(&self, key: &Key, permission: &str) -> Result<(), ApiError> {
        let document = match self
            .state
            .store
            .get_policy(&key.key_id, DEFAULT_POLICY_NAME)
            .await
        {
            Ok(document) => document,
            Err(StoreError::NotFound(Entity::Policy)) => default_policy(&key.account_id),
            Err(other) => return Err(other.into()),
        };
        // A stored policy that no longer parses grants nothing (fail closed).
        let decision = KeyPolicy::parse(&document)
            .map(|p| p.evaluate(self.caller.principal.arn(), permission))
            .unwrap_or(Decision::ImplicitDeny);
        match decision {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny | Decision::ImplicitDeny => Err(ApiError::with_message(
                ErrorCode::NoPermission,
                format!(
                    "This operation is forbidden by permission system: {} may not call {permission} on this key.",
                    self.caller.principal.arn()
                ),
            )),
        }
    }

    /// Calls without a key (CreateKey, ListKeys, …) are for principals of the served account.
    pub fn authorize_account(&self) -> Result<(), ApiError> {
        if self.caller.principal.account() == self.state.account_id {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorCode::NoPermission,
                "This operation is forbidden by permission system: the caller is not in the key owner's account.",
            ))
        }
    }

    /// The state × operation matrix for `self.action`.
    pub fn check_state(&self, key: &Key) -> Result<(), ApiError> {
        check_state(self.action, key.key_state).map_err(ApiError::from)
    }

    /// The served instance of a key, which must be `Connected` for crypto.
    pub fn connected_instance(&self, key: &Key) -> Result<Arc<InstanceHandle>, ApiError> {
        let instance = self.state.instances.get(&key.instance_id).ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::RejectedUnavailable,
                format!(
                    "The request was rejected because the KMS instance {} is not served by this connector.",
                    key.instance_id
                ),
            )
        })?;
        let state = instance.backend.status().state;
        if state != ConnectionState::Connected {
            return Err(ApiError::InstanceNotConnected {
                instance_id: instance.id.clone(),
                state,
            });
        }
        Ok(instance)
    }
}

/// `acs:kms:<region>:<account>:key/<id>`.
pub fn key_arn_of(key: &Key) -> String {
    match crate::ids::KeyId::parse(&key.key_id) {
        Ok(id) => key_arn(&key.region, &key.account_id, &id),
        Err(_) => format!(
            "acs:kms:{}:{}:key/{}",
            key.region, key.account_id, key.key_id
        ),
    }
}

impl ApiState {
    /// Resolves a `KeyId` text (id, alias or ARN) to a key of the served account and region.
    pub async fn resolve_key_text(&self, text: &str) -> Result<Key, ApiError> {
        let (key_ref, arn) = KeyRef::parse(text)?;
        let foreign = arn
            .as_ref()
            .is_some_and(|(region, account)| *region != self.region || *account != self.account_id);
        let key = match key_ref {
            KeyRef::Id(_) if foreign => return Err(ErrorCode::KeyNotFound.into()),
            KeyRef::Alias(_) if foreign => return Err(ErrorCode::AliasNotFound.into()),
            KeyRef::Id(id) => self.store.get_key(id.as_str()).await?,
            KeyRef::Alias(alias) => {
                let alias = self
                    .store
                    .get_alias(&self.account_id, &self.region, alias.as_str())
                    .await?;
                self.store.get_key(&alias.key_id).await?
            }
        };
        if key.account_id != self.account_id || key.region != self.region {
            return Err(ErrorCode::KeyNotFound.into());
        }
        Ok(key)
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC), the OpenAPI date format.
pub fn iso8601(time: crate::store::UnixMillis) -> String {
    use time::macros::format_description;
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(time.as_secs())
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}
