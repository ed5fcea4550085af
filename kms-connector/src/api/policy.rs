//! Policies in the RAM statement grammar: key policies (spec §2.2 `Policy`, seeds "managing
//! keys") and the identity policies of access keys (configuration), with every published rule,
//! the default key policy, and evaluation.
//!
//! ```json
//! key policy:      {"Version":"1","Statement":[{"Sid":"…","Effect":"Allow",
//!                   "Principal":{"RAM":["acs:ram::<uid>:*"]},"Action":["kms:*"],"Resource":["*"]}]}
//! identity policy: {"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:Encrypt"],
//!                   "Resource":["acs:kms:cn-hangzhou:<uid>:key/*"]}]}
//! ```
//!
//! A key policy names principals and applies to its key (`Resource` is `*`); an identity policy
//! belongs to one access key, so it names no principal, and its `Resource` entries are ARN
//! globs (`acs:kms:<region>:<uid>:key/<id>`, `…:keystore/<kst-id>`, `…:*`, or `*`).
//!
//! Evaluation: an explicit `Deny` that matches wins, then any matching `Allow`, else the call is
//! refused (`Forbidden.NoPermission`). `Principal.RAM`, `Action` and `Resource` entries are
//! globs (`*` matches any run of characters; actions compare case-insensitively, as RAM does).
//! `Condition` blocks are accepted but not evaluated, failing closed: an `Allow` with a
//! condition grants nothing, a `Deny` with a condition always applies.

use serde_json::{Map, Value};

/// Largest policy document, bytes.
pub const MAX_POLICY_BYTES: usize = 32_768;

/// Whether a statement allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Refuses, whatever else grants.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    /// `Principal.RAM` (key policies; empty in identity policies).
    principals: Vec<String>,
    actions: Vec<String>,
    /// `Resource` (`["*"]` in key policies).
    resources: Vec<String>,
    conditional: bool,
}

impl Statement {
    fn grants(&self, permission: &str, resource: &str) -> bool {
        self.actions.iter().any(|a| glob(a, permission, true))
            && self.resources.iter().any(|r| glob(r, resource, false))
    }
}

/// Which grammar a document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Key,
    Identity,
}

/// A validated key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    statements: Vec<Statement>,
}

/// A validated identity policy: what one access key may do, on which resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPolicy {
    statements: Vec<Statement>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A matching Allow and no matching Deny.
    Allow,
    /// A matching Deny.
    ExplicitDeny,
    /// Nothing matched.
    ImplicitDeny,
}

/// Permissions a principal other than the account root holds only through an identity policy
/// that grants them: managing the HYOK link is a separate duty from using keys.
pub const INSTANCE_ADMIN_PERMISSIONS: &[&str] =
    &["kms:ConnectKmsInstance", "kms:DisconnectKmsInstance"];

/// What an access key may do by itself, before any key policy is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The account root without an identity policy: everything.
    Root,
    /// Another principal without an identity policy: everything but instance administration
    /// ([`INSTANCE_ADMIN_PERMISSIONS`]); key policies still decide about each key.
    Member,
    /// What the configured identity policy says.
    Policy(IdentityPolicy),
}

impl Identity {
    /// The identity's decision on `permission` for the resource with this ARN.
    pub fn evaluate(&self, permission: &str, resource: &str) -> Decision {
        match self {
            Self::Root => Decision::Allow,
            Self::Member
                if INSTANCE_ADMIN_PERMISSIONS
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(permission)) =>
            {
                Decision::ImplicitDeny
            }
            Self::Member => Decision::Allow,
            Self::Policy(policy) => policy.evaluate(permission, resource),
        }
    }
}

/// The identity policy and the resource's own policy (a key policy; `None` for resources that
/// have none) together: an explicit Deny in either wins, and both must allow.
pub fn combine(identity: Decision, resource: Option<Decision>) -> Decision {
    match (identity, resource) {
        (Decision::ExplicitDeny, _) | (_, Some(Decision::ExplicitDeny)) => Decision::ExplicitDeny,
        (Decision::Allow, None | Some(Decision::Allow)) => Decision::Allow,
        _ => Decision::ImplicitDeny,
    }
}

