//! A certificate authority that issues the leaves every hop needs, and the leaf specification.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::Error;

/// Organisation written in every subject, so a stray dev certificate is easy to recognise.
pub const ORGANIZATION: &str = "HYOK dev PKI";
/// Default lifetime of leaf certificates, in days (the longest browsers ever accepted).
pub const DEFAULT_LEAF_VALIDITY_DAYS: u32 = 825;
/// Default lifetime of the CA certificate, in days.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;
/// Certificates start this long before "now", to tolerate clocks that disagree a little.
const CLOCK_SKEW: Duration = Duration::hours(1);
/// Hex digits of the key hash written in a CA's subject.
const CA_KEY_ID_HEX_LEN: usize = 16;
/// X.520 upper bound for a common name.
const MAX_COMMON_NAME_LEN: usize = 64;

/// A certificate and its private key, both PEM.
///
/// `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate, one `CERTIFICATE` PEM block.
    pub cert_pem: String,
    /// The private key, one PKCS#8 `PRIVATE KEY` PEM block.
    pub key_pem: String,
}

impl CertifiedKey {
    /// The certificate as DER, ready for rustls.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, Error> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|err| Error::Pem {
            what: "certificate".to_owned(),
            reason: err.to_string(),
        })
    }

    /// The private key as DER, ready for rustls.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|err| Error::Pem {
            what: "private key".to_owned(),
            reason: err.to_string(),
        })
    }
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What a leaf certificate may be used for: its extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (`serverAuth`).
    Server,
    /// TLS client authentication (`clientAuth`).
    Client,
    /// Both `serverAuth` and `clientAuth`.
    Both,
}

/// Everything that describes one leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names (a leading `*.` makes a wildcard).
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Extended key usage.
    pub usage: Usage,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A server leaf valid from an hour ago for [`DEFAULT_LEAF_VALIDITY_DAYS`].
    pub fn server(common_name: &str, dns_names: &[&str], ips: &[IpAddr]) -> Self {
        Self::new(common_name, dns_names, ips, Usage::Server)
    }

    /// A client leaf valid from an hour ago for [`DEFAULT_LEAF_VALIDITY_DAYS`].
    pub fn client(common_name: &str, dns_names: &[&str]) -> Self {
        Self::new(common_name, dns_names, &[], Usage::Client)
    }

    fn new(common_name: &str, dns_names: &[&str], ips: &[IpAddr], usage: Usage) -> Self {
        let now = now_utc();
        Self {
            common_name: common_name.to_owned(),
            dns_names: dns_names.iter().map(|name| (*name).to_owned()).collect(),
            ips: ips.to_vec(),
            usage,
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(DEFAULT_LEAF_VALIDITY_DAYS)),
        }
    }

    /// The same leaf, valid from an hour ago for `days` days.
    pub fn valid_for_days(mut self, days: u32) -> Self {
        let now = now_utc();
        self.not_before = now - CLOCK_SKEW;
        self.not_after = now + Duration::days(i64::from(days));
        self
    }

    /// The same leaf with a validity period entirely in the past (30 days ago to yesterday),
    /// for negative tests.
    pub fn expired(mut self) -> Self {
        let now = now_utc();
        self.not_before = now - Duration::days(30);
        self.not_after = now - Duration::days(1);
        self
    }
}

/// A self-signed root CA (ECDSA P-256, `CA:true, pathlen:0`) that issues leaves.
pub struct Authority {
    common_name: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new root CA valid from an hour ago for [`DEFAULT_CA_VALIDITY_DAYS`].
    pub fn new(common_name: &str) -> Result<Self, Error> {
        Self::with_validity_days(common_name, DEFAULT_CA_VALIDITY_DAYS)
    }

    /// A new root CA valid from an hour ago for `validity_days` days.
    pub fn with_validity_days(common_name: &str, validity_days: u32) -> Result<Self, Error> {
        validate_common_name(common_name)?;
        if validity_days == 0 {
            return Err(Error::InvalidValidity(
                "the CA needs at least one day".to_owned(),
            ));
        }
        let what = || format!("CA certificate {common_name:?}");
        let key = new_key(what)?;
        let now = now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_subject(common_name, &key);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(i64::from(validity_days));
        // pathlen 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: what(),
            source,
        })?;
        Ok(Self {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what every peer puts in its trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Anyone holding it can mint certificates every hop
    /// trusts: keep it where the other keys are, never in a repository.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// A server certificate (`serverAuth`) with the default validity.
    pub fn issue_server(
        &self,
        common_name: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
    ) -> Result<CertifiedKey, Error> {
        self.issue(&LeafSpec::server(common_name, dns_names, ips))
    }

    /// A client certificate (`clientAuth`) with the default validity.
    pub fn issue_client(
        &self,
        common_name: &str,
        dns_names: &[&str],
    ) -> Result<CertifiedKey, Error> {
        self.issue(&LeafSpec::client(common_name, dns_names))
    }

    /// A leaf exactly as `spec` says, signed by this CA, with a fresh P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<CertifiedKey, Error> {
        let what = || format!("certificate {:?}", spec.common_name);
        let mut params = leaf_params(spec)?;
        params.use_authority_key_identifier_extension = true;
        let key = new_key(what)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: what(),
                source,
            })?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("common_name", &self.common_name)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A leaf that signs itself: no CA vouches for it. For negative mTLS tests.
