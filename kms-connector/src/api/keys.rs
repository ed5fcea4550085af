//! CreateKey, DescribeKey, ListKeys and the `KeyMetadata` shape they share.

use schemas::kms::{
    ErrorCode, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, RotationInterval,
};
use schemas::xki::ExternalKeyId;
use serde_json::{Value, json};

use super::ctx::{Ctx, Reply, iso8601, key_arn_of};
use super::error::ApiError;
use super::policy::{KeyPolicy, default_policy};
use super::tags::parse_tags_json;
use crate::backend::NewVersion;
use crate::ids::{InstanceId, KeyId, KeyVersionId};
use crate::store::{
    AutomaticRotation, ConnectionState, Key, KeyFilter, KeyVersion, NewKey, UnixMillis,
};

/// Longest `Description`, characters.
pub const MAX_DESCRIPTION_CHARS: usize = 8192;

/// `KeyMetadata` of a key (spec §2.2 DescribeKey).
pub fn key_metadata(key: &Key) -> Value {
    let mut m = json!({
        "KeyId": key.key_id,
        "Arn": key_arn_of(key),
        "KeyState": key.key_state.as_str(),
        "KeySpec": key.key_spec.as_str(),
        "KeyUsage": key.key_usage.as_str(),
        "Origin": key.origin.as_str(),
        "ProtectionLevel": key.protection_level.as_str(),
        "Description": key.description,
        "Creator": key.creator,
        "CreationDate": iso8601(key.created_at),
        "MaterialExpireTime": key.material_expire_time.map(iso8601).unwrap_or_default(),
        "LastRotationDate": key.last_rotation_date.map(iso8601).unwrap_or_default(),
        "AutomaticRotation": key.automatic_rotation.as_str(),
        "DeletionProtection": if key.deletion_protection { "Enabled" } else { "Disabled" },
        "DKMSInstanceId": key.instance_id,
    });
    let extra = [
        ("DeleteDate", key.delete_date.map(iso8601)),
        (
            "DeletionProtectionDescription",
            key.deletion_protection_description.clone(),
        ),
        ("ExternalKeyId", key.external_key_id.clone()),
        ("NextRotationDate", key.next_rotation_date.map(iso8601)),
        // Symmetric keys only (spec §2.2): an asymmetric call names its version.
        (
            "PrimaryKeyVersion",
            key.key_spec
                .is_symmetric()
                .then(|| key.primary_key_version.clone()),
        ),
        (
            "RotationInterval",
            key.rotation_interval_secs.map(|s| format!("{s}s")),
        ),
    ];
    for (name, value) in extra {
        if let Some(value) = value {
            m[name] = Value::String(value);
        }
    }
    m
}

fn reply_with_metadata(key: &Key) -> Reply {
    let mut reply = Reply::new();
    reply.insert("KeyMetadata".into(), key_metadata(key));
    reply
}

