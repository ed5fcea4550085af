//! Records the store reads and writes. Public records carry typed values; the `*Row` structs are
//! their column-for-column images for diesel (enumerations as text).

use diesel::prelude::*;
use schemas::kms::{KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel};

use super::error::StoreError;
use super::schema::{aliases, audit_events, instances, key_versions, keys, tags};
use super::types::{
    AutomaticRotation, ConnectionState, InstanceKind, UnixMillis, parse_key_state, parse_stored,
};

/// The policy name the OpenAPI knows (`PolicyName` accepts only `default`).
pub const DEFAULT_POLICY_NAME: &str = "default";

/// A KMS instance to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// `kst-…`.
    pub instance_id: String,
    /// Software, hardware or external.
    pub kind: InstanceKind,
    /// Display name.
    pub name: String,
    /// Non-secret settings as JSON (for external instances: endpoint, path prefix, access key id,
    /// a *reference* to the secret (env var name or file path), CA file or certificate SHA-256
    /// fingerprint, `public`/`private-link`, client certificate paths). The store does not parse
    /// it; never put a secret in it.
    pub spec: String,
    /// Initial connection state (software instances start `Connected`, external ones
    /// `Uninitialized`: the caller decides).
    pub connection_state: ConnectionState,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// A stored KMS instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `kst-…`.
    pub instance_id: String,
    /// Software, hardware or external.
    pub kind: InstanceKind,
    /// Display name.
    pub name: String,
    /// Non-secret settings as JSON (see [`NewInstance::spec`]).
    pub spec: String,
    /// Last known connection state.
    pub connection_state: ConnectionState,
    /// Why the last connection failed (set with `ConnectionState::Error`).
    pub connection_error_code: Option<String>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change of spec or connection state.
    pub updated_at: UnixMillis,
}

/// A key to create (its first version is passed beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// `key-…`.
    pub key_id: String,
    /// Owner account (UID).
    pub account_id: String,
    /// Region, e.g. `cn-hangzhou`.
    pub region: String,
    /// The `DKMSInstanceId` the key lives in; must exist.
    pub instance_id: String,
    /// `KeySpec`, e.g. `Aliyun_AES_256` (validated by the API layer).
    pub key_spec: KeySpec,
    /// `KeyUsage`, e.g. `ENCRYPT/DECRYPT`.
    pub key_usage: KeyUsage,
    /// `Origin`.
    pub origin: Origin,
    /// `ProtectionLevel`.
    pub protection_level: ProtectionLevel,
    /// Initial state: `Enabled`, or `PendingImport` for `Origin=EXTERNAL`.
    pub key_state: KeyState,
    /// `Description` (may be empty).
    pub description: String,
    /// `Creator` (account UID or principal).
    pub creator: String,
    /// `CreationDate`.
    pub created_at: UnixMillis,
    /// External instances: the external key id at the proxy (several keys may share one).
    pub external_key_id: Option<String>,
    /// `AutomaticRotation`.
    pub automatic_rotation: AutomaticRotation,
    /// `RotationInterval` in seconds (when rotation is enabled).
    pub rotation_interval_secs: Option<i64>,
    /// `MaterialExpireTime` (imported material only).
    pub material_expire_time: Option<UnixMillis>,
}

/// A stored key: everything `KeyMetadata` needs besides the ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `KeyId`.
    pub key_id: String,
    /// Owner account.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// `DKMSInstanceId`.
    pub instance_id: String,
    /// `KeySpec`.
    pub key_spec: KeySpec,
    /// `KeyUsage`.
    pub key_usage: KeyUsage,
    /// `Origin`.
    pub origin: Origin,
    /// `ProtectionLevel`.
    pub protection_level: ProtectionLevel,
    /// `KeyState`.
    pub key_state: KeyState,
    /// `Description`.
    pub description: String,
    /// `Creator`.
    pub creator: String,
    /// `CreationDate`.
    pub created_at: UnixMillis,
    /// `DeleteDate` (set while `PendingDeletion`).
    pub delete_date: Option<UnixMillis>,
    /// `DeletionProtection` = `Enabled`.
    pub deletion_protection: bool,
    /// `DeletionProtectionDescription`.
    pub deletion_protection_description: Option<String>,
    /// External key id at the XKI proxy (external instances).
    pub external_key_id: Option<String>,
    /// `PrimaryKeyVersion`: the version new ciphertexts use.
    pub primary_key_version: String,
    /// `AutomaticRotation`.
    pub automatic_rotation: AutomaticRotation,
    /// `RotationInterval`, seconds.
    pub rotation_interval_secs: Option<i64>,
    /// `LastRotationDate` (= creation of the first version for a new key).
    pub last_rotation_date: Option<UnixMillis>,
    /// `NextRotationDate`: last rotation + interval while rotation is `Enabled`/`Suspended`.
    pub next_rotation_date: Option<UnixMillis>,
    /// `MaterialExpireTime`.
    pub material_expire_time: Option<UnixMillis>,
}

