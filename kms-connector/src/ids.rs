//! Identifiers of the KMS OpenAPI, parsed at the boundary (spec `kms-openapi.md` §4):
//! key ids, instance ids, key version ids, aliases, ARNs, tags.

use std::fmt;

use rand::Rng as _;

/// Why an identifier was refused; the message names the parameter, never repeats long input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The 3-letter region code inside instance-scoped ids (`hzz` = cn-hangzhou, …).
pub fn region_code(region: &str) -> String {
    const KNOWN: [(&str, &str); 8] = [
        ("cn-hangzhou", "hzz"),
        ("cn-beijing", "bjj"),
        ("cn-shanghai", "shh"),
        ("cn-shenzhen", "szz"),
        ("cn-hongkong", "hkk"),
        ("ap-southeast-1", "sgg"),
        ("ap-northeast-1", "jpp"),
        ("eu-central-1", "fra"),
    ];
    if let Some((_, code)) = KNOWN.iter().find(|(r, _)| *r == region) {
        return (*code).to_owned();
    }
    // Unknown regions: the first three letters of the last segment, padded.
    let mut code: String = region
        .rsplit('-')
        .find(|s| s.chars().any(|c| c.is_ascii_alphabetic()))
        .unwrap_or("xxx")
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .take(3)
        .collect();
    while code.len() < 3 {
        code.push('x');
    }
    code
}

/// `<prefix>-<region code><8 hex creation seconds><10 base36>`: 25 characters, unique enough
/// (36^10 random values per second per region).
fn instance_scoped(prefix: &str, region: &str) -> String {
    let seconds = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .clamp(0, i64::from(u32::MAX));
    let mut rng = rand::rng();
    let random: String = (0..10)
        .map(|_| BASE36[rng.random_range(0..BASE36.len())] as char)
        .collect();
    format!("{prefix}-{}{seconds:08x}{random}", region_code(region))
}

fn is_instance_scoped(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.len() == 21
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

text_id!(
    /// A key id: `key-<region><…>` (instance keys) or a lower-case UUID (default keys).
    KeyId
);
text_id!(
    /// A KMS instance id: `kst-<region><…>`.
    InstanceId
);
text_id!(
    /// A key version id: exactly 36 ASCII characters (a UUID); ciphertext blobs start with it.
    KeyVersionId
);
text_id!(
    /// An alias: `alias/` + 1–255 of `[A-Za-z0-9_/-]`, not under the reserved `alias/acs`.
    AliasName
);

impl KeyId {
    /// A fresh instance key id for `region`.
    pub fn generate(region: &str) -> Self {
        Self(instance_scoped("key", region))
    }

    /// Parses a key id.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if is_instance_scoped(text, "key") || (is_uuid(text) && text == text.to_ascii_lowercase()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidId("The specified parameter KeyId is not valid."))
        }
    }
}

impl InstanceId {
    /// A fresh instance id for `region`.
    pub fn generate(region: &str) -> Self {
        Self(instance_scoped("kst", region))
    }

    /// Parses an instance id.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if is_instance_scoped(text, "kst") {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidId(
                "The specified parameter DKMSInstanceId is not valid.",
            ))
        }
    }
}

impl KeyVersionId {
    /// Length of every version id (and of the blob prefix).
    pub const LEN: usize = 36;

    /// A fresh random version id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Parses a version id.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if is_uuid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidId(
                "The specified parameter KeyVersionId is not valid.",
            ))
        }
    }
}

impl AliasName {
    /// Parses an alias name.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let Some(name) = text.strip_prefix("alias/") else {
            return Err(InvalidId("The specified parameter AliasName is not valid."));
        };
        let charset_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'-'));
        if name.is_empty() || name.len() > 255 || !charset_ok {
            return Err(InvalidId("The specified parameter AliasName is not valid."));
        }
        if name.starts_with("acs") {
            return Err(InvalidId("The alias prefix alias/acs is reserved."));
        }
        Ok(Self(text.to_owned()))
    }
}

/// What a `KeyId` parameter names: a key id, an alias, or an ARN of either (spec §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id.
    Id(KeyId),
    /// An alias.
    Alias(AliasName),
    /// Text shaped like a key id that no key here can have (another format, upper case):
    /// "not found", as Alibaba answers it, rather than a parameter error.
    Absent,
}

/// Longest text that is answered "not found" rather than "invalid" as a key id.
const MAX_PLAUSIBLE_KEY_ID: usize = 128;

/// A key id, or [`KeyRef::Absent`] for 1–128 of `[A-Za-z0-9_-]` that is none.
fn id_ref(text: &str) -> Result<KeyRef, InvalidId> {
    match KeyId::parse(text) {
        Ok(id) => Ok(KeyRef::Id(id)),
        Err(_)
            if (1..=MAX_PLAUSIBLE_KEY_ID).contains(&text.len())
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) =>
        {
            Ok(KeyRef::Absent)
        }
        Err(e) => Err(e),
    }
}

/// `acs:kms:<region>:<account>:key/<id>` or `…:alias/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    /// Region.
    pub region: String,
    /// Account (uid).
    pub account: String,
    /// What it names.
    pub target: KeyRef,
}

impl KeyRef {
    /// Parses the `KeyId` parameter: id, alias or ARN. Returns the ARN's region and account too
    /// when it was one, so the caller can refuse a foreign account.
    pub fn parse(text: &str) -> Result<(Self, Option<(String, String)>), InvalidId> {
        if let Some(rest) = text.strip_prefix("acs:kms:") {
            let mut parts = rest.splitn(3, ':');
            let (Some(region), Some(account), Some(resource)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(InvalidId("The specified parameter KeyId is not valid."));
            };
            let target = if let Some(id) = resource.strip_prefix("key/") {
                id_ref(id)?
            } else if resource.starts_with("alias/") {
                Self::Alias(AliasName::parse(resource)?)
            } else {
                return Err(InvalidId("The specified parameter KeyId is not valid."));
            };
            return Ok((target, Some((region.to_owned(), account.to_owned()))));
        }
        if text.starts_with("alias/") {
            return Ok((Self::Alias(AliasName::parse(text)?), None));
        }
        Ok((id_ref(text)?, None))
    }
}

