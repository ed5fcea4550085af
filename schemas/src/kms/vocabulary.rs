//! The typed vocabulary of KMS keys (spec `kms-openapi.md` §2.2, §2.5): key specs, usages,
//! origins, protection levels and rotation intervals, each parsed once at the edge with its
//! rules. Past the edge, code handles these types, never their wire strings.

use std::fmt;
use std::time::Duration;

crate::wire_enum! {
    /// `KeySpec`.
    KeySpec {
        /// AES-256 (every instance kind, and the only spec of external keys).
        Aes256 => "Aliyun_AES_256",
        /// AES-192 (hardware).
        Aes192 => "Aliyun_AES_192",
        /// AES-128 (hardware).
        Aes128 => "Aliyun_AES_128",
        /// SM4 (mainland managed HSMs).
        Sm4 => "Aliyun_SM4",
        /// Triple DES (older hardware).
        Des3 => "Aliyun_DES3_192",
        /// RSA 2048.
        Rsa2048 => "RSA_2048",
        /// RSA 3072.
        Rsa3072 => "RSA_3072",
        /// RSA 4096.
        Rsa4096 => "RSA_4096",
        /// ECDSA on secp256r1.
        EcP256 => "EC_P256",
        /// ECDSA on secp256k1.
        EcP256K => "EC_P256K",
        /// SM2.
        EcSm2 => "EC_SM2",
    }
}

impl KeySpec {
    /// Symmetric (`Aliyun_*`) specs.
    pub const fn is_symmetric(self) -> bool {
        matches!(
            self,
            Self::Aes256 | Self::Aes192 | Self::Aes128 | Self::Sm4 | Self::Des3
        )
    }

    /// The AES key length of a symmetric AES spec, bytes.
    pub const fn aes_key_bytes(self) -> Option<usize> {
        match self {
            Self::Aes256 => Some(32),
            Self::Aes192 => Some(24),
            Self::Aes128 => Some(16),
            _ => None,
        }
    }

    /// The usages a key of this spec may have (spec §2.5: RSA either, never both; EC signs).
    pub const fn usages(self) -> &'static [KeyUsage] {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 | Self::EcSm2 => {
                &[KeyUsage::SignVerify, KeyUsage::EncryptDecrypt]
            }
            Self::EcP256 | Self::EcP256K => &[KeyUsage::SignVerify],
            _ => &[KeyUsage::EncryptDecrypt],
        }
    }

    /// CreateKey's usage when the request names none: `SIGN/VERIFY` if the spec can sign,
    /// else `ENCRYPT/DECRYPT` (spec §2.2).
    pub const fn default_usage(self) -> KeyUsage {
        self.usages()[0]
    }
}

impl Default for KeySpec {
    /// CreateKey's default.
    fn default() -> Self {
        Self::Aes256
    }
}

crate::wire_enum! {
    /// `KeyUsage`.
    KeyUsage {
        /// Encrypt and decrypt.
        EncryptDecrypt => "ENCRYPT/DECRYPT",
        /// Sign and verify.
        SignVerify => "SIGN/VERIFY",
    }
}

crate::wire_enum! {
    /// `Origin`: where a key's material came from.
    Origin {
        /// Made by KMS (or by its HSM / external key manager).
        AliyunKms => "Aliyun_KMS",
        /// Imported by the user (BYOK).
        External => "EXTERNAL",
    }
}

impl Default for Origin {
    /// CreateKey's default.
    fn default() -> Self {
        Self::AliyunKms
    }
}

crate::wire_enum! {
    /// `ProtectionLevel`.
    ProtectionLevel {
        /// Software-protected.
        Software => "SOFTWARE",
        /// Hardware (HSM) protected.
        Hsm => "HSM",
    }
}

crate::wire_enum! {
    /// `Algorithm` of AsymmetricSign / AsymmetricVerify (over a SHA-256 digest).
    SigningAlgorithm {
        /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt.
        RsaPssSha256 => "RSA_PSS_SHA_256",
        /// RSASSA-PKCS1-v1_5 with SHA-256.
        RsaPkcs1Sha256 => "RSA_PKCS1_SHA_256",
        /// ECDSA with SHA-256, DER-encoded signature.
        EcdsaSha256 => "ECDSA_SHA_256",
    }
}

crate::wire_enum! {
    /// `Algorithm` of AsymmetricEncrypt / AsymmetricDecrypt.
    AsymmetricAlgorithm {
        /// RSAES-OAEP with SHA-256 (and MGF1-SHA-256).
        RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        /// RSAES-OAEP with SHA-1 (and MGF1-SHA-1).
        RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
    }
}

