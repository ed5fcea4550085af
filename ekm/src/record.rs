//! The record the EKM keeps for each key (id, usage, state, versions) and its lifecycle
//! transitions, shared by every `KeyManager` implementation. Where it is stored is the
//! implementation's business (the PKCS#11 manager keeps it in the token: `pkcs11::keys`).

use schemas::xki::ExternalKeyId;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::manager::{KeyInfo, KeyOrigin, KeyState, KeyUsage};

/// Current record format.
const RECORD_FORMAT: u32 = 1;

/// The state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoredState {
    /// Usable.
    Enabled,
    /// Refuses crypto.
    Disabled,
    /// Refuses crypto; destroyed at `delete_at` (Unix seconds).
    PendingDeletion {
        /// Unix time of destruction.
        delete_at: i64,
    },
}

/// One key version's object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyVersion {
    /// Version number, from 1.
    pub version: u32,
    /// `CKA_LABEL` of its secret key object.
    pub label: String,
}

/// The record kept in the HSM for each key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// Record format.
    pub format: u32,
    /// Bumped on every write; the highest wins.
    pub revision: u64,
    /// The key's id.
    pub id: ExternalKeyId,
    /// Permitted uses.
    pub usage: KeyUsage,
    /// Lifecycle state.
    #[serde(flatten)]
    pub state: StoredState,
    /// Versions, oldest first; the last one encrypts.
    pub versions: Vec<KeyVersion>,
    /// Unix creation time.
    pub created_at: i64,
    /// Where the material came from.
    pub origin: KeyOrigin,
    /// Operator's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl KeyRecord {
    /// A fresh record (revision 1, enabled) for version 1 labelled `label`.
    pub fn new(
        id: ExternalKeyId,
        usage: KeyUsage,
        label: String,
        origin: KeyOrigin,
        description: Option<String>,
    ) -> Self {
        Self {
            format: RECORD_FORMAT,
            revision: 1,
            id,
            usage,
            state: StoredState::Enabled,
            versions: vec![KeyVersion { version: 1, label }],
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
            origin,
            description,
        }
    }

    /// The version that encrypts.
    pub fn current(&self) -> Result<&KeyVersion> {
        self.versions
            .last()
            .ok_or_else(|| Error::Internal(format!("key {} has no version", self.id)))
    }

    /// A version by number.
    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The public view.
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            usage: self.usage,
            state: match self.state {
                StoredState::Enabled => KeyState::Enabled,
                StoredState::Disabled => KeyState::Disabled,
                StoredState::PendingDeletion { delete_at } => KeyState::PendingDeletion {
                    delete_at: OffsetDateTime::from_unix_timestamp(delete_at)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                },
            },
            current_version: self.versions.last().map_or(0, |v| v.version),
            created_at: OffsetDateTime::from_unix_timestamp(self.created_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            origin: self.origin,
            description: self.description.clone(),
        }
    }

    /// Enables a disabled key; `Ok(false)` when already enabled.
    pub fn enable(&mut self) -> Result<bool> {
        match self.state {
            StoredState::Enabled => Ok(false),
            StoredState::Disabled => {
                self.state = StoredState::Enabled;
                Ok(true)
            }
            StoredState::PendingDeletion { .. } => Err(Error::InvalidKeyState {
                key: self.id.clone(),
                reason: "cancel the scheduled deletion before enabling the key",
            }),
        }
    }

    /// Disables an enabled key; `Ok(false)` when already disabled.
    pub fn disable(&mut self) -> Result<bool> {
        match self.state {
            StoredState::Disabled => Ok(false),
            StoredState::Enabled => {
                self.state = StoredState::Disabled;
                Ok(true)
            }
            StoredState::PendingDeletion { .. } => Err(Error::KeyPendingDeletion(self.id.clone())),
        }
    }

    /// Schedules a disabled key's destruction `days` from now (deletion must be deliberate:
    /// disable first).
    pub fn schedule_deletion(&mut self, days: u32) -> Result<bool> {
        match self.state {
            StoredState::Disabled => {
                let delete_at = OffsetDateTime::now_utc()
                    .checked_add(time::Duration::days(days.into()))
                    .ok_or_else(|| Error::Validation("pending window too long".into()))?;
                self.state = StoredState::PendingDeletion {
                    delete_at: delete_at.unix_timestamp(),
                };
                Ok(true)
            }
            StoredState::Enabled => Err(Error::InvalidKeyState {
                key: self.id.clone(),
                reason: "disable the key before scheduling its deletion",
            }),
            StoredState::PendingDeletion { .. } => Err(Error::KeyPendingDeletion(self.id.clone())),
        }
    }

    /// Cancels a scheduled deletion; the key comes back disabled.
    pub fn cancel_deletion(&mut self) -> Result<bool> {
        match self.state {
            StoredState::PendingDeletion { .. } => {
                self.state = StoredState::Disabled;
                Ok(true)
            }
            _ => Err(Error::InvalidKeyState {
                key: self.id.clone(),
                reason: "the key is not pending deletion",
            }),
        }
    }

    /// The number the next version gets; only enabled keys rotate.
    pub fn next_version(&self) -> Result<u32> {
        match self.state {
            StoredState::Enabled => Ok(self.current()?.version + 1),
            StoredState::Disabled => Err(Error::KeyDisabled(self.id.clone())),
            StoredState::PendingDeletion { .. } => Err(Error::KeyPendingDeletion(self.id.clone())),
        }
    }

    /// Whether the deletion window ended at or before `now` (Unix seconds).
    pub fn deletion_due(&self, now: i64) -> bool {
        matches!(self.state, StoredState::PendingDeletion { delete_at } if delete_at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_round_trip() {
        let id = ExternalKeyId::parse("k1").unwrap();
        let mut r = KeyRecord::new(
            id,
            KeyUsage::BOTH,
            "ekm:k1:v1:00".into(),
            KeyOrigin::Generated,
            None,
        );
        r.state = StoredState::PendingDeletion {
            delete_at: 1_800_000_000,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"PENDING_DELETION","delete_at":1800000000"#));
        assert_eq!(serde_json::from_str::<KeyRecord>(&json).unwrap(), r);
        assert!(matches!(r.info().state, KeyState::PendingDeletion { .. }));
    }

    #[test]
    fn transitions() {
        let id = ExternalKeyId::parse("k1").unwrap();
        let mut r = KeyRecord::new(id, KeyUsage::BOTH, "l".into(), KeyOrigin::Generated, None);
        assert!(!r.enable().unwrap());
        assert!(matches!(
            r.schedule_deletion(7),
            Err(Error::InvalidKeyState { .. })
        ));
        assert!(r.disable().unwrap());
        assert!(matches!(r.next_version(), Err(Error::KeyDisabled(_))));
        assert!(r.schedule_deletion(7).unwrap());
        assert!(!r.deletion_due(OffsetDateTime::now_utc().unix_timestamp()));
        assert!(r.deletion_due(OffsetDateTime::now_utc().unix_timestamp() + 8 * 86_400));
        assert!(matches!(r.enable(), Err(Error::InvalidKeyState { .. })));
        assert!(matches!(r.disable(), Err(Error::KeyPendingDeletion(_))));
        assert!(r.cancel_deletion().unwrap());
        assert!(r.enable().unwrap());
        assert_eq!(r.next_version().unwrap(), 2);
    }
}
