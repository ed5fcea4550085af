//! The actions this server answers, the permission each needs in a key policy, and the
//! state × operation matrix of spec §3.2 as one function, [`check_state`], that every handler
//! calls before it touches a key.

use schemas::kms::{ErrorCode, KeyState};

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident, )*) => {
        /// An OpenAPI action.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            /// Every action.
            pub const ALL: &'static [Action] = &[ $( Action::$variant, )* ];

            /// The wire name (`Action` parameter).
            pub const fn name(self) -> &'static str {
                match self { $( Action::$variant => stringify!($variant), )* }
            }

            /// `kms:<Action>`.
            const fn own_permission(self) -> &'static str {
                match self { $( Action::$variant => concat!("kms:", stringify!($variant)), )* }
            }

            /// The action with this exact wire name.
            pub fn parse(name: &str) -> Option<Self> {
                match name { $( stringify!($variant) => Some(Action::$variant), )* _ => None }
            }
        }
    };
}

actions! {
    /// Creates a key.
    CreateKey,
    /// Key metadata.
    DescribeKey,
    /// Lists keys.
    ListKeys,
    /// Enables a key.
    EnableKey,
    /// Disables a key.
    DisableKey,
    /// Schedules deletion.
    ScheduleKeyDeletion,
    /// Cancels a scheduled deletion.
    CancelKeyDeletion,
    /// Turns deletion protection on or off.
    SetDeletionProtection,
    /// Replaces the description.
    UpdateKeyDescription,
    /// One key version.
    DescribeKeyVersion,
    /// A key's versions.
    ListKeyVersions,
    /// Adds a primary version (manual rotation).
    CreateKeyVersion,
    /// Turns automatic rotation on or off.
    UpdateRotationPolicy,
    /// Reads the key policy.
    GetKeyPolicy,
    /// Replaces the key policy.
    SetKeyPolicy,
    /// Creates an alias.
    CreateAlias,
    /// Retargets an alias.
    UpdateAlias,
    /// Deletes an alias.
    DeleteAlias,
    /// Lists aliases.
    ListAliases,
    /// Lists a key's aliases.
    ListAliasesByKeyId,
    /// Tags a key (old API).
    TagResource,
    /// Untags a key (old API).
    UntagResource,
    /// A key's tags (old API).
    ListResourceTags,
    /// Tags keys (new API).
    TagResources,
    /// Untags keys (new API).
    UntagResources,
    /// Tags of keys (new API).
    ListTagResources,
    /// Encrypts.
    Encrypt,
    /// Decrypts.
    Decrypt,
    /// Makes a data key.
    GenerateDataKey,
    /// Makes a data key, returning only its ciphertext.
    GenerateDataKeyWithoutPlaintext,
    /// Decrypts under one key and encrypts under another.
    ReEncrypt,
    /// Signs a digest with an asymmetric key version.
    AsymmetricSign,
    /// Verifies a signature of a digest.
    AsymmetricVerify,
    /// Encrypts with an asymmetric key version's public key.
    AsymmetricEncrypt,
    /// Decrypts with an asymmetric key version's private key.
    AsymmetricDecrypt,
    /// An asymmetric key version's public key.
    GetPublicKey,
    /// Lists KMS instances.
    ListKmsInstances,
    /// One KMS instance.
    GetKmsInstance,
    /// Connects an external instance to its XKI proxy.
    ConnectKmsInstance,
    /// Disconnects an external instance.
    DisconnectKmsInstance,
}

impl Action {
    /// The policy action a call needs on its key (`kms:<Action>` unless noted). ReEncrypt needs
    /// `kms:ReEncryptFrom` on the source key and `kms:ReEncryptTo` on the destination; handlers
    /// ask for those by name.
    pub fn permission(self) -> &'static str {
        match self {
            // The new tag APIs are the old ones applied to many keys.
            Self::TagResources => "kms:TagResource",
            Self::UntagResources => "kms:UntagResource",
            Self::ListTagResources => "kms:ListResourceTags",
            Self::ReEncrypt => "kms:ReEncryptFrom",
            other => other.own_permission(),
        }
    }
}

