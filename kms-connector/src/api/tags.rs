//! Tags: the old per-key APIs (TagResource, UntagResource, ListResourceTags, JSON parameters)
//! and the new multi-resource ones (TagResources, UntagResources, ListTagResources, flattened
//! `ResourceId.N`, `Tag.N.Key`, `TagKey.N`, `NextToken`). Rules (spec §4.6): ≤ 20 tags per key,
//! keys 1–128 and values ≤ 128 of `[A-Za-z0-9/\_-.+=:@ ]`, no `aliyun` / `acs:` key prefix,
//! no duplicate key in one request.

use std::collections::{BTreeMap, HashSet};

use schemas::kms::ErrorCode;
use serde_json::{Value, json};

use super::ctx::{Ctx, Reply};
use super::error::ApiError;
use crate::ids::{check_tag_key, check_tag_value};
use crate::store::{Key, KeyFilter, StoreError, Tag};

/// Most tags a key carries, and a request sets.
pub const MAX_TAGS: usize = crate::store::MAX_TAGS_PER_KEY;
/// Most resources of one new-API request.
const MAX_RESOURCES: usize = 50;
/// Rows per ListTagResources page.
const LIST_PAGE_ROWS: usize = 200;

/// Validates tag pairs: count, charset, prefixes, duplicates.
pub fn validate_tags(pairs: Vec<(String, String)>) -> Result<Vec<Tag>, ApiError> {
    if pairs.len() > MAX_TAGS {
        return Err(ApiError::invalid_because(
            "Tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut seen = HashSet::new();
    let mut tags = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        check_tag_key(&key).map_err(|e| ApiError::with_message(ErrorCode::InvalidTagKey, e.0))?;
        check_tag_value(&value)
            .map_err(|e| ApiError::with_message(ErrorCode::InvalidTagValue, e.0))?;
        if !seen.insert(key.clone()) {
            return Err(ErrorCode::DuplicateTagKey.into());
        }
        tags.push(Tag::new(key, value));
    }
    Ok(tags)
}

/// Parses `[{"TagKey":"k","TagValue":"v"}, …]` (CreateKey `Tags`, TagResource `Tags`).
pub fn parse_tags_json(name: &'static str, text: &str) -> Result<Vec<Tag>, ApiError> {
    let invalid = || ApiError::invalid_because(name, "expected [{\"TagKey\":…,\"TagValue\":…}]");
    let entries: Vec<Value> = serde_json::from_str(text).map_err(|_| invalid())?;
    let pairs = entries
        .iter()
        .map(|e| {
            let key = e.get("TagKey")?.as_str()?.to_owned();
            let value = match e.get("TagValue") {
                None | Some(Value::Null) => String::new(),
                Some(v) => v.as_str()?.to_owned(),
            };
            Some((key, value))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(invalid)?;
    validate_tags(pairs)
}

/// Adds `tags` to a key; the store refuses to go past [`MAX_TAGS`] in total.
async fn add_tags(ctx: &Ctx<'_>, key: &Key, tags: Vec<Tag>) -> Result<(), ApiError> {
    match ctx.state.store.set_tags(&key.key_id, tags).await {
        Err(StoreError::TooManyTags { max }) => Err(ApiError::invalid_because(
            "Tags",
            format!("a key carries at most {max} tags"),
        )),
        other => Ok(other?),
    }
}

fn refuse_other_resources(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.params.optional("SecretName").is_some() || ctx.params.optional("CertificateId").is_some()
    {
        return Err(ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            "This action is not supported: this connector serves keys only (no secrets or certificates).",
        ));
    }
    Ok(())
}

/// TagResource (old API).
pub async fn tag_resource(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    refuse_other_resources(ctx)?;
    let tags = parse_tags_json("Tags", ctx.params.required("Tags")?)?;
    let key = ctx.key_for_action("KeyId").await?;
    add_tags(ctx, &key, tags).await?;
    Ok(Reply::new())
}

/// UntagResource (old API): `TagKeys` = `["k1","k2"]`.
pub async fn untag_resource(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    refuse_other_resources(ctx)?;
    let text = ctx.params.required("TagKeys")?;
    let tag_keys: Vec<String> = serde_json::from_str(text)
        .map_err(|_| ApiError::invalid_because("TagKeys", "expected [\"key\", …]"))?;
    if tag_keys.is_empty()
        || tag_keys
            .iter()
            .any(|k| k.is_empty() || k.chars().count() > 128)
    {
        return Err(ApiError::invalid_because(
            "TagKeys",
            "every tag key is 1–128 characters",
        ));
    }
    let key = ctx.key_for_action("KeyId").await?;
    ctx.state.store.remove_tags(&key.key_id, tag_keys).await?;
    Ok(Reply::new())
}

/// ListResourceTags (old API).
pub async fn list_resource_tags(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let key = ctx.key_for_action("KeyId").await?;
    let tags = ctx.state.store.list_tags(&key.key_id).await?;
    let items: Vec<Value> = tags
        .iter()
        .map(|t| json!({"KeyId": key.key_id, "TagKey": t.tag_key, "TagValue": t.tag_value}))
        .collect();
    let mut reply = Reply::new();
    reply.insert("Tags".into(), json!({ "Tag": items }));
    Ok(reply)
}

/// `RegionId` must be ours and `ResourceType` must be `key`.
fn check_scope(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.params.required("RegionId")? != ctx.state.region {
        return Err(ApiError::invalid_because(
            "RegionId",
            "not the region of this connector",
        ));
    }
    match ctx.params.required("ResourceType")? {
        t if t.eq_ignore_ascii_case("key") => Ok(()),
        t if t.eq_ignore_ascii_case("secret") => Err(ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            "This action is not supported: this connector serves keys only.",
        )),
        _ => Err(ApiError::invalid("ResourceType")),
    }
}

/// Resolves every `ResourceId.N` (at most 50), authorizes and state-checks each.
async fn resources(ctx: &mut Ctx<'_>, required: bool) -> Result<Vec<Key>, ApiError> {
    let ids: Vec<String> = ctx
        .params
        .list("ResourceId")?
        .into_iter()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() && required {
        return Err(ApiError::Missing("ResourceId.1"));
    }
    if ids.len() > MAX_RESOURCES {
        return Err(ApiError::invalid_because(
            "ResourceId",
            format!("at most {MAX_RESOURCES}"),
        ));
    }
    let mut keys = Vec::with_capacity(ids.len());
    for id in &ids {
        let key = ctx
            .state
            .resolve_key_text(id)
            .await
            .map_err(|e| match e.reply().0 {
                ErrorCode::KeyNotFound | ErrorCode::AliasNotFound | ErrorCode::InvalidParameter => {
                    ApiError::from(ErrorCode::InvalidResourceIdNotFound)
                }
                _ => e,
            })?;
        ctx.authorize(&key, ctx.action.permission()).await?;
        ctx.check_state(&key)?;
        keys.push(key);
    }
    if let [only] = keys.as_slice() {
        ctx.key_id = Some(only.key_id.clone());
    }
    Ok(keys)
}

/// TagResources (new API).
pub async fn tag_resources(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    check_scope(ctx)?;
    let pairs: Vec<(String, String)> = ctx
        .params
        .tag_list()?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if pairs.is_empty() {
        return Err(ApiError::Missing("Tag.1.Key"));
    }
    let tags = validate_tags(pairs)?;
    let keys = resources(ctx, true).await?;
    for key in &keys {
        add_tags(ctx, key, tags.clone()).await?;
    }
    Ok(Reply::new())
}

/// UntagResources (new API): `TagKey.N`, or `All=true` with no `TagKey`.
pub async fn untag_resources(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    check_scope(ctx)?;
    let tag_keys: Vec<String> = ctx
        .params
        .list("TagKey")?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let all = ctx.params.bool("All")?.unwrap_or(false);
    match (all, tag_keys.is_empty()) {
        (true, false) => {
            return Err(ApiError::invalid_because("All", "only without TagKey"));
        }
        (false, true) => return Err(ApiError::Missing("TagKey.1")),
        _ => {}
    }
    if tag_keys.len() > MAX_TAGS || tag_keys.iter().any(|k| k.chars().count() > 128) {
        return Err(ApiError::invalid_because(
            "TagKey",
            "at most 20 keys of 1–128 characters",
        ));
    }
    let keys = resources(ctx, true).await?;
    for key in &keys {
        let remove = if all {
            let tags = ctx.state.store.list_tags(&key.key_id).await?;
            tags.into_iter().map(|t| t.tag_key).collect()
        } else {
            tag_keys.clone()
        };
        ctx.state.store.remove_tags(&key.key_id, remove).await?;
    }
    Ok(Reply::new())
}

/// ListTagResources (new API): the tags of the named keys (or of every key the caller may list),
/// optionally only keys carrying every `Tag.N` (an empty value matches any), 200 rows a page.
pub async fn list_tag_resources(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    check_scope(ctx)?;
    ctx.authorize_action()?;
    let wanted: Vec<(String, String)> = ctx
        .params
        .tag_list()?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if wanted.len() > MAX_TAGS {
        return Err(ApiError::invalid_because(
            "Tag",
            format!("at most {MAX_TAGS}"),
        ));
    }
    let offset: usize = match ctx.params.optional("NextToken") {
        Some(token) => token.parse().map_err(|_| ApiError::invalid("NextToken"))?,
        None => 0,
    };
    let mut keys = resources(ctx, false).await?;
    if keys.is_empty() && ctx.params.list("ResourceId")?.is_empty() {
        keys = every_listable_key(ctx).await?;
    }
    let ids: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let rows = ctx.state.store.list_tags_for_keys(ids).await?;
    let mut by_key: BTreeMap<&str, Vec<&Tag>> = BTreeMap::new();
    let tags: Vec<(String, Tag)> = rows
        .into_iter()
        .map(|r| (r.key_id, Tag::new(r.tag_key, r.tag_value)))
        .collect();
    for (key_id, tag) in &tags {
        by_key.entry(key_id.as_str()).or_default().push(tag);
    }
    let matches = |key_tags: &[&Tag]| {
        wanted.iter().all(|(k, v)| {
            key_tags
                .iter()
                .any(|t| t.tag_key == *k && (v.is_empty() || t.tag_value == *v))
        })
    };
    let all_rows: Vec<Value> = by_key
        .iter()
        .filter(|(_, key_tags)| matches(key_tags))
        .flat_map(|(key_id, key_tags)| {
            key_tags.iter().map(move |t| {
                json!({"ResourceId": key_id, "ResourceType": "key", "TagKey": t.tag_key, "TagValue": t.tag_value})
            })
        })
        .collect();
    let page: Vec<Value> = all_rows
        .iter()
        .skip(offset)
        .take(LIST_PAGE_ROWS)
        .cloned()
        .collect();
    let next = offset + page.len();
    let next_token = if next < all_rows.len() {
        next.to_string()
    } else {
        String::new()
    };
    let mut reply = Reply::new();
    reply.insert("TagResources".into(), json!({ "TagResource": page }));
    reply.insert("NextToken".into(), json!(next_token));
    Ok(reply)
}

/// Every key of the account whose policies let the caller list its tags.
async fn every_listable_key(ctx: &Ctx<'_>) -> Result<Vec<Key>, ApiError> {
    ctx.visible_keys(KeyFilter::default(), ctx.action.permission())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rules() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            validate_tags(vec![pair("env", "prod")]).unwrap(),
            [Tag::new("env", "prod")]
        );
        let code = |pairs| validate_tags(pairs).unwrap_err().reply().0.code();
        assert_eq!(code(vec![pair("aliyun-x", "v")]), "InvalidParameter.TagKey");
        assert_eq!(code(vec![pair("acs:x", "v")]), "InvalidParameter.TagKey");
        assert_eq!(
            code(vec![pair(&"k".repeat(129), "v")]),
            "InvalidParameter.TagKey"
        );
        assert_eq!(code(vec![pair("k", "bad#")]), "InvalidParameter.TagValue");
        assert_eq!(
            code(vec![pair("k", "1"), pair("k", "2")]),
            "Duplicate.TagKey"
        );
        let many: Vec<_> = (0..21).map(|i| pair(&format!("k{i}"), "v")).collect();
        assert_eq!(code(many), "InvalidParameter");
    }

    #[test]
    fn tags_json() {
        let tags =
            parse_tags_json("Tags", r#"[{"TagKey":"a","TagValue":"1"},{"TagKey":"b"}]"#).unwrap();
        assert_eq!(tags, [Tag::new("a", "1"), Tag::new("b", "")]);
        for bad in [
            r#"{"TagKey":"a"}"#,
            r#"[{"Key":"a"}]"#,
            r#"[{"TagKey":1}]"#,
            "nope",
        ] {
            assert!(parse_tags_json("Tags", bad).is_err(), "{bad}");
        }
    }
}