/// The policy a key gets when CreateKey names none: the owning account may do everything.
pub fn default_policy(account_id: &str) -> String {
    serde_json::json!({
        "Version": "1",
        "Statement": [{
            "Sid": "Enable RAM User Permissions",
            "Effect": "Allow",
            "Principal": { "RAM": [format!("acs:ram::{account_id}:*")] },
            "Action": ["kms:*"],
            "Resource": ["*"],
        }],
    })
    .to_string()
}

impl KeyPolicy {
    /// Parses and validates a key policy document; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_document(text, Kind::Key).map(|statements| Self { statements })
    }

    /// Evaluates the policy for `principal` (an `acs:ram::…` ARN) calling `permission`
    /// (`kms:Encrypt`, …) on its key.
    pub fn evaluate(&self, principal: &str, permission: &str) -> Decision {
        decide(
            self.statements
                .iter()
                .filter(|s| s.principals.iter().any(|p| glob(p, principal, false)))
                .filter(|s| s.grants(permission, "*")),
        )
    }
}

impl IdentityPolicy {
    /// Parses and validates an identity policy document; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_document(text, Kind::Identity).map(|statements| Self { statements })
    }

    /// Evaluates the policy for `permission` on the resource with this ARN.
    pub fn evaluate(&self, permission: &str, resource: &str) -> Decision {
        decide(
            self.statements
                .iter()
                .filter(|s| s.grants(permission, resource)),
        )
    }
}

/// Deny wins over Allow; an Allow with a condition grants nothing (fail closed).
fn decide<'a>(matching: impl Iterator<Item = &'a Statement>) -> Decision {
    let mut allowed = false;
    for statement in matching {
        match statement.effect {
            Effect::Deny => return Decision::ExplicitDeny,
            Effect::Allow if !statement.conditional => allowed = true,
            Effect::Allow => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn parse_document(text: &str, kind: Kind) -> Result<Vec<Statement>, String> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!("longer than {MAX_POLICY_BYTES} bytes"));
    }
    let value: Value = serde_json::from_str(text).map_err(|_| "not a JSON document".to_owned())?;
    let Value::Object(root) = value else {
        return Err("not a JSON object".into());
    };
    only_fields(&root, &["Version", "Statement"], "the policy")?;
    if root.get("Version").and_then(Value::as_str) != Some("1") {
        return Err("Version must be \"1\"".into());
    }
    let Some(Value::Array(statements)) = root.get("Statement") else {
        return Err("Statement must be an array".into());
    };
    if statements.is_empty() {
        return Err("Statement must not be empty".into());
    }
    statements
        .iter()
        .map(|s| parse_statement(s, kind))
        .collect()
}

fn only_fields(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "{what} has an unknown field {:?}",
            printable(unknown)
        )),
        None => Ok(()),
    }
}

fn printable(text: &str) -> String {
    text.chars().take(32).filter(|c| !c.is_control()).collect()
}

/// A string or an array of strings, as IAM-style documents allow.
fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    let list = match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("{field} must hold strings"))?,
        _ => {
            return Err(format!(
                "{field} is required (a string or an array of strings)"
            ));
        }
    };
    if list.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    Ok(list)
}

