//! Root key rotation: every sealed software key row is re-sealed under the current root key,
//! keeping its data key, so no ciphertext changes. Rows are walked by version id and each is
//! replaced by compare-and-set, so an interrupted run is resumed by running it again (rows
//! already current are skipped) and two runs at once do no harm.

use std::collections::BTreeMap;

use crate::backend::software::{Resealed, SoftwareBackend, sealed_root_key_id};
use crate::ids::{KeyId, KeyVersionId};
use crate::store::{Store, StoreError};

/// Rows read per store call.
const PAGE: u32 = 200;

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Rows re-sealed under the current root key.
    pub resealed: u64,
    /// Rows that were current already.
    pub current: u64,
    /// Rows no configured root key unseals (version ids): the rotation is not complete.
    pub failed: Vec<String>,
    /// Whether `limit` stopped the run before every row was seen.
    pub stopped_early: bool,
}

/// Re-seals every row not sealed under the current root key; at most `limit` re-seals when
/// given (then run it again to continue).
pub async fn rotate(
    store: &Store,
    backend: &SoftwareBackend,
    limit: Option<u64>,
) -> Result<RotationReport, StoreError> {
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = store.sealed_versions_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(report);
        };
        after = Some(last.key_version_id.clone());
        for version in page {
            if limit.is_some_and(|l| report.resealed >= l) {
                report.stopped_early = true;
                return Ok(report);
            }
            let Some(sealed) = version.sealed_material else {
                continue;
            };
            let ids = KeyId::parse(&version.key_id)
                .ok()
                .zip(KeyVersionId::parse(&version.key_version_id).ok());
            let Some((key_id, version_id)) = ids else {
                report.failed.push(version.key_version_id);
                continue;
            };
            match backend.reseal(&key_id, &version_id, &sealed) {
                Ok(Resealed::Current) => report.current += 1,
                Ok(Resealed::Sealed(new)) => {
                    if store
                        .replace_sealed_material(&version.key_version_id, sealed, new)
                        .await?
                    {
                        report.resealed += 1;
                    } else {
                        // Changed meanwhile (another run): it is current now or will be.
                        report.current += 1;
                    }
                }
                Err(_) => report.failed.push(version.key_version_id),
            }
        }
    }
}

/// How many sealed rows each root key id seals.
pub async fn census(store: &Store) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.sealed_versions_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(counts);
        };
        after = Some(last.key_version_id.clone());
        for version in page {
            let id = version
                .sealed_material
                .as_deref()
                .and_then(sealed_root_key_id)
                .unwrap_or_else(|| "unknown".to_owned());
            *counts.entry(id).or_default() += 1;
        }
    }
}
