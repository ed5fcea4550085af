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
use super::policy::{Decision, KeyPolicy, combine, default_policy};
use crate::ids::{KeyRef, key_arn};
use crate::instances::InstanceHandle;
use crate::store::{
    ConnectionState, DEFAULT_POLICY_NAME, Entity, Key, KeyFilter, Page, StoreError,
};

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

    /// The caller's identity policy and the key policy must both allow `permission` on the
    /// key, and neither may deny it.
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
        let arn = key_arn_of(key);
        self.decide(permission, &arn, Some(&document))
    }

    /// Whether `permission` on `key` is allowed, for listings that show only what the caller
    /// may see (`document`: the key's stored policy, `None` for the default one).
    pub fn may(&self, key: &Key, permission: &str, document: Option<&str>) -> bool {
        let default;
        let document = match document {
            Some(document) => document,
            None => {
                default = default_policy(&key.account_id);
                &default
            }
        };
        self.decide(permission, &key_arn_of(key), Some(document))
            .is_ok()
    }

    /// Every key of the account matching `filter` on which the caller may use `permission`
    /// (identity and key policies), oldest first: what listings show.
    pub async fn visible_keys(
        &self,
        filter: KeyFilter,
        permission: &str,
    ) -> Result<Vec<Key>, ApiError> {
        let state = self.state;
        let mut keys = Vec::new();
        for number in 1.. {
            let page = Page::new(number, Page::MAX_SIZE)?;
            let paged = state
                .store
                .list_keys(&state.account_id, &state.region, filter.clone(), page)
                .await?;
            let done = paged.items.len() < Page::MAX_SIZE as usize;
            let ids: Vec<String> = paged.items.iter().map(|k| k.key_id.clone()).collect();
            let policies = state.store.get_policies(ids, DEFAULT_POLICY_NAME).await?;
            for key in paged.items {
                if self.may(
                    &key,
                    permission,
                    policies.get(&key.key_id).map(String::as_str),
                ) {
                    keys.push(key);
                }
            }
            if done {
                break;
            }
        }
        Ok(keys)
    }

    /// Calls without a key (CreateKey, ListKeys, …): the caller must be of the served account,
    /// and its identity must allow `permission` on `resource` (see [`ApiState::account_arn`],
    /// [`ApiState::instance_arn`]).
    pub fn authorize_account(&self, permission: &str, resource: &str) -> Result<(), ApiError> {
        if self.caller.principal.account() != self.state.account_id {
            return Err(ApiError::with_message(
                ErrorCode::NoPermission,
                "This operation is forbidden by permission system: the caller is not in the key owner's account.",
            ));
        }
        self.decide(permission, resource, None)
    }

    /// [`Self::authorize_account`] for this action's own permission on the account.
    pub fn authorize_action(&self) -> Result<(), ApiError> {
        let resource = self.state.account_arn();
        self.authorize_account(self.action.permission(), &resource)
    }

    /// The one decision: identity policy and (for keys) key policy together.
    fn decide(
        &self,
        permission: &str,
        resource: &str,
        key_policy: Option<&str>,
    ) -> Result<(), ApiError> {
        let principal = self.caller.principal.arn();
        let identity = self.caller.identity.evaluate(permission, resource);
        // A stored policy that no longer parses grants nothing (fail closed).
        let resource_decision = key_policy.map(|document| {
            KeyPolicy::parse(document)
                .map(|p| p.evaluate(principal, permission))
                .unwrap_or(Decision::ImplicitDeny)
        });
        match combine(identity, resource_decision) {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny | Decision::ImplicitDeny => Err(ApiError::with_message(
                ErrorCode::NoPermission,
                format!(
                    "This operation is forbidden by permission system: {principal} may not call {permission} on {resource}."
                ),
            )),
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
        let status = instance.backend.status();
        if status.state != ConnectionState::Connected {
            return Err(ApiError::InstanceNotConnected {
                instance_id: instance.id.clone(),
                status,
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
    /// The resource of account-level calls in identity policies: `acs:kms:<region>:<uid>:*`.
    pub fn account_arn(&self) -> String {
        format!("acs:kms:{}:{}:*", self.region, self.account_id)
    }

    /// `acs:kms:<region>:<uid>:keystore/<kst-id>`.
    pub fn instance_arn(&self, instance_id: &str) -> String {
        format!(
            "acs:kms:{}:{}:keystore/{instance_id}",
            self.region, self.account_id
        )
    }

    /// Resolves a `KeyId` text (id, alias or ARN) to a key of the served account and region.
    pub async fn resolve_key_text(&self, text: &str) -> Result<Key, ApiError> {
        let (key_ref, arn) = KeyRef::parse(text)?;
        let foreign = arn
            .as_ref()
            .is_some_and(|(region, account)| *region != self.region || *account != self.account_id);
        let key = match key_ref {
            KeyRef::Id(_) | KeyRef::Absent if foreign => {
                return Err(ErrorCode::KeyNotFound.into());
            }
            KeyRef::Absent => return Err(ErrorCode::KeyNotFound.into()),
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