/// `RotationInterval`: `<n><d|h|m|s>`, 7 to 365 days (spec §2.2); shown as `<seconds>s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RotationInterval(u64);

/// Why a rotation interval was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRotationInterval {
    /// Not `<digits><d|h|m|s>`.
    #[error("RotationInterval must be a number followed by d, h, m or s, e.g. 30d")]
    Format,
    /// Shorter than 7 days or longer than 365.
    #[error("RotationInterval must be 7 to 365 days")]
    Range,
}

impl RotationInterval {
    /// The shortest interval.
    pub const MIN: Duration = Duration::from_secs(7 * 86_400);
    /// The longest interval.
    pub const MAX: Duration = Duration::from_secs(365 * 86_400);

    /// Parses `<n>d|h|m|s`.
    pub fn parse(text: &str) -> Result<Self, InvalidRotationInterval> {
        let split = text
            .len()
            .checked_sub(1)
            .filter(|&i| text.is_char_boundary(i))
            .ok_or(InvalidRotationInterval::Format)?;
        let (number, unit) = text.split_at(split);
        let unit_secs: u64 = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(InvalidRotationInterval::Format),
        };
        if number.is_empty() || number.len() > 12 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidRotationInterval::Format);
        }
        let count: u64 = number
            .parse()
            .map_err(|_| InvalidRotationInterval::Format)?;
        Self::from_secs(count.saturating_mul(unit_secs))
    }

    /// An interval of `secs` seconds, checked against the range.
    pub fn from_secs(secs: u64) -> Result<Self, InvalidRotationInterval> {
        if (Self::MIN.as_secs()..=Self::MAX.as_secs()).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(InvalidRotationInterval::Range)
        }
    }

    /// Seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// As a duration.
    pub const fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for RotationInterval {
    /// `604800s`, as DescribeKey shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for spec in KeySpec::ALL {
            assert_eq!(KeySpec::parse(spec.as_str()), Some(*spec));
        }
        for usage in KeyUsage::ALL {
            assert_eq!(KeyUsage::parse(usage.as_str()), Some(*usage));
        }
        assert_eq!(Origin::parse("EXTERNAL"), Some(Origin::External));
        assert_eq!(Origin::parse("external"), None, "case-sensitive");
        assert_eq!(ProtectionLevel::parse("HSM"), Some(ProtectionLevel::Hsm));
        assert_eq!(KeySpec::parse("aliyun_aes_256"), None);
        assert_eq!(
            serde_json::to_string(&KeySpec::EcP256K).unwrap(),
            "\"EC_P256K\""
        );
    }

    #[test]
    fn usages_per_spec() {
        assert_eq!(KeySpec::Aes256.default_usage(), KeyUsage::EncryptDecrypt);
        assert_eq!(KeySpec::Rsa2048.default_usage(), KeyUsage::SignVerify);
        assert!(
            KeySpec::Rsa3072
                .usages()
                .contains(&KeyUsage::EncryptDecrypt)
        );
        assert_eq!(KeySpec::EcP256.usages(), &[KeyUsage::SignVerify]);
        assert_eq!(KeySpec::EcP256K.default_usage(), KeyUsage::SignVerify);
        assert!(!KeySpec::Aes128.usages().contains(&KeyUsage::SignVerify));
        assert_eq!(KeySpec::Aes192.aes_key_bytes(), Some(24));
        assert_eq!(KeySpec::Rsa2048.aes_key_bytes(), None);
        assert!(KeySpec::Aes128.is_symmetric() && !KeySpec::EcSm2.is_symmetric());
    }

    #[test]
    fn rotation_intervals() {
        for (text, secs) in [
            ("7d", 604_800),
            ("365d", 31_536_000),
            ("168h", 604_800),
            ("10080m", 604_800),
            ("604800s", 604_800),
            ("0030d", 2_592_000),
        ] {
            assert_eq!(
                RotationInterval::parse(text).unwrap().as_secs(),
                secs,
                "{text}"
            );
        }
        assert_eq!(
            RotationInterval::parse("30d").unwrap().to_string(),
            "2592000s"
        );
        for short_or_long in ["6d", "366d", "604799s", "0d", "99999999999d"] {
            assert_eq!(
                RotationInterval::parse(short_or_long),
                Err(InvalidRotationInterval::Range),
                "{short_or_long}"
            );
        }
        for bad in [
            "", "d", "7", "7D", "7 d", "-7d", "7.5d", "7w", "+7d", "７d", "7dd",
        ] {
            assert_eq!(
                RotationInterval::parse(bad),
                Err(InvalidRotationInterval::Format),
                "{bad:?}"
            );
        }
    }
}