pub fn self_signed(spec: &LeafSpec) -> Result<CertifiedKey, Error> {
    let what = || format!("self-signed certificate {:?}", spec.common_name);
    let params = leaf_params(spec)?;
    let key = new_key(what)?;
    let cert = params.self_signed(&key).map_err(|source| Error::Generate {
        what: what(),
        source,
    })?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, Error> {
    validate_common_name(&spec.common_name)?;
    if spec.not_after <= spec.not_before {
        return Err(Error::InvalidValidity(format!(
            "not_after ({}) must come after not_before ({})",
            spec.not_after, spec.not_before
        )));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&spec.common_name);
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys only sign (ECDHE does the key exchange), so no keyEncipherment.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match spec.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Both => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    let mut sans = Vec::with_capacity(spec.dns_names.len() + spec.ips.len());
    for name in &spec.dns_names {
        validate_dns_name(name)?;
        let ia5 = name.as_str().try_into().map_err(|_| Error::InvalidName {
            name: name.clone(),
            reason: "not ASCII",
        })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(spec.ips.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    Ok(params)
}

fn subject(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

/// A CA's subject also names its key: two dev CAs with the same common name then still have
/// different names, so a verifier reports a foreign leaf as "unknown issuer" (not as a bad
/// signature from a look-alike) and an operator can tell the two apart.
fn ca_subject(common_name: &str, key: &KeyPair) -> rcgen::DistinguishedName {
    let key_id = crate::sha256_fingerprint_der(key.public_key_raw());
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(
        DnType::OrganizationalUnitName,
        format!("CA key {}", &key_id[..CA_KEY_ID_HEX_LEN]),
    );
    name.push(DnType::CommonName, common_name);
    name
}

fn new_key(what: impl Fn() -> String) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: format!("key for {}", what()),
        source,
    })
}

fn now_utc() -> OffsetDateTime {
    // X.509 times have whole seconds; dropping the rest keeps specs and certificates equal.
    let now = OffsetDateTime::now_utc();
    now - Duration::nanoseconds(i64::from(now.nanosecond()))
}

fn validate_common_name(common_name: &str) -> Result<(), Error> {
    let reason = if common_name.trim().is_empty() {
        "a common name must not be empty"
    } else if common_name.len() > MAX_COMMON_NAME_LEN {
        "a common name has at most 64 characters"
    } else if common_name.chars().any(char::is_control) {
        "a common name must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: common_name.to_owned(),
        reason,
    })
}

/// Checks that `name` can be a DNS subject alternative name that rustls clients can match:
/// a valid DNS name, optionally prefixed by a `*.` wildcard label, and not an IP address.
pub fn validate_dns_name(name: &str) -> Result<(), Error> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.parse::<IpAddr>().is_ok() {
        return invalid("this is an IP address: give it as an IP SAN");
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return invalid("a wildcard may only be the whole leftmost label");
    }
    if rustls_pki_types::DnsName::try_from(base).is_err() {
        return invalid("not a valid DNS name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_private_keys() {
        let ca = Authority::new("debug test CA").unwrap();
        let leaf = ca.issue_client("client", &["client"]).unwrap();
        let printed = format!("{leaf:?} {ca:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(!printed.contains(leaf.key_pem.lines().nth(1).unwrap()));
        assert!(!printed.contains(ca.key_pem().lines().nth(1).unwrap()));
        assert!(printed.contains("[redacted]"));
        assert!(leaf.key_pem.starts_with(crate::PKCS8_PEM_HEADER));
    }

    #[test]
    fn expired_spec_lies_entirely_in_the_past() {
        let spec = LeafSpec::server("s", &["s"], &[]).expired();
        let now = OffsetDateTime::now_utc();
        assert!(spec.not_before < spec.not_after);
        assert!(spec.not_after < now);
    }

    #[test]
    fn default_specs_cover_now_and_last_825_days() {
        let spec = LeafSpec::client("c", &["c"]);
        let now = OffsetDateTime::now_utc();
        assert!(spec.not_before < now && now < spec.not_after);
        assert_eq!((spec.not_after - spec.not_before).whole_days(), 825);
        assert_eq!(spec.usage, Usage::Client);
    }

    #[test]
    fn dns_names_are_validated() {
        for good in [
            "ekm",
            "localhost",
            "xki-proxy.example.com",
            "*.xks.example.com",
        ] {
            validate_dns_name(good).unwrap();
        }
        for bad in [
            "",
            "127.0.0.1",
            "::1",
            "a b",
            "*",
            "foo.*.example",
            "-x-.example..com",
        ] {
            assert!(
                matches!(validate_dns_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        let ca = Authority::new("refusing CA").unwrap();
        let mut inverted = LeafSpec::server("s", &["s"], &[]);
        std::mem::swap(&mut inverted.not_before, &mut inverted.not_after);
        assert!(matches!(
            ca.issue(&inverted),
            Err(Error::InvalidValidity(_))
        ));
        assert!(matches!(
            ca.issue_client("", &[]),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            ca.issue_server("s", &["not a name"], &[]),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Authority::with_validity_days("ca", 0),
            Err(Error::InvalidValidity(_))
        ));
    }
}
