//! Configuration layering shared by every binary of the stack: one TOML file, every key
//! overridable by an environment variable `<PREFIX>__<SECTION>__<KEY>` (double underscores
//! between levels, case-insensitive names). Pure: the caller passes the variables in.

use toml::Value;

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
