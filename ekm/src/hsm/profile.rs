//! Which token, and what its vendor does differently.
//!
//! Vendor differences live in [`VendorProfile`] and nowhere else. `ulIvBits` is not in the
//! profile: cryptoki (≥ 0.7, rust-cryptoki #247) always sets it to `ulIvLen * 8`, which Luna in
//! FIPS mode requires and every other known token ignores, so there is nothing left to choose.

use cryptoki::error::RvError;

use crate::error::{Error, Result};

/// How the token is found: never by slot index (SoftHSM reassigns slot ids at init).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CK_TOKEN_INFO.label` (trailing blanks ignored).
    Label(String),
    /// `CK_TOKEN_INFO.serialNumber`.
    Serial(String),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Label(label) => write!(f, "label {label:?}"),
            Self::Serial(serial) => write!(f, "serial {serial:?}"),
        }
    }
}

/// Who makes the GCM IV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvSource {
    /// A 96-bit IV from the host CSPRNG (`rand::rngs::OsRng`-seeded ChaCha). Random 96-bit IVs
    /// bound a key version to about 2^32 encryptions: rotate well before that.
    Host,
    /// The token writes the IV into a zeroed buffer (CloudHSM, Luna in FIPS mode).
    Hsm,
}

/// Capabilities and quirks of one HSM family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorProfile {
    /// Profile name as configured.
    pub name: &'static str,
    /// Who makes the IV.
    pub iv_source: IvSource,
    /// `CKR_*` values of `C_Decrypt` that mean "the tag did not verify" on this token.
    pub bad_tag_errors: &'static [RvError],
}

impl VendorProfile {
    /// SoftHSM2: host IVs; a bad tag is `CKR_GENERAL_ERROR`.
    pub const SOFTHSM: Self = Self {
        name: "softhsm",
        iv_source: IvSource::Host,
        bad_tag_errors: &[RvError::GeneralError, RvError::EncryptedDataInvalid],
    };
    /// Entrust nShield: a bad tag is `CKR_FUNCTION_FAILED`.
    pub const NSHIELD: Self = Self {
        name: "nshield",
        iv_source: IvSource::Host,
        bad_tag_errors: &[RvError::FunctionFailed, RvError::EncryptedDataInvalid],
    };
    /// Thales Luna (FIPS mode): the HSM generates the IV.
    pub const LUNA: Self = Self {
        name: "luna",
        iv_source: IvSource::Hsm,
        bad_tag_errors: &[RvError::EncryptedDataInvalid],
    };
    /// AWS CloudHSM: the HSM generates the IV into an all-zero buffer.
    pub const CLOUDHSM: Self = Self {
        name: "cloudhsm",
        iv_source: IvSource::Hsm,
        bad_tag_errors: &[RvError::EncryptedDataInvalid],
    };
    /// A token that follows the standard to the letter.
    pub const GENERIC: Self = Self {
        name: "generic",
        iv_source: IvSource::Host,
        bad_tag_errors: &[RvError::EncryptedDataInvalid],
    };

    /// Every built-in profile.
    pub const ALL: [Self; 5] = [
        Self::SOFTHSM,
        Self::NSHIELD,
        Self::LUNA,
        Self::CLOUDHSM,
        Self::GENERIC,
    ];

    /// Looks a profile up by name.
    pub fn by_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.name).collect();
                Error::Config(format!(
                    "unknown vendor profile {name:?} (known: {})",
                    names.join(", ")
                ))
            })
    }

    /// Whether `C_Decrypt` failing with `rv` means the ciphertext did not authenticate.
    pub fn is_bad_tag(&self, rv: RvError) -> bool {
        self.bad_tag_errors.contains(&rv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        assert_eq!(
            VendorProfile::by_name("SoftHSM").unwrap(),
            VendorProfile::SOFTHSM
        );
        assert!(VendorProfile::SOFTHSM.is_bad_tag(RvError::GeneralError));
        assert!(!VendorProfile::GENERIC.is_bad_tag(RvError::GeneralError));
        assert!(VendorProfile::NSHIELD.is_bad_tag(RvError::FunctionFailed));
        assert!(VendorProfile::by_name("acme").is_err());
    }
}