/// A key version. For software keys `sealed_material` is the key material sealed
/// (AES-256-GCM) by the caller under the root key: the store only ever sees those bytes.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = key_versions)]
pub struct KeyVersion {
    /// Exactly 36 ASCII characters (a UUID): the first bytes of every ciphertext blob.
    pub key_version_id: String,
    /// The key it belongs to.
    pub key_id: String,
    /// `CreationDate`, Unix ms.
    #[diesel(deserialize_as = i64, serialize_as = i64)]
    pub created_at: UnixMillis,
    /// Software keys: sealed material. Hardware and external keys: `None`.
    pub sealed_material: Option<Vec<u8>>,
    /// Hardware keys: where the backend finds the material (e.g. an HSM object label).
    pub backend_ref: Option<String>,
}

impl std::fmt::Debug for KeyVersion {
    // Sealed or not, material bytes stay out of logs: show their length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersion")
            .field("key_version_id", &self.key_version_id)
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .field(
                "sealed_material",
                &self
                    .sealed_material
                    .as_ref()
                    .map(|m| format!("<{} bytes>", m.len())),
            )
            .field("backend_ref", &self.backend_ref)
            .finish()
    }
}

impl KeyVersion {
    /// Checks the id is exactly 36 ASCII characters (the ciphertext format depends on it).
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.key_version_id.len() != 36 || !self.key_version_id.is_ascii() {
            return Err(StoreError::InvalidArgument(
                "key version id must be exactly 36 ASCII characters".to_owned(),
            ));
        }
        Ok(())
    }
}

/// An alias: a name that resolves to one key, unique per account and region.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = aliases)]
pub struct Alias {
    /// Owner account.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// `alias/…`.
    pub alias_name: String,
    /// Target key.
    pub key_id: String,
    /// Creation time.
    #[diesel(deserialize_as = i64, serialize_as = i64)]
    pub created_at: UnixMillis,
    /// Last retarget (= `created_at` until `UpdateAlias`).
    #[diesel(deserialize_as = i64, serialize_as = i64)]
    pub updated_at: UnixMillis,
}

/// A tag of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// `TagKey`.
    pub tag_key: String,
    /// `TagValue`.
    pub tag_value: String,
}

impl Tag {
    /// A tag.
    pub fn new(tag_key: impl Into<String>, tag_value: impl Into<String>) -> Self {
        Self {
            tag_key: tag_key.into(),
            tag_value: tag_value.into(),
        }
    }
}

/// A tag together with the key it belongs to (listing tags of several keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Queryable, Selectable, Insertable)]
#[diesel(table_name = tags)]
pub struct KeyTag {
    /// The tagged key.
    pub key_id: String,
    /// `TagKey`.
    pub tag_key: String,
    /// `TagValue`.
    pub tag_value: String,
}

/// One audit record. Never holds key material or plaintext: only who did what to which key,
/// and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    /// Unique id (e.g. a UUID) chosen by the caller.
    pub event_id: String,
    /// When the request was handled.
    #[diesel(deserialize_as = i64, serialize_as = i64)]
    pub time: UnixMillis,
    /// The OpenAPI `RequestId`.
    pub request_id: String,
    /// Who: the AccessKey id or principal.
    pub principal: String,
    /// The account the request acted for.
    pub account_id: String,
    /// OpenAPI action, e.g. `Encrypt`.
    pub action: String,
    /// Key concerned (not a foreign key: events outlive keys).
    pub key_id: Option<String>,
    /// `Success` or the error code.
    pub result: String,
    /// Client address, when known.
    pub source_ip: Option<String>,
    /// Short free text (truncated to [`AuditEvent::MAX_DETAIL_BYTES`]).
    pub detail: Option<String>,
}

impl AuditEvent {
    /// `detail` longer than this is cut (at a character boundary) before it is stored.
    pub const MAX_DETAIL_BYTES: usize = 1024;
    /// The `result` of a request that succeeded.
    pub const SUCCESS: &'static str = "Success";
}

/// Filters of [`Store::list_keys`](super::Store::list_keys): AND across fields, OR within one
/// field; an empty field does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// `KeyState` values.
    pub key_states: Vec<KeyState>,
    /// `KeySpec` values.
    pub key_specs: Vec<KeySpec>,
    /// `KeyUsage` values.
    pub key_usages: Vec<KeyUsage>,
    /// `ProtectionLevel` values.
    pub protection_levels: Vec<ProtectionLevel>,
    /// `DKMSInstanceId` values.
    pub instance_ids: Vec<String>,
}

