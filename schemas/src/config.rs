//! Configuration pieces shared by every binary of the stack:
//! - layering: one TOML file, every key overridable by an environment variable
//!   `<PREFIX>__<SECTION>__<KEY>` (double underscores between levels, case-insensitive names);
//!   pure, the caller passes the variables in;
//! - [`SecretRef`]: a secret given by reference (a file or an environment variable, never
//!   inline). Its [`SecretRef::resolve`] is this crate's one piece of I/O, kept here so that the
//!   three services read secrets the same way.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::http::Secret;

/// A secret by reference: exactly one of `file` (a trailing newline is ignored) and `env`.
/// Inline secrets are refused on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// File holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// A secret that cannot be read. The message names the file or variable, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

impl SecretRef {
    /// Reads the secret.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match (&self.file, &self.env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| SecretError(format!("{}: {e}", path.display()))),
            (None, Some(var)) => std::env::var(var)
                .map(Secret::new)
                .map_err(|_| SecretError(format!("environment variable {var} is not set"))),
            _ => Err(SecretError("give exactly one of file or env".into())),
        }
    }

    /// The same reference with a relative `file` resolved against `base`.
    pub fn relative_to(&self, base: &std::path::Path) -> Self {
        Self {
            file: self.file.as_ref().map(|f| {
                if f.is_relative() {
                    base.join(f)
                } else {
                    f.clone()
                }
            }),
            env: self.env.clone(),
        }
    }
}

/// Applies `vars` whose name starts with `prefix` + `__` onto `root`. A value that parses as a TOML
/// scalar or array (`8443`, `true`, `["a","b"]`) keeps that type; anything else is a string.
/// Returns the names of the variables applied, for `check-config` output.
pub fn overlay_env(
    root: &mut Value,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, OverlayError> {
    let marker = format!("{}__", prefix.to_ascii_uppercase());
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.to_ascii_uppercase().starts_with(&marker))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[marker.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(OverlayError::BadName(name));
        }
        set_path(root, &path, parse_scalar(&raw))
            .map_err(|()| OverlayError::NotATable(name.clone()))?;
        applied.push(name);
    }
    Ok(applied)
}

fn parse_scalar(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(node: &mut Value, path: &[String], value: Value) -> Result<(), ()> {
    let Value::Table(table) = node else {
        return Err(());
    };
    match path {
        [] => Err(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = table
                .entry(first.clone())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            set_path(child, rest, value)
        }
    }
}

/// An environment variable that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// Empty path segment (`PREFIX__A____B`).
    #[error("environment variable {0}: empty name segment")]
    BadName(String),
    /// The path runs through a key that is not a table.
    #[error("environment variable {0}: a parent key is not a table")]
    NotATable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs() {
        let dir = std::env::temp_dir().join(format!("schemas-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "hunter2\n").unwrap();
        let by_file = SecretRef {
            file: Some("s".into()),
            env: None,
        }
        .relative_to(&dir);
        assert_eq!(by_file.resolve().unwrap().expose(), "hunter2");
        let missing = SecretRef {
            file: None,
            env: Some("SCHEMAS_TEST_NO_SUCH_VAR".into()),
        };
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .0
                .contains("SCHEMAS_TEST_NO_SUCH_VAR")
        );
        let both = SecretRef {
            file: Some("s".into()),
            env: Some("X".into()),
        };
        assert!(both.resolve().is_err());
        assert!(toml::from_str::<SecretRef>("value = 'inline'").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overrides_and_types() {
        let mut root: Value = toml::from_str("[server]\nport = 1\nhost = 'a'\n").unwrap();
        let applied = overlay_env(
            &mut root,
            "xki_proxy",
            [
                ("XKI_PROXY__SERVER__PORT".to_owned(), "8443".to_owned()),
                (
                    "XKI_PROXY__SERVER__NAME".to_owned(),
                    "plain text".to_owned(),
                ),
                ("XKI_PROXY__LIMITS__ENABLED".to_owned(), "true".to_owned()),
                ("XKI_PROXY__LIST".to_owned(), "[\"a\", \"b\"]".to_owned()),
                ("OTHER__SERVER__PORT".to_owned(), "1".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(applied.len(), 4);
        assert_eq!(root["server"]["port"].as_integer(), Some(8443));
        assert_eq!(root["server"]["host"].as_str(), Some("a"));
        assert_eq!(root["server"]["name"].as_str(), Some("plain text"));
        assert_eq!(root["limits"]["enabled"].as_bool(), Some(true));
        assert_eq!(root["list"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn errors() {
        let mut root: Value = toml::from_str("port = 1").unwrap();
        let bad = [("P__PORT__X".to_owned(), "1".to_owned())];
        assert!(matches!(
            overlay_env(&mut root, "p", bad),
            Err(OverlayError::NotATable(_))
        ));
        let empty = [("P__A____B".to_owned(), "1".to_owned())];
        assert!(matches!(
            overlay_env(&mut root, "p", empty),
            Err(OverlayError::BadName(_))
        ));
    }
}
