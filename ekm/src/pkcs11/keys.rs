//! Key metadata, kept in the HSM itself.
//!
//! **Why in the HSM.** EKM replicas share one HSM (cluster) and nothing else; the architecture
//! makes the HSM the durable state. Keeping each key's record next to its material means every
//! replica, and the `ekm` admin CLI, see the same keys and states with no database to run, back
//! up or keep consistent with the token, and a token backup carries its metadata along.
//!
//! **Layout.** Per managed key:
//! - one `CKO_DATA` object, `CKA_TOKEN`, `CKA_PRIVATE` (readable only after login),
//!   `CKA_APPLICATION = "ekm-key-record"`, `CKA_LABEL = "ekm:key:<id>"`, whose `CKA_VALUE` is a
//!   small JSON [`KeyRecord`]: id, usage, state, deletion time, versions, creation time, origin,
//!   description and a revision counter;
//! - one AES-256 secret key object per version, `CKA_LABEL = "ekm:<id>:v<n>:<random>"` (the
//!   random suffix keeps a half-finished create from colliding with a retry), generated with
//!   `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, `!CKA_EXTRACTABLE`, `!CKA_MODIFIABLE`, and
//!   `CKA_ENCRYPT` / `CKA_DECRYPT` from the key usage, so the HSM enforces the usage as well.
//!   Adopted keys keep their own label, recorded as version 1.
//!
//! **Updates** are compare-and-set ([`store`]): a writer that read revision `n` writes a new
//! record object with revision `n + 1`, then lists the key's record objects again. If another
//! object has a revision `>= n + 1`, another writer (a replica, the admin CLI) got there at the
//! same time: the writer destroys its own object and reports [`Stored::Conflict`], and the
//! manager re-reads and re-applies the change. Otherwise it destroys the older objects. Two
//! writers cannot both win: each lists after its own create, so at least one sees the other's
//! object, and a writer only ever destroys its own object or older revisions. No change is
//! lost, including a rotation's new version. (`C_SetAttributeValue` on `CKA_VALUE` of a data
//! object is not allowed by every token, a new object is.) A crash between the create and the
//! destroys leaves two records; readers take the highest revision and the next write removes
//! the rest.

use std::collections::HashMap;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand::RngCore as _;
use schemas::xki::ExternalKeyId;

use crate::error::{Error, Result};
use crate::hsm::aes::{AesUsage, generate_aes_key};
use crate::hsm::hsm_error;
pub use crate::hsm::token::{searching, writing};
use crate::manager::KeyUsage;
pub use crate::record::{KeyRecord, KeyVersion, StoredState};

/// `CKA_APPLICATION` of record objects.
const RECORD_APPLICATION: &[u8] = b"ekm-key-record";
/// Label of the deep-health probe key (never listed as a managed key).
pub const PROBE_LABEL: &str = "ekm-health-probe";
/// Labels the EKM makes for itself; refused for adoption.
const OWN_PREFIX: &str = "ekm:";

fn record_label(id: &ExternalKeyId) -> Vec<u8> {
    format!("{OWN_PREFIX}key:{id}").into_bytes()
}

/// A fresh label for version `version` of `id`.
pub fn version_label(id: &ExternalKeyId, version: u32) -> String {
    let mut suffix = [0u8; 4];
    rand::rng().fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{OWN_PREFIX}{id}:v{version}:{suffix}")
}

/// Whether a label may be adopted (not one the EKM manages itself).
pub fn adoptable_label(label: &str) -> bool {
    !label.is_empty() && !label.starts_with(OWN_PREFIX) && label != PROBE_LABEL
}

/// Generates a managed AES-256 key object with the token-enforced `usage`.
pub fn generate_key(session: &Session, label: &str, usage: KeyUsage) -> Result<ObjectHandle> {
    let usage = AesUsage {
        encrypt: usage.encrypt,
        decrypt: usage.decrypt,
    };
    generate_aes_key(session, label, 32, usage)
}

fn record_objects(session: &Session, label: Option<&[u8]>) -> Result<Vec<ObjectHandle>> {
    let mut template = vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(RECORD_APPLICATION.to_vec()),
    ];
    if let Some(label) = label {
        template.push(Attribute::Label(label.to_vec()));
    }
    session.find_objects(&template).map_err(hsm_error)
}

fn read_record(session: &Session, object: ObjectHandle) -> Result<KeyRecord> {
    let attrs = session
        .get_attributes(object, &[AttributeType::Value])
        .map_err(hsm_error)?;
    let Some(Attribute::Value(bytes)) = attrs.into_iter().next() else {
        return Err(Error::Internal("key record without a value".into()));
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("unreadable key record: {e}")))
}

/// Reads the newest record of `id`, if any.
pub fn load(session: &Session, id: &ExternalKeyId) -> Result<Option<KeyRecord>> {
    let _shared = searching();
    let mut best: Option<KeyRecord> = None;
    for object in record_objects(session, Some(&record_label(id)))? {
        let record = read_record(session, object)?;
        if best.as_ref().is_none_or(|b| record.revision > b.revision) {
            best = Some(record);
        }
    }
    Ok(best)
}