fn parse_statement(value: &Value, kind: Kind) -> Result<Statement, String> {
    let Value::Object(object) = value else {
        return Err("every Statement must be an object".into());
    };
    only_fields(
        object,
        &[
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ],
        "a Statement",
    )?;
    if let Some(sid) = object.get("Sid") {
        // The published charset, plus the space the console's own default Sid uses.
        let ok = sid.as_str().is_some_and(|s| {
            s.len() <= 128
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'/' | b'+' | b'=' | b'.' | b'@' | b'-' | b' ')
                })
        });
        if !ok {
            return Err("Sid must be at most 128 of [A-Za-z0-9_/+=.@-]".into());
        }
    }
    let effect = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err("Effect must be Allow or Deny".into()),
    };
    let principals = match (kind, object.get("Principal")) {
        (Kind::Identity, None) => Vec::new(),
        (Kind::Identity, Some(_)) => {
            return Err(
                "an identity policy names no Principal (it applies to its access key)".into(),
            );
        }
        (Kind::Key, Some(Value::Object(principal))) => {
            only_fields(principal, &["RAM"], "Principal")?;
            let principals = strings(principal.get("RAM"), "Principal.RAM")?;
            if let Some(bad) = principals
                .iter()
                .find(|p| *p != "*" && !p.starts_with("acs:ram::"))
            {
                return Err(format!(
                    "Principal.RAM entry {:?} must be an acs:ram:: ARN",
                    printable(bad)
                ));
            }
            principals
        }
        (Kind::Key, _) => return Err("Principal must be an object with a RAM list".into()),
    };
    let actions = strings(object.get("Action"), "Action")?;
    if actions
        .iter()
        .any(|a| a.len() < 5 || !a.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("kms:")))
    {
        return Err("every Action must start with kms:".into());
    }
    let resources = strings(object.get("Resource"), "Resource")?;
    match kind {
        Kind::Key if resources != ["*"] => return Err("Resource must be [\"*\"]".into()),
        Kind::Identity => {
            if let Some(bad) = resources
                .iter()
                .find(|r| *r != "*" && !r.starts_with("acs:kms:"))
            {
                return Err(format!(
                    "Resource entry {:?} must be * or an acs:kms: ARN",
                    printable(bad)
                ));
            }
        }
        Kind::Key => {}
    }
    let conditional = match object.get("Condition") {
        None => false,
        Some(Value::Object(_)) => true,
        Some(_) => return Err("Condition must be an object".into()),
    };
    Ok(Statement {
        effect,
        principals,
        actions,
        resources,
        conditional,
    })
}

