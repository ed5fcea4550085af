//! Secondary authorization: allow/deny rules on what `requestMetadata` says about the caller.
//!
//! Deny rules win; when a store has allow rules, a request must match one of them; a store with
//! no rules trusts KMS (the spec's default). Health is never evaluated here (spec §1.9).

use schemas::xki::{ExternalKeyId, RequestMetadata};
use serde::Deserialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let matching requests through.
    Allow,
    /// Refuse matching requests with `AccessDeniedException`.
    Deny,
}

/// One rule. Every condition given must match (AND); within a condition any pattern may match
/// (OR). Patterns are globs: `*` any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rule name, logged when it denies.
    pub id: String,
    /// What a match does.
    pub effect: Effect,
    /// `awsPrincipalArn` patterns.
    #[serde(default)]
    pub principals: Vec<String>,
    /// `kmsOperation` patterns (e.g. `Encrypt`, `GenerateDataKey*`).
    #[serde(default)]
    pub operations: Vec<String>,
    /// `kmsViaService` patterns.
    #[serde(default)]
    pub via_services: Vec<String>,
    /// `awsSourceVpc` patterns.
    #[serde(default)]
    pub source_vpcs: Vec<String>,
    /// `awsSourceVpce` patterns.
    #[serde(default)]
    pub source_vpces: Vec<String>,
    /// External key id patterns.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The deny rule that matched, or `None` when no allow rule matched.
    pub rule_id: Option<String>,
}

impl Rule {
    fn matches(&self, meta: &RequestMetadata, key: &ExternalKeyId) -> bool {
        cond(&self.principals, meta.aws_principal_arn.as_deref())
            && cond(&self.operations, meta.kms_operation.as_deref())
            && cond(&self.via_services, meta.kms_via_service.as_deref())
            && cond(&self.source_vpcs, meta.aws_source_vpc.as_deref())
            && cond(&self.source_vpces, meta.aws_source_vpce.as_deref())
            && cond(&self.keys, Some(key.as_str()))
    }
}

/// An empty condition matches everything; a non-empty one needs a present, matching value.
fn cond(patterns: &[String], value: Option<&str>) -> bool {
    patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
}

/// Evaluates `rules` for a key operation.
pub fn evaluate(rules: &[Rule], meta: &RequestMetadata, key: &ExternalKeyId) -> Result<(), Denial> {
    if let Some(rule) = rules
        .iter()
        .find(|r| r.effect == Effect::Deny && r.matches(meta, key))
    {
        return Err(Denial {
            rule_id: Some(rule.id.clone()),
        });
    }
    let mut allows = rules
        .iter()
        .filter(|r| r.effect == Effect::Allow)
        .peekable();
    if allows.peek().is_none() || allows.any(|r| r.matches(meta, key)) {
        Ok(())
    } else {
        Err(Denial { rule_id: None })
    }
}

/// Glob match with `*` and `?`, linear time (greedy with backtracking to the last star).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(principal: &str, op: &str) -> RequestMetadata {
        RequestMetadata {
            aws_principal_arn: Some(principal.into()),
            kms_operation: Some(op.into()),
            ..Default::default()
        }
    }

    fn rule(id: &str, effect: Effect) -> Rule {
        Rule {
            id: id.into(),
            effect,
            principals: vec![],
            operations: vec![],
            via_services: vec![],
            source_vpcs: vec![],
            source_vpces: vec![],
            keys: vec![],
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob(
            "arn:aws:iam::*:role/app-?",
            "arn:aws:iam::123:role/app-1"
        ));
        assert!(!glob(
            "arn:aws:iam::*:role/app-?",
            "arn:aws:iam::123:role/app-12"
        ));
        assert!(glob("GenerateDataKey*", "GenerateDataKeyWithoutPlaintext"));
        assert!(glob("a*b*c", "aXXbYYbZc"));
        assert!(!glob("a*b*c", "aXXbYYbZ"));
        assert!(glob("exact", "exact") && !glob("exact", "exact!"));
    }

    #[test]
    fn no_rules_trusts_kms() {
        let key = ExternalKeyId::parse("k1").unwrap();
        assert!(evaluate(&[], &meta("anyone", "Encrypt"), &key).is_ok());
    }

    #[test]
    fn deny_wins_and_allow_lists_restrict() {
        let key = ExternalKeyId::parse("k1").unwrap();
        let mut allow = rule("allow-app", Effect::Allow);
        allow.principals = vec!["arn:aws:iam::111:role/*".into()];
        let mut deny = rule("no-reencrypt", Effect::Deny);
        deny.operations = vec!["ReEncrypt*".into()];
        let rules = vec![allow, deny];
        assert!(evaluate(&rules, &meta("arn:aws:iam::111:role/app", "Encrypt"), &key).is_ok());
        assert_eq!(
            evaluate(
                &rules,
                &meta("arn:aws:iam::111:role/app", "ReEncryptFrom"),
                &key
            ),
            Err(Denial {
                rule_id: Some("no-reencrypt".into())
            })
        );
        assert_eq!(
            evaluate(&rules, &meta("arn:aws:iam::222:role/app", "Encrypt"), &key),
            Err(Denial { rule_id: None })
        );
    }

    #[test]
    fn absent_field_does_not_match_a_condition() {
        let key = ExternalKeyId::parse("k1").unwrap();
        let mut vpc_only = rule("vpc", Effect::Allow);
        vpc_only.source_vpcs = vec!["vpc-1*".into()];
        assert!(evaluate(&[vpc_only.clone()], &meta("p", "Encrypt"), &key).is_err());
        let mut m = meta("p", "Encrypt");
        m.aws_source_vpc = Some("vpc-123".into());
        assert!(evaluate(&[vpc_only], &m, &key).is_ok());
        let mut per_key = rule("k", Effect::Deny);
        per_key.keys = vec!["k?".into()];
        assert!(evaluate(&[per_key], &meta("p", "Encrypt"), &key).is_err());
    }
}
