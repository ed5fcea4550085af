//! Parameter access for handlers: required / optional values (an empty value counts as absent,
//! as on Alibaba's gateway), booleans, integers in a range, paging, and the flattened RPC lists
//! of the newer APIs (`ResourceId.1`, `Tag.1.Key`, `Tag.1.Value`, `TagKey.1`).

use std::collections::BTreeMap;

use super::error::ApiError;
use crate::store::Page;

/// The decoded query and form parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl From<BTreeMap<String, String>> for Params {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl Params {
    /// The value, when present and not empty.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value as sent, even when empty (e.g. `Description=` clears a description).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value, or `MissingParameter`.
    pub fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.optional(name).ok_or(ApiError::Missing(name))
    }

    /// `true` / `false` (any case).
    pub fn bool(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_because(name, "expected true or false")),
        }
    }

    /// `DryRun`, default false.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        Ok(self.bool("DryRun")?.unwrap_or(false))
    }

    /// An integer in `min..=max`.
    pub fn int(&self, name: &'static str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.optional(name) else {
            return Ok(None);
        };
        match text.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid_because(
                name,
                format!("expected an integer from {min} to {max}"),
            )),
        }
    }

    /// `PageNumber` (≥ 1, default 1) and `PageSize` (1–100, default 10).
    pub fn page(&self) -> Result<Page, ApiError> {
        let number = self.int("PageNumber", 1, i64::from(u32::MAX))?.unwrap_or(1);
        let size = self
            .int("PageSize", 1, i64::from(Page::MAX_SIZE))?
            .unwrap_or(10);
        let number = u32::try_from(number).map_err(|_| ApiError::invalid("PageNumber"))?;
        let size = u32::try_from(size).map_err(|_| ApiError::invalid("PageSize"))?;
        Ok(Page::new(number, size)?)
    }

    /// `<prefix>.1`, `<prefix>.2`, … in index order (gaps allowed, as the SDKs never make them).
    /// A non-numeric index is `InvalidParameter`.
    pub fn list(&self, prefix: &'static str) -> Result<Vec<&str>, ApiError> {
        let mut items = Vec::new();
        for (name, value) in &self.0 {
            let Some(index) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let index: u32 = index.parse().map_err(|_| ApiError::invalid(prefix))?;
            items.push((index, value.as_str()));
        }
        items.sort_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs in index order (a missing value is empty).
    pub fn tag_list(&self) -> Result<Vec<(&str, &str)>, ApiError> {
        let mut tags: BTreeMap<u32, (Option<&str>, &str)> = BTreeMap::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix("Tag.") else {
                continue;
            };
            let (index, field) = rest
                .split_once('.')
                .ok_or_else(|| ApiError::invalid("Tag"))?;
            let index: u32 = index.parse().map_err(|_| ApiError::invalid("Tag"))?;
            let entry = tags.entry(index).or_insert((None, ""));
            match field {
                "Key" => entry.0 = Some(value.as_str()),
                "Value" => entry.1 = value.as_str(),
                _ => return Err(ApiError::invalid("Tag")),
            }
        }
        tags.into_values()
            .map(|(key, value)| {
                key.filter(|k| !k.is_empty())
                    .map(|k| (k, value))
                    .ok_or(ApiError::Missing("Tag.N.Key"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn values_and_types() {
        let p = params(&[
            ("A", "x"),
            ("Empty", ""),
            ("B", "TRUE"),
            ("N", "7"),
            ("Bad", "yes"),
        ]);
        assert_eq!(p.required("A").unwrap(), "x");
        assert!(matches!(
            p.required("Empty"),
            Err(ApiError::Missing("Empty"))
        ));
        assert_eq!(p.raw("Empty"), Some(""));
        assert_eq!(p.bool("B").unwrap(), Some(true));
        assert!(p.bool("Bad").is_err());
        assert_eq!(p.int("N", 1, 10).unwrap(), Some(7));
        assert!(p.int("N", 8, 10).is_err());
        assert_eq!(p.int("Missing", 1, 2).unwrap(), None);
        assert!(!p.dry_run().unwrap());
    }

    #[test]
    fn paging() {
        assert_eq!(params(&[]).page().unwrap(), Page::default());
        let page = params(&[("PageNumber", "3"), ("PageSize", "100")])
            .page()
            .unwrap();
        assert_eq!((page.number(), page.size()), (3, 100));
        for bad in [("PageNumber", "0"), ("PageSize", "101"), ("PageSize", "x")] {
            assert!(params(&[bad]).page().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flattened_lists() {
        let p = params(&[
            ("ResourceId.2", "b"),
            ("ResourceId.10", "c"),
            ("ResourceId.1", "a"),
            ("Tag.1.Key", "k1"),
            ("Tag.1.Value", "v1"),
            ("Tag.2.Key", "k2"),
        ]);
        assert_eq!(p.list("ResourceId").unwrap(), ["a", "b", "c"]);
        assert_eq!(p.tag_list().unwrap(), [("k1", "v1"), ("k2", "")]);
        assert!(params(&[("Tag.1.Value", "v")]).tag_list().is_err());
        assert!(params(&[("ResourceId.x", "v")]).list("ResourceId").is_err());
    }
}