/// `*`-glob match of `text` against `pattern`.
fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && eq(p[pi], t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &[&str] = &[
        "kms:List*",
        "kms:Describe*",
        "kms:Create*",
        "kms:Enable*",
        "kms:Disable*",
        "kms:Get*",
        "kms:Set*",
        "kms:Update*",
        "kms:Delete*",
        "kms:Cancel*",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:ImportKeyMaterial",
        "kms:ScheduleKeyDeletion",
    ];
    const USER: &[&str] = &[
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:GenerateAndExportDataKey",
        "kms:AsymmetricEncrypt",
        "kms:AsymmetricDecrypt",
        "kms:DescribeKey",
        "kms:DescribeKeyVersion",
        "kms:ListKeyVersions",
        "kms:ListAliasesByKeyId",
        "kms:TagResource",
    ];

    fn policy(statements: Value) -> String {
        serde_json::json!({"Version": "1", "Statement": statements}).to_string()
    }

    #[test]
    fn default_policy_lets_the_account_do_everything() {
        let p = KeyPolicy::parse(&default_policy("123")).unwrap();
        assert_eq!(
            p.evaluate("acs:ram::123:root", "kms:Encrypt"),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("acs:ram::123:user/alice", "kms:ScheduleKeyDeletion"),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("acs:ram::999:root", "kms:Encrypt"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn seed_administrator_and_user_sets() {
        let text = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"RAM": ["acs:ram::123:user/admin"]}, "Action": ADMIN, "Resource": ["*"]},
            {"Effect": "Allow", "Principal": {"RAM": ["acs:ram::123:user/app"]}, "Action": USER, "Resource": ["*"]},
        ]));
        let p = KeyPolicy::parse(&text).unwrap();
        let admin = "acs:ram::123:user/admin";
        let user = "acs:ram::123:user/app";
        for allowed in [
            "kms:ListAliasesByKeyId",
            "kms:DescribeKey",
            "kms:CreateAlias",
            "kms:EnableKey",
            "kms:DisableKey",
            "kms:GetKeyPolicy",
            "kms:SetDeletionProtection",
            "kms:UpdateKeyDescription",
            "kms:DeleteAlias",
            "kms:CancelKeyDeletion",
            "kms:TagResource",
            "kms:ScheduleKeyDeletion",
        ] {
            assert_eq!(p.evaluate(admin, allowed), Decision::Allow, "{allowed}");
        }
        for refused in ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"] {
            assert_eq!(
                p.evaluate(admin, refused),
                Decision::ImplicitDeny,
                "{refused}"
            );
        }
        for allowed in [
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "kms:DescribeKey",
            "kms:TagResource",
        ] {
            assert_eq!(p.evaluate(user, allowed), Decision::Allow, "{allowed}");
        }
        for refused in [
            "kms:ScheduleKeyDeletion",
            "kms:DisableKey",
            "kms:SetKeyPolicy",
            "kms:UntagResource",
        ] {
            assert_eq!(
                p.evaluate(user, refused),
                Decision::ImplicitDeny,
                "{refused}"
            );
        }
    }

    #[test]
    fn deny_wins_and_conditions_fail_closed() {
        let text = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"RAM": ["acs:ram::123:*"]}, "Action": ["kms:*"], "Resource": ["*"]},
            {"Effect": "Deny", "Principal": {"RAM": ["acs:ram::123:user/bob"]}, "Action": ["kms:Decrypt"], "Resource": "*"},
            {"Effect": "Allow", "Principal": {"RAM": "acs:ram::456:root"}, "Action": "kms:Encrypt", "Resource": ["*"],
             "Condition": {"StringEquals": {"acs:SourceVpc": "vpc-1"}}},
        ]));
        let p = KeyPolicy::parse(&text).unwrap();
        assert_eq!(
            p.evaluate("acs:ram::123:user/bob", "kms:Decrypt"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            p.evaluate("acs:ram::123:user/bob", "kms:encrypt"),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("acs:ram::456:root", "kms:Encrypt"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn validation_rules() {
        let statement = |extra: Value| {
            let mut s = serde_json::json!({"Effect": "Allow", "Principal": {"RAM": ["acs:ram::1:*"]}, "Action": ["kms:*"], "Resource": ["*"]});
            for (k, v) in extra.as_object().unwrap() {
                s[k] = v.clone();
            }
            policy(serde_json::json!([s]))
        };
        assert!(KeyPolicy::parse(&statement(serde_json::json!({}))).is_ok());
        for (extra, reason) in [
            (serde_json::json!({"Effect": "Maybe"}), "Effect"),
            (serde_json::json!({"Action": ["ecs:Describe"]}), "kms:"),
            (serde_json::json!({"Resource": ["acs:kms:*"]}), "Resource"),
            (
                serde_json::json!({"Principal": {"RAM": ["bob"]}}),
                "acs:ram",
            ),
            (
                serde_json::json!({"Principal": {"Service": ["x"]}}),
                "unknown field",
            ),
            (serde_json::json!({"Sid": "bad#sid"}), "Sid"),
            (serde_json::json!({"Bogus": 1}), "unknown field"),
            (serde_json::json!({"Condition": "x"}), "Condition"),
        ] {
            let error = KeyPolicy::parse(&statement(extra.clone())).unwrap_err();
            assert!(error.contains(reason), "{extra}: {error}");
        }
        assert!(
            KeyPolicy::parse(r#"{"Version":"2","Statement":[]}"#)
                .unwrap_err()
                .contains("Version")
        );
        assert!(KeyPolicy::parse(r#"{"Version":"1","Statement":[]}"#).is_err());
        assert!(KeyPolicy::parse("[]").is_err());
        let huge = format!(
            "{{\"Version\":\"1\",\"Pad\":\"{}\"}}",
            "x".repeat(MAX_POLICY_BYTES)
        );
        assert!(KeyPolicy::parse(&huge).unwrap_err().contains("32768"));
    }

    #[test]
    fn identity_policies() {
        let doc = |statements: Value| {
            serde_json::json!({"Version": "1", "Statement": statements}).to_string()
        };
        let crypto_only = IdentityPolicy::parse(&doc(serde_json::json!([
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
             "Resource": ["acs:kms:cn-hangzhou:123:key/*"]},
            {"Effect": "Deny", "Action": ["kms:Decrypt"], "Resource": "acs:kms:cn-hangzhou:123:key/key-secret"},
        ])))
        .unwrap();
        let key = "acs:kms:cn-hangzhou:123:key/key-a";
        assert_eq!(crypto_only.evaluate("kms:Encrypt", key), Decision::Allow);
        assert_eq!(
            crypto_only.evaluate("kms:GenerateDataKeyWithoutPlaintext", key),
            Decision::Allow
        );
        assert_eq!(
            crypto_only.evaluate("kms:Encrypt", "acs:kms:cn-shanghai:123:key/key-a"),
            Decision::ImplicitDeny
        );
        assert_eq!(
            crypto_only.evaluate("kms:DisableKey", key),
            Decision::ImplicitDeny
        );
        assert_eq!(
            crypto_only.evaluate("kms:Decrypt", "acs:kms:cn-hangzhou:123:key/key-secret"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            crypto_only.evaluate(
                "kms:DisconnectKmsInstance",
                "acs:kms:cn-hangzhou:123:keystore/kst-x"
            ),
            Decision::ImplicitDeny
        );
        for (statement, reason) in [
            (
                serde_json::json!({"Effect": "Allow", "Principal": {"RAM": ["*"]}, "Action": "kms:*", "Resource": "*"}),
                "Principal",
            ),
            (
                serde_json::json!({"Effect": "Allow", "Action": "kms:*", "Resource": "acs:ecs:*"}),
                "acs:kms:",
            ),
            (
                serde_json::json!({"Effect": "Allow", "Action": "kms:*"}),
                "Resource",
            ),
        ] {
            let error = IdentityPolicy::parse(&doc(serde_json::json!([statement]))).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn identities_and_their_combination_with_key_policies() {
        let instance = "acs:kms:cn-hangzhou:123:keystore/kst-x";
        assert_eq!(
            Identity::Root.evaluate("kms:DisconnectKmsInstance", instance),
            Decision::Allow
        );
        assert_eq!(
            Identity::Member.evaluate("kms:disconnectkmsinstance", instance),
            Decision::ImplicitDeny
        );
        assert_eq!(
            Identity::Member.evaluate("kms:GetKmsInstance", instance),
            Decision::Allow
        );
        use Decision::{Allow, ExplicitDeny, ImplicitDeny};
        assert_eq!(combine(Allow, None), Allow);
        assert_eq!(combine(Allow, Some(Allow)), Allow);
        assert_eq!(combine(Allow, Some(ImplicitDeny)), ImplicitDeny);
        assert_eq!(combine(ImplicitDeny, Some(Allow)), ImplicitDeny);
        assert_eq!(combine(Allow, Some(ExplicitDeny)), ExplicitDeny);
        assert_eq!(combine(ExplicitDeny, Some(Allow)), ExplicitDeny);
        assert_eq!(combine(ImplicitDeny, Some(ExplicitDeny)), ExplicitDeny);
    }

    #[test]
    fn globs() {
        assert!(glob("kms:*", "kms:Encrypt", true));
        assert!(glob("kms:List*", "kms:ListAliases", true));
        assert!(!glob("kms:List*", "kms:DescribeKey", true));
        assert!(glob("acs:ram::1:*", "acs:ram::1:user/a", false));
        assert!(!glob("acs:ram::1:*", "acs:ram::12:user/a", false));
        assert!(glob("a*b*c", "aXbYbZc", false));
        assert!(!glob("a*b", "aXbY", false));
        assert!(glob("*", "", false));
    }
}