/// Checks a `Description` value: at most 8192 characters.
pub fn check_description(text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid_because(
            "Description",
            format!("longer than {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// CreateKey.
pub async fn create_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let state = ctx.state;
    let p = &ctx.params;
    let instance_id = match p.optional("DKMSInstanceId") {
        Some(id) => {
            InstanceId::parse(id)?;
            id
        }
        None => state
            .instances
            .default_id()
            .ok_or(ApiError::Missing("DKMSInstanceId"))?,
    };
    // Identity policies may limit key creation to some instances.
    ctx.authorize_account("kms:CreateKey", &state.instance_arn(instance_id))?;
    let instance = state
        .instances
        .get(instance_id)
        .ok_or(ApiError::from(ErrorCode::DkmsInstanceNotFound))?;
    let capabilities = instance.backend.capabilities();

    let key_spec = match p.optional("KeySpec") {
        Some(text) => KeySpec::parse(text).ok_or_else(|| ApiError::invalid("KeySpec"))?,
        None => KeySpec::default(),
    };
    if !capabilities.key_specs.contains(&key_spec) {
        return Err(ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            format!(
                "This action is not supported: KeySpec {key_spec} is not available in the {} instance {}.",
                instance.kind, instance.id
            ),
        ));
    }
    let key_usage = match p.optional("KeyUsage") {
        Some(text) => KeyUsage::parse(text).ok_or_else(|| ApiError::invalid("KeyUsage"))?,
        None => key_spec.default_usage(),
    };
    if !key_spec.usages().contains(&key_usage) {
        return Err(ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            format!(
                "This action is not supported: KeyUsage {key_usage} is not available for KeySpec {key_spec}."
            ),
        ));
    }
    match p.optional("Origin") {
        None => {}
        Some(text) => match Origin::parse(text).ok_or_else(|| ApiError::invalid("Origin"))? {
            Origin::AliyunKms => {}
            Origin::External => {
                return Err(ApiError::with_message(
                    ErrorCode::UnsupportedOperation,
                    "This action is not supported: importing key material (Origin EXTERNAL) is not available yet.",
                ));
            }
        },
    }
    // Checked, then ignored: a key's protection is its instance's (spec §2.2).
    if let Some(level) = p.optional("ProtectionLevel")
        && ProtectionLevel::parse(level).is_none()
    {
        return Err(ApiError::invalid("ProtectionLevel"));
    }
    let rotation_interval = match p.optional("RotationInterval") {
        Some(text) => Some(
            RotationInterval::parse(text)
                .map_err(|e| ApiError::invalid_because("RotationInterval", e.to_string()))?,
        ),
        None => None,
    };
    let automatic_rotation = if p.bool("EnableAutomaticRotation")?.unwrap_or(false) {
        // Asymmetric keys never rotate automatically (spec §2.2 UpdateRotationPolicy).
        if !key_spec.is_symmetric() {
            return Err(ApiError::with_message(
                ErrorCode::RejectedUnsupportedOperation,
                format!("Unsupported operation: {key_spec} keys do not rotate automatically."),
            ));
        }
        if !capabilities.rotation {
            return Err(ApiError::with_message(
                ErrorCode::RejectedUnsupportedOperation,
                format!(
                    "Unsupported operation: keys of the {} instance {} do not rotate.",
                    instance.kind, instance.id
                ),
            ));
        }
        if rotation_interval.is_none() {
            return Err(ApiError::Missing("RotationInterval"));
        }
        AutomaticRotation::Enabled
    } else {
        AutomaticRotation::Disabled
    };
    let description = p.raw("Description").unwrap_or_default().to_owned();
    check_description(&description)?;
    let external_key_id = match (
        capabilities.needs_external_key_id,
        p.optional("ExternalKeyId"),
    ) {
        (true, None) => return Err(ApiError::Missing("ExternalKeyId")),
        (true, Some(text)) => Some(
            ExternalKeyId::parse(text)
                .map_err(|e| ApiError::invalid_because("ExternalKeyId", e.to_string()))?,
        ),
        (false, Some(_)) => {
            return Err(ApiError::invalid_because(
                "ExternalKeyId",
                "only keys of external instances have one",
            ));
        }
        (false, None) => None,
    };
    let tags = match p.optional("Tags") {
        Some(text) => parse_tags_json("Tags", text)?,
        None => Vec::new(),
    };
    let policy = match p.optional("Policy") {
        Some(text) => {
            KeyPolicy::parse(text).map_err(|reason| ApiError::invalid_because("Policy", reason))?;
            text.to_owned()
        }
        None => default_policy(&state.account_id),
    };
    let instance_state = instance.backend.status().state;
    if instance_state != ConnectionState::Connected {
        return Err(ApiError::with_message(
            ErrorCode::DkmsInstanceStateInvalid,
            format!(
                "The specified DKMS Instance state is invalid: {} is {}.",
                instance.id,
                instance_state.as_str()
            ),
        ));
    }

    let key_id = KeyId::generate(&state.region);
    let version_id = KeyVersionId::generate();
    ctx.key_id = Some(key_id.to_string());
    let principal = ctx.caller.principal.arn().to_owned();
    let material = instance
        .backend
        .new_version(NewVersion {
            key_id: &key_id,
            version_id: &version_id,
            key_spec,
            external_key_id: external_key_id.as_ref(),
            principal: &principal,
            request_id: ctx.request_id,
        })
        .await
        .map_err(ApiError::new_key)?;
    let now = UnixMillis::now();
    let new_key = NewKey {
        key_id: key_id.to_string(),
        account_id: state.account_id.clone(),
        region: state.region.clone(),
        instance_id: instance.id.clone(),
        key_spec,
        key_usage,
        origin: Origin::AliyunKms,
        protection_level: capabilities.protection_level,
        key_state: KeyState::Enabled,
        description,
        creator: state.account_id.clone(),
        created_at: now,
        external_key_id: external_key_id.map(|e| e.as_str().to_owned()),
        automatic_rotation,
        rotation_interval_secs: (automatic_rotation == AutomaticRotation::Enabled)
            .then(|| rotation_interval.map(|i| i64::try_from(i.as_secs()).unwrap_or(i64::MAX)))
            .flatten(),
        material_expire_time: None,
    };
    let version = KeyVersion {
        key_version_id: version_id.to_string(),
        key_id: key_id.to_string(),
        created_at: now,
        sealed_material: material.sealed.clone(),
        backend_ref: material.backend_ref.clone(),
    };
    match state
        .store
        .create_key(new_key, version, tags, Some(policy))
        .await
    {
        Ok(key) => Ok(reply_with_metadata(&key)),
        Err(error) => {
            // Nothing of the key was stored: release what the backend made for it.
            if let Err(cleanup) = instance.backend.destroy_version(&material).await {
                tracing::warn!(key_id = %key_id, error = %cleanup, "cannot release the material of a key that was not stored");
            }
            Err(error.into())
        }
    }
}