/// Reads every record (newest revision per id), sorted by id.
pub fn load_all(session: &Session) -> Result<Vec<KeyRecord>> {
    let _shared = searching();
    let mut newest: HashMap<ExternalKeyId, KeyRecord> = HashMap::new();
    for object in record_objects(session, None)? {
        let record = read_record(session, object)?;
        match newest.get(&record.id) {
            Some(have) if have.revision >= record.revision => {}
            _ => {
                newest.insert(record.id.clone(), record);
            }
        }
    }
    let mut all: Vec<_> = newest.into_values().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stored {
    /// The record is written and older revisions are gone.
    Done,
    /// Another writer stored this revision (or a later one) first; nothing was written.
    Conflict,
}

/// Writes `record` as a new object unless another writer stored its revision first (see the
/// module doc), then destroys the older revisions.
pub fn store(session: &Session, record: &KeyRecord) -> Result<Stored> {
    let _exclusive = writing();
    let label = record_label(&record.id);
    let value =
        serde_json::to_vec(record).map_err(|e| Error::Internal(format!("key record: {e}")))?;
    let ours = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(false),
            Attribute::Application(RECORD_APPLICATION.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Value(value),
        ])
        .map_err(hsm_error)?;
    let mut older = Vec::new();
    for object in record_objects(session, Some(&label))? {
        if object == ours {
            continue;
        }
        match read_record(session, object) {
            Ok(other) if other.revision >= record.revision => {
                destroy_if_present(session, ours)?;
                return Ok(Stored::Conflict);
            }
            Ok(_) => older.push(object),
            Err(_) if !exists(session, object) => {} // destroyed by its writer meanwhile
            Err(e) => return Err(e),
        }
    }
    for object in older {
        destroy_if_present(session, object)?;
    }
    Ok(Stored::Done)
}

/// Destroys `object`; one that another writer destroyed first is fine.
pub fn destroy_if_present(session: &Session, object: ObjectHandle) -> Result<()> {
    match session.destroy_object(object) {
        Ok(()) => Ok(()),
        Err(_) if !exists(session, object) => Ok(()),
        Err(e) => Err(hsm_error(e)),
    }
}

fn exists(session: &Session, object: ObjectHandle) -> bool {
    session
        .get_attributes(object, &[AttributeType::Class])
        .is_ok()
}

/// Destroys every record object of `id`.
pub fn remove(session: &Session, id: &ExternalKeyId) -> Result<()> {
    let _exclusive = writing();
    for object in record_objects(session, Some(&record_label(id)))? {
        destroy_if_present(session, object)?;
    }
    Ok(())
}

/// Checks that an HSM object may be adopted: an AES-256 private token key that can never leave
/// the token (sensitive, non-extractable). A key that was imported or once extractable
/// (`CKA_ALWAYS_SENSITIVE` or `CKA_NEVER_EXTRACTABLE` false, e.g. material a company brought
/// into its HSM on purpose) is adopted with a warning in the log.
pub fn check_adoptable(session: &Session, object: ObjectHandle) -> Result<()> {
    let attrs = session
        .get_attributes(
            object,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(hsm_error)?;
    let mut aes = false;
    let mut len = 0u64;
    let (mut token, mut private, mut sensitive, mut extractable) = (false, false, false, true);
    let (mut always_sensitive, mut never_extractable) = (false, false);
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => aes = t == KeyType::AES,
            Attribute::ValueLen(l) => len = l.into(),
            Attribute::Token(b) => token = b,
            Attribute::Private(b) => private = b,
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Extractable(b) => extractable = b,
            Attribute::AlwaysSensitive(b) => always_sensitive = b,
            Attribute::NeverExtractable(b) => never_extractable = b,
            _ => {}
        }
    }
    if !aes || len != 32 {
        return Err(Error::Validation(
            "only AES-256 secret keys can be adopted".into(),
        ));
    }
    if !token || !private || !sensitive || extractable {
        return Err(Error::Validation(
            "refusing to adopt a key that is not a private, sensitive, non-extractable token \
             object"
                .into(),
        ));
    }
    if !always_sensitive || !never_extractable {
        tracing::warn!(
            always_sensitive,
            never_extractable,
            "adopting a key that was imported or once extractable: copies of its value may \
             exist outside the HSM"
        );
    }
    Ok(())
}

/// What adoption sets on the key: the requested usage, and nothing else it could be used for
/// (no wrapping, unwrapping, derivation or MACs).
pub fn adopted_attributes(usage: KeyUsage) -> Vec<Attribute> {
    vec![
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let id = ExternalKeyId::parse("k1").unwrap();
        let a = version_label(&id, 2);
        assert!(a.starts_with("ekm:k1:v2:"));
        assert_ne!(a, version_label(&id, 2));
        assert!(!adoptable_label(&a));
        assert!(!adoptable_label(PROBE_LABEL));
        assert!(adoptable_label("legacy-key"));
    }
}