/// The spec §3.2 matrix: whether `action` may run on a key in `state`, else the 409 error.
///
/// Rows (Enabled / Disabled / PendingDeletion / PendingImport):
/// - metadata reads, DeleteAlias, key-less calls: OK everywhere;
/// - crypto (asymmetric and GetPublicKey too), CreateKeyVersion, UpdateRotationPolicy: OK / Rejected.Disabled /
///   Rejected.PendingDeletion / Rejected.PendingImport;
/// - UpdateKeyDescription, tags, SetKeyPolicy, UpdateAlias (target), SetDeletionProtection:
///   OK / OK / Rejected.PendingDeletion / OK;
/// - EnableKey, DisableKey: OK / OK / StateModifiedFailed / StateModifiedFailed;
/// - ScheduleKeyDeletion, CreateAlias: OK / OK / StateModifiedFailed / OK;
/// - CancelKeyDeletion: StateModifiedFailed except PendingDeletion.
///
/// `Unavailable` (a key whose backend is unreachable) refuses crypto with `Rejected.Unavailable`
/// and state transitions with `Rejected.StateModifiedFailed`, and allows the rest.
pub fn check_state(action: Action, state: KeyState) -> Result<(), ErrorCode> {
    use Action as A;
    use KeyState as S;
    let modified_failed = Err(ErrorCode::RejectedStateModifiedFailed);
    match action {
        A::CreateKey
        | A::DescribeKey
        | A::ListKeys
        | A::DescribeKeyVersion
        | A::ListKeyVersions
        | A::GetKeyPolicy
        | A::DeleteAlias
        | A::ListAliases
        | A::ListAliasesByKeyId
        | A::ListResourceTags
        | A::ListTagResources
        | A::ListKmsInstances
        | A::GetKmsInstance
        | A::ConnectKmsInstance
        | A::DisconnectKmsInstance => Ok(()),
        A::Encrypt
        | A::Decrypt
        | A::GenerateDataKey
        | A::GenerateDataKeyWithoutPlaintext
        | A::ReEncrypt
        | A::AsymmetricSign
        | A::AsymmetricVerify
        | A::AsymmetricEncrypt
        | A::AsymmetricDecrypt
        | A::GetPublicKey
        | A::CreateKeyVersion
        | A::UpdateRotationPolicy => match state {
            S::Enabled => Ok(()),
            other => Err(other.rejection()),
        },
        A::UpdateKeyDescription
        | A::TagResource
        | A::UntagResource
        | A::TagResources
        | A::UntagResources
        | A::SetKeyPolicy
        | A::UpdateAlias
        | A::SetDeletionProtection => match state {
            S::PendingDeletion => Err(ErrorCode::RejectedPendingDeletion),
            _ => Ok(()),
        },
        A::EnableKey | A::DisableKey => match state {
            S::Enabled | S::Disabled => Ok(()),
            S::PendingDeletion | S::PendingImport | S::Unavailable => modified_failed,
        },
        A::ScheduleKeyDeletion | A::CreateAlias => match state {
            S::PendingDeletion | S::Unavailable => modified_failed,
            S::Enabled | S::Disabled | S::PendingImport => Ok(()),
        },
        A::CancelKeyDeletion => match state {
            S::PendingDeletion => Ok(()),
            _ => modified_failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [KeyState; 5] = [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::PendingImport,
        KeyState::Unavailable,
    ];

    /// The matrix as the spec prints it (plus the `Unavailable` column), one row per action.
    fn expected(action: Action) -> [&'static str; 5] {
        use Action as A;
        const OK: &str = "OK";
        const SMF: &str = "Rejected.StateModifiedFailed";
        const PD: &str = "Rejected.PendingDeletion";
        match action {
            A::CreateKey
            | A::DescribeKey
            | A::ListKeys
            | A::DescribeKeyVersion
            | A::ListKeyVersions
            | A::GetKeyPolicy
            | A::DeleteAlias
            | A::ListAliases
            | A::ListAliasesByKeyId
            | A::ListResourceTags
            | A::ListTagResources
            | A::ListKmsInstances
            | A::GetKmsInstance
            | A::ConnectKmsInstance
            | A::DisconnectKmsInstance => [OK, OK, OK, OK, OK],
            A::Encrypt
            | A::Decrypt
            | A::GenerateDataKey
            | A::GenerateDataKeyWithoutPlaintext
            | A::ReEncrypt
            | A::AsymmetricSign
            | A::AsymmetricVerify
            | A::AsymmetricEncrypt
            | A::AsymmetricDecrypt
            | A::GetPublicKey
            | A::CreateKeyVersion
            | A::UpdateRotationPolicy => [
                OK,
                "Rejected.Disabled",
                PD,
                "Rejected.PendingImport",
                "Rejected.Unavailable",
            ],
            A::UpdateKeyDescription
            | A::TagResource
            | A::UntagResource
            | A::TagResources
            | A::UntagResources
            | A::SetKeyPolicy
            | A::UpdateAlias
            | A::SetDeletionProtection => [OK, OK, PD, OK, OK],
            A::EnableKey | A::DisableKey => [OK, OK, SMF, SMF, SMF],
            A::ScheduleKeyDeletion | A::CreateAlias => [OK, OK, SMF, OK, SMF],
            A::CancelKeyDeletion => [SMF, SMF, OK, SMF, SMF],
        }
    }

    #[test]
    fn the_whole_matrix() {
        for &action in Action::ALL {
            for (state, want) in STATES.iter().zip(expected(action)) {
                let got = match check_state(action, *state) {
                    Ok(()) => "OK",
                    Err(code) => {
                        assert_eq!(code.http_status(), 409, "{action:?} × {state:?}");
                        code.code()
                    }
                };
                assert_eq!(got, want, "{action:?} × {state:?}");
            }
        }
    }

    #[test]
    fn names_and_permissions() {
        for &action in Action::ALL {
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        assert_eq!(Action::parse("encrypt"), None);
        assert_eq!(Action::Encrypt.permission(), "kms:Encrypt");
        assert_eq!(
            Action::ScheduleKeyDeletion.permission(),
            "kms:ScheduleKeyDeletion"
        );
        assert_eq!(Action::TagResources.permission(), "kms:TagResource");
        assert_eq!(Action::ReEncrypt.permission(), "kms:ReEncryptFrom");
    }
}