/// DescribeKey.
pub async fn describe_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    Ok(reply_with_metadata(&key))
}

/// ListKeys.
/// Shows the keys the caller may describe (identity and key policies), paged after filtering.
pub async fn list_keys(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    ctx.authorize_action()?;
    let page = ctx.params.page()?;
    let filter = match ctx.params.optional("Filters") {
        Some(text) => parse_filters(text)?,
        None => Some(KeyFilter::default()),
    };
    let keys = match filter {
        Some(filter) => ctx.visible_keys(filter, "kms:DescribeKey").await?,
        // A CreatorType filter naming only Service: there are no service keys.
        None => Vec::new(),
    };
    let total = keys.len();
    let skip = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let items: Vec<Value> = keys
        .iter()
        .skip(skip)
        .take(page.size() as usize)
        .map(|k| json!({"KeyId": k.key_id, "KeyArn": key_arn_of(k)}))
        .collect();
    let mut reply = Reply::new();
    reply.insert("Keys".into(), json!({ "Key": items }));
    reply.insert("TotalCount".into(), json!(total));
    reply.insert("PageNumber".into(), json!(page.number()));
    reply.insert("PageSize".into(), json!(page.size()));
    Ok(reply)
}

/// Parses `Filters`: `[{"Key":…,"Values":[…]}]`, ≤ 10 entries of ≤ 10 values; AND across keys,
/// OR within one (repeated keys merge). `None` when the filter can match nothing.
fn parse_filters(text: &str) -> Result<Option<KeyFilter>, ApiError> {
    let invalid = |reason: &str| ApiError::invalid_because("Filters", reason.to_owned());
    let entries: Vec<Value> =
        serde_json::from_str(text).map_err(|_| invalid("not a JSON array"))?;
    if entries.len() > 10 {
        return Err(invalid("at most 10 filters"));
    }
    let mut filter = KeyFilter::default();
    let mut creator_types: Vec<String> = Vec::new();
    for entry in &entries {
        let key = entry
            .get("Key")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every filter needs a Key"))?;
        let values: Vec<String> = entry
            .get("Values")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("every filter needs Values"))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("Values must be strings"))?;
        if values.len() > 10 {
            return Err(invalid("at most 10 values per filter"));
        }
        match key {
            "KeyState" => {
                for value in &values {
                    let state = [
                        KeyState::Enabled,
                        KeyState::Disabled,
                        KeyState::PendingDeletion,
                        KeyState::PendingImport,
                        KeyState::Unavailable,
                    ]
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| invalid("unknown KeyState"))?;
                    filter.key_states.push(state);
                }
            }
            // Values no key can have match nothing (Alibaba filters the same way).
            "KeySpec" => filter
                .key_specs
                .extend(values.iter().filter_map(|v| KeySpec::parse(v))),
            "KeyUsage" => filter
                .key_usages
                .extend(values.iter().filter_map(|v| KeyUsage::parse(v))),
            "ProtectionLevel" => {
                for value in &values {
                    let level = ProtectionLevel::parse(value)
                        .ok_or_else(|| invalid("unknown ProtectionLevel"))?;
                    filter.protection_levels.push(level);
                }
            }
            "DKMSInstanceId" => filter.instance_ids.extend(values),
            "CreatorType" => {
                if values.iter().any(|v| v != "User" && v != "Service") {
                    return Err(invalid("CreatorType is User or Service"));
                }
                creator_types.extend(values);
            }
            _ => return Err(invalid("unknown filter Key")),
        }
    }
    // Every key of this connector is a user key.
    let users_only = creator_types.is_empty() || creator_types.iter().any(|t| t == "User");
    Ok(users_only.then_some(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = parse_filters(r#"[{"Key":"KeyState","Values":["Enabled","Disabled"]},{"Key":"KeyState","Values":["PendingDeletion"]},{"Key":"DKMSInstanceId","Values":["kst-a"]}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(f.key_states.len(), 3);
        assert_eq!(f.instance_ids, ["kst-a"]);
        assert!(
            parse_filters(r#"[{"Key":"CreatorType","Values":["Service"]}]"#)
                .unwrap()
                .is_none()
        );
        assert!(
            parse_filters(r#"[{"Key":"CreatorType","Values":["User"]}]"#)
                .unwrap()
                .is_some()
        );
        for bad in [
            r#"{}"#,
            r#"[{"Key":"Color","Values":["x"]}]"#,
            r#"[{"Key":"KeyState","Values":["On"]}]"#,
            r#"[{"Key":"KeyState"}]"#,
        ] {
            assert!(parse_filters(bad).is_err(), "{bad}");
        }
        let many = format!("[{}]", [r#"{"Key":"KeySpec","Values":[]}"#; 11].join(","));
        assert!(parse_filters(&many).is_err());
    }

    #[test]
    fn descriptions() {
        assert!(check_description(&"é".repeat(8192)).is_ok());
        assert!(check_description(&"a".repeat(8193)).is_err());
    }
}