/// The key ARN.
pub fn key_arn(region: &str, account: &str, key: &KeyId) -> String {
    format!("acs:kms:{region}:{account}:key/{key}")
}

/// The alias ARN.
pub fn alias_arn(region: &str, account: &str, alias: &AliasName) -> String {
    format!("acs:kms:{region}:{account}:{alias}")
}

fn tag_charset_ok(text: &str) -> bool {
    text.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'\\' | b'_' | b'-' | b'.' | b'+' | b'=' | b':' | b'@' | b' '
            )
    })
}

/// Checks a tag key: 1–128 characters of `[A-Za-z0-9/\_-.+=:@ ]`, not starting with `aliyun`
/// or `acs:`.
pub fn check_tag_key(key: &str) -> Result<(), InvalidId> {
    let lower = key.to_ascii_lowercase();
    if key.is_empty() || key.chars().count() > 128 || !tag_charset_ok(key) {
        return Err(InvalidId("The specified tagKey is not valid."));
    }
    if lower.starts_with("aliyun") || lower.starts_with("acs:") {
        return Err(InvalidId(
            "The specified tagKey must not start with aliyun or acs:.",
        ));
    }
    Ok(())
}

/// Checks a tag value: 0–128 characters of the tag charset.
pub fn check_tag_value(value: &str) -> Result<(), InvalidId> {
    if value.chars().count() > 128 || !tag_charset_ok(value) {
        return Err(InvalidId("The specified tagValue is not valid."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        let key = KeyId::generate("cn-hangzhou");
        assert!(key.as_str().starts_with("key-hzz"), "{key}");
        assert_eq!(key.as_str().len(), 25);
        assert_eq!(KeyId::parse(key.as_str()).unwrap(), key);
        assert_ne!(KeyId::generate("cn-hangzhou"), key);
        let kst = InstanceId::generate("eu-west-1");
        assert!(kst.as_str().starts_with("kst-wes"), "{kst}");
        assert!(InstanceId::parse(kst.as_str()).is_ok());
        let v = KeyVersionId::generate();
        assert_eq!(v.as_str().len(), KeyVersionId::LEN);
        assert!(KeyVersionId::parse(v.as_str()).is_ok());
    }

    #[test]
    fn spec_examples() {
        for ok in [
            "key-hzz62f1cb66fi1p7n4slk",
            "key-bjj66c2a893vmhawtq5fd",
            "08c33a6f-4e0a-4a1b-a3fa-7ddfa1d4abcd",
        ] {
            assert!(KeyId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "key-HZZ62f1cb66fi1p7n4slk",
            "key-hzz",
            "kst-hzz62f1cb66fi1p7n4slk",
            "",
            "alias/x",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        assert!(InstanceId::parse("kst-bjj65794c36xm0v9aeujs").is_ok());
    }

    #[test]
    fn aliases() {
        assert!(AliasName::parse("alias/my-app").is_ok());
        assert!(AliasName::parse("alias/a/b_c-1").is_ok());
        for bad in [
            "my-app",
            "alias/",
            "alias/acs-x",
            "alias/acs",
            "alias/a b",
            "alias/ü",
            &format!("alias/{}", "a".repeat(256)),
        ] {
            assert!(AliasName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_refs_and_arns() {
        let (r, arn) =
            KeyRef::parse("acs:kms:cn-hangzhou:1540355698848:key/key-hzz62f1cb66fi1p7n4slk")
                .unwrap();
        assert!(matches!(r, KeyRef::Id(_)));
        assert_eq!(arn, Some(("cn-hangzhou".into(), "1540355698848".into())));
        let (r, _) = KeyRef::parse("acs:kms:cn-hangzhou:123456:alias/ExampleAlias1").unwrap();
        assert!(matches!(r, KeyRef::Alias(_)));
        assert!(matches!(
            KeyRef::parse("alias/my-app").unwrap().0,
            KeyRef::Alias(_)
        ));
        assert!(KeyRef::parse("acs:kms:cn-hangzhou:123:secret/x").is_err());
        for absent in [
            "KEY-UPPER",
            "key-hzz",
            "x",
            "acs:kms:cn-hangzhou:1:key/Other_Format",
        ] {
            assert_eq!(KeyRef::parse(absent).unwrap().0, KeyRef::Absent, "{absent}");
        }
        for impossible in ["", "a b", "key/x", &"k".repeat(129)] {
            assert!(KeyRef::parse(impossible).is_err(), "{impossible:?}");
        }
        let key = KeyId::parse("key-hzz62f1cb66fi1p7n4slk").unwrap();
        assert_eq!(
            key_arn("cn-hangzhou", "1", &key),
            "acs:kms:cn-hangzhou:1:key/key-hzz62f1cb66fi1p7n4slk"
        );
    }

    #[test]
    fn tags() {
        assert!(check_tag_key("env").is_ok());
        assert!(check_tag_key("a/b\\c_d-e.f+g=h:i@j").is_ok());
        for bad in [
            "",
            "aliyun-x",
            "Aliyun",
            "acs:foo",
            "bad#char",
            &"k".repeat(129),
        ] {
            assert!(check_tag_key(bad).is_err(), "{bad}");
        }
        assert!(check_tag_value("").is_ok());
        assert!(check_tag_value(&"v".repeat(129)).is_err());
    }
}