/// A compare-and-set key state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The state the caller saw; the update happens only if the key is still in it.
    pub expected: KeyState,
    /// The state to set.
    pub new: KeyState,
    /// The `DeleteDate` to store with it (`Some` when scheduling deletion, `None` clears it).
    pub delete_date: Option<UnixMillis>,
}

/// An audit query: newest first, at most `limit` events (1–1000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this account's events.
    pub account_id: Option<String>,
    /// Only events about this key.
    pub key_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Events at or after this time.
    pub since: Option<UnixMillis>,
    /// Events strictly before this time.
    pub until: Option<UnixMillis>,
    /// Most events returned.
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            account_id: None,
            key_id: None,
            action: None,
            since: None,
            until: None,
            limit: 100,
        }
    }
}

impl AuditQuery {
    /// Largest `limit` served.
    pub const MAX_LIMIT: u32 = 1000;
}

impl From<i64> for UnixMillis {
    fn from(millis: i64) -> Self {
        Self(millis)
    }
}

impl From<UnixMillis> for i64 {
    fn from(time: UnixMillis) -> Self {
        time.0
    }
}

// ---- column images ---------------------------------------------------------------------------

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = instances)]
pub(crate) struct InstanceRow {
    pub instance_id: String,
    pub kind: String,
    pub name: String,
    pub spec: String,
    pub connection_state: String,
    pub connection_error_code: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<InstanceRow> for Instance {
    type Error = StoreError;

    fn try_from(row: InstanceRow) -> Result<Self, StoreError> {
        Ok(Self {
            kind: parse_stored(InstanceKind::parse, "instance kind", &row.kind)?,
            connection_state: parse_stored(
                ConnectionState::parse,
                "connection state",
                &row.connection_state,
            )?,
            instance_id: row.instance_id,
            name: row.name,
            spec: row.spec,
            connection_error_code: row.connection_error_code,
            created_at: UnixMillis(row.created_at),
            updated_at: UnixMillis(row.updated_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = keys)]
pub(crate) struct KeyRow {
    pub key_id: String,
    pub account_id: String,
    pub region: String,
    pub instance_id: String,
    pub key_spec: String,
    pub key_usage: String,
    pub origin: String,
    pub protection_level: String,
    pub key_state: String,
    pub description: String,
    pub creator: String,
    pub created_at: i64,
    pub delete_date: Option<i64>,
    pub deletion_protection: bool,
    pub deletion_protection_description: Option<String>,
    pub external_key_id: Option<String>,
    pub primary_key_version: String,
    pub automatic_rotation: String,
    pub rotation_interval_secs: Option<i64>,
    pub last_rotation_date: Option<i64>,
    pub next_rotation_date: Option<i64>,
    pub material_expire_time: Option<i64>,
}

impl TryFrom<KeyRow> for Key {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            origin: parse_stored(Origin::parse, "origin", &row.origin)?,
            key_spec: parse_stored(KeySpec::parse, "key spec", &row.key_spec)?,
            key_usage: parse_stored(KeyUsage::parse, "key usage", &row.key_usage)?,
            protection_level: parse_stored(
                ProtectionLevel::parse,
                "protection level",
                &row.protection_level,
            )?,
            key_state: parse_key_state(&row.key_state)?,
            automatic_rotation: parse_stored(
                AutomaticRotation::parse,
                "automatic rotation",
                &row.automatic_rotation,
            )?,
            key_id: row.key_id,
            account_id: row.account_id,
            region: row.region,
            instance_id: row.instance_id,
            description: row.description,
            creator: row.creator,
            created_at: UnixMillis(row.created_at),
            delete_date: row.delete_date.map(UnixMillis),
            deletion_protection: row.deletion_protection,
            deletion_protection_description: row.deletion_protection_description,
            external_key_id: row.external_key_id,
            primary_key_version: row.primary_key_version,
            rotation_interval_secs: row.rotation_interval_secs,
            last_rotation_date: row.last_rotation_date.map(UnixMillis),
            next_rotation_date: row.next_rotation_date.map(UnixMillis),
            material_expire_time: row.material_expire_time.map(UnixMillis),
        })
    }
}

/// The next automatic rotation: `last + interval` while rotation is on (or suspended).
pub(crate) fn next_rotation(
    rotation: AutomaticRotation,
    interval_secs: Option<i64>,
    last_rotation: Option<UnixMillis>,
) -> Option<UnixMillis> {
    match rotation {
        AutomaticRotation::Disabled => None,
        AutomaticRotation::Enabled | AutomaticRotation::Suspended => {
            Some(last_rotation?.plus_secs(interval_secs?))
        }
    }
}
