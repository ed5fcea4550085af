//! The one conformance suite every [`KeyBackend`] runs (`tests/backends.rs` runs it on the
//! software backend and on the external backend against a real proxy and HSM).
//!
//! What differs between backends is read from [`KeyBackend::capabilities`], never from the
//! backend's kind: rotation-capable backends must give a second version of the same key whose
//! ciphertexts stay apart from the first's; backends that need an external key id get one and
//! must refuse a version without it.
//!
//! Two rules hold for every backend whatever it declares:
//! - payloads are opaque and authenticated: changing, dropping or adding any byte, changing the
//!   AAD, or presenting one version's payload to another version gives
//!   [`BackendError::InvalidCiphertext`];
//! - an empty plaintext either round-trips or is refused with
//!   [`BackendError::InvalidParameter`] (the XKI protocol cannot carry one; KMS never asks,
//!   since `Plaintext` is 1 to 6144 bytes).
//!
//! Declared families (sign, asymmetric encrypt, public key) are checked on every asymmetric
//! spec the backend declares: signatures verify and a changed digest or signature does not,
//! RSAES-OAEP round-trips and refuses tampering and oversized plaintexts, the public key is a
//! SubjectPublicKeyInfo of the spec's algorithm; undeclared families are refused with
//! [`BackendError::Unsupported`].
//!
//! The suite panics with the name of the failed check; it returns the checks it ran.
#![doc(hidden)]

use schemas::kms::{KeySpec, ProtectionLevel};
use schemas::xki::ExternalKeyId;

use super::{BackendError, KeyBackend, KeyContext, NewVersion, VersionMaterial};
use crate::ids::{KeyId, KeyVersionId};
use crate::store::{ConnectionState, InstanceKind};

/// The largest plaintext KMS Encrypt takes.
pub const MAX_PLAINTEXT_BYTES: usize = 6144;
const SPEC: KeySpec = KeySpec::Aes256;
const REGION: &str = "cn-hangzhou";
const PRINCIPAL: &str = "acs:ram::1540355698848:user/conformance";

/// What the suite ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Names of the checks that passed, in order.
    pub checks: Vec<&'static str>,
    /// How many encrypt/decrypt calls were made.
    pub crypto_calls: usize,
}

/// One key version the suite made.
struct Version {
    key_id: KeyId,
    version_id: KeyVersionId,
    material: VersionMaterial,
}

struct Suite<'a> {
    backend: &'a dyn KeyBackend,
    external_key_id: Option<&'a ExternalKeyId>,
    report: Report,
}

/// Runs every check on `backend`, which must be ready (`status()` Connected). Backends whose
/// capabilities say `needs_external_key_id` get `external_key_id`, an enabled AES-256 key with
/// ENCRYPT and DECRYPT.
pub async fn run(backend: &dyn KeyBackend, external_key_id: Option<&ExternalKeyId>) -> Report {
    let mut suite = Suite {
        backend,
        external_key_id,
        report: Report::default(),
    };
    suite.declarations();
    suite.refusals().await;
    let a = suite.new_version(&KeyId::generate(REGION)).await;
    suite.round_trips(&a).await;
    suite.randomised(&a).await;
    suite.wrong_aad(&a).await;
    suite.tampering(&a).await;
    let b = suite.new_version(&KeyId::generate(REGION)).await;
    suite
        .versions_apart(&a, &b, "payload of one key refused under another")
        .await;
    suite.rotation(&a).await;
    suite.undeclared_families(&a).await;
    suite.asymmetric_specs(&a).await;
    for version in [&a, &b] {
        if let Err(e) = backend.destroy_version(&version.material).await {
            panic!("conformance[destroy_version]: {e:?}");
        }
    }
    suite.passed("destroy_version");
    suite.report
}

/// A SubjectPublicKeyInfo of the spec's algorithm and size.
fn check_public_key(spec: KeySpec, der: &[u8]) {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;
    let check = "public key is a SubjectPublicKeyInfo of the spec";
    let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(der) else {
        panic!("conformance[{spec}: {check}]: not DER SubjectPublicKeyInfo")
    };
    assert!(
        rest.is_empty(),
        "conformance[{spec}: {check}]: trailing bytes"
    );
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    match (spki.parsed(), spec) {
        (Ok(PublicKey::RSA(rsa)), KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) => {
            let bits = match spec {
                KeySpec::Rsa2048 => 2048,
                KeySpec::Rsa3072 => 3072,
                _ => 4096,
            };
            assert_eq!(rsa.key_size(), bits, "conformance[{spec}: {check}]");
        }
        (Ok(PublicKey::EC(_)), KeySpec::EcP256) => {
            assert_eq!(
                curve.as_deref(),
                Some("1.2.840.10045.3.1.7"),
                "conformance[{spec}: {check}]"
            );
        }
        (Ok(PublicKey::EC(_)), KeySpec::EcP256K) => {
            assert_eq!(
                curve.as_deref(),
                Some("1.3.132.0.10"),
                "conformance[{spec}: {check}]"
            );
        }
        (other, _) => panic!(
            "conformance[{spec}: {check}]: {:?}",
            other.map(|_| "another algorithm")
        ),
    }
}

fn context<'v>(version: &'v Version, external_key_id: Option<&'v ExternalKeyId>) -> KeyContext<'v> {
    KeyContext {
        key_id: &version.key_id,
        key_arn: "acs:kms:cn-hangzhou:1540355698848:key/conformance",
        version_id: &version.version_id,
        material: &version.material,
        external_key_id,
        principal: PRINCIPAL,
        operation: "Encrypt",
        request_id: "conformance",
    }
}

impl Suite<'_> {
    /// Every operation family the backend does not declare is refused with `Unsupported`.
    /// A declared family must be covered by its own checks here before a backend declares it.
    async fn undeclared_families(&mut self, version: &Version) {
        use schemas::kms::{AsymmetricAlgorithm, SigningAlgorithm};
        let families = self.backend.capabilities().families;
        let ctx = || context(version, self.external_key_id);
        let refused = |what: &str, result: Result<(), BackendError>| match result {
            Err(BackendError::Unsupported(_)) => {}
            other => panic!("conformance[undeclared {what} refused]: {other:?}"),
        };
        let declared = families.sign || families.asymmetric_encrypt || families.public_key;
        assert_eq!(
            declared,
            self.backend
                .capabilities()
                .key_specs
                .iter()
                .any(|s| !s.is_symmetric()),
            "conformance[families]: asymmetric families go with asymmetric key specs"
        );
        let digest = [7u8; 32];
        let b = self.backend;
        if !families.sign {
            refused(
                "sign",
                b.sign(ctx(), SigningAlgorithm::RsaPssSha256, &digest)
                    .await
                    .map(drop),
            );
            refused(
                "verify",
                b.verify(ctx(), SigningAlgorithm::EcdsaSha256, &digest, &[0; 64])
                    .await
                    .map(drop),
            );
        }
        if !families.asymmetric_encrypt {
            refused(
                "asymmetric encrypt",
                b.asymmetric_encrypt(ctx(), AsymmetricAlgorithm::RsaesOaepSha256, b"x")
                    .await
                    .map(drop),
            );
            refused(
                "asymmetric decrypt",
                b.asymmetric_decrypt(ctx(), AsymmetricAlgorithm::RsaesOaepSha1, &[0; 256])
                    .await
                    .map(drop),
            );
        }
        if !families.public_key {
            refused("public key", b.public_key(ctx()).await.map(drop));
        }
        self.passed("undeclared families refused");
    }

    /// Every declared asymmetric spec, with every declared family. `symmetric` is a version of
    /// the symmetric spec, which the asymmetric operations must refuse.
    async fn asymmetric_specs(&mut self, symmetric: &Version) {
        use schemas::kms::{AsymmetricAlgorithm, SigningAlgorithm};
        let caps = self.backend.capabilities();
        let families = caps.families;
        let b = self.backend;
        let digest = [0x42u8; 32];
        if families.sign {
            let sym = self.ctx(symmetric);
            let signed = b.sign(sym, SigningAlgorithm::EcdsaSha256, &digest).await;
            assert!(
                signed.is_err(),
                "conformance[symmetric key does not sign]: {signed:?}"
            );
        }
        for &spec in caps.key_specs.iter().filter(|s| !s.is_symmetric()) {
            let version = self.new_version_of(&KeyId::generate(REGION), spec).await;
            let external_key_id = self.external_key_id;
            let ctx = || context(&version, external_key_id);
            let rsa = matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096);
            let modulus_bytes = match spec {
                KeySpec::Rsa2048 => 256,
                KeySpec::Rsa3072 => 384,
                _ => 512,
            };
            if families.public_key {
                let der = match b.public_key(ctx()).await {
                    Ok(der) => der,
                    Err(e) => panic!("conformance[{spec} public key]: {e:?}"),
                };
                check_public_key(spec, &der);
                let again = b.public_key(ctx()).await.ok();
                assert_eq!(
                    again.as_ref(),
                    Some(&der),
                    "conformance[{spec} public key stable]"
                );
            }
            if families.sign {
                let (fitting, unfitting): (Vec<_>, Vec<_>) = SigningAlgorithm::ALL
                    .iter()
                    .partition(|a| rsa == (**a != SigningAlgorithm::EcdsaSha256));
                for &algorithm in fitting {
                    let check = "signatures verify; changed digests and signatures do not";
                    let signature = match b.sign(ctx(), algorithm, &digest).await {
                        Ok(s) => s,
                        Err(e) => panic!("conformance[{spec} {algorithm} sign]: {e:?}"),
                    };
                    if rsa {
                        assert_eq!(
                            signature.len(),
                            modulus_bytes,
                            "conformance[{spec} {algorithm} length]"
                        );
                    } else {
                        assert_eq!(
                            signature.first(),
                            Some(&0x30),
                            "conformance[{spec} ECDSA signature is DER]"
                        );
                    }
                    let verify = |d: Vec<u8>, s: Vec<u8>| {
                        let ctx = ctx();
                        async move { b.verify(ctx, algorithm, &d, &s).await }
                    };
                    assert_eq!(
                        verify(digest.to_vec(), signature.clone()).await,
                        Ok(true),
                        "conformance[{spec} {algorithm}: {check}]"
                    );
                    let mut other_digest = digest;
                    other_digest[0] ^= 1;
                    assert_eq!(
                        verify(other_digest.to_vec(), signature.clone()).await,
                        Ok(false),
                        "conformance[{spec} {algorithm}: {check}]"
                    );
                    let mut bad = signature.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    assert_eq!(
                        verify(digest.to_vec(), bad).await,
                        Ok(false),
                        "conformance[{spec} {algorithm}: {check}]"
                    );
                    assert_eq!(
                        verify(digest.to_vec(), Vec::new()).await,
                        Ok(false),
                        "conformance[{spec} {algorithm}: empty signature]"
                    );
                    for wrong_length in [&digest[..31], &[0x42u8; 33][..], &[][..]] {
                        match b.sign(ctx(), algorithm, wrong_length).await {
                            Err(BackendError::InvalidParameter(_)) => {}
                            other => panic!(
                                "conformance[{spec} {algorithm} digest of {} bytes refused]: {other:?}",
                                wrong_length.len()
                            ),
                        }
                        match b.verify(ctx(), algorithm, wrong_length, &signature).await {
                            Err(BackendError::InvalidParameter(_)) => {}
                            other => panic!(
                                "conformance[{spec} {algorithm} digest of {} bytes refused]: {other:?}",
                                wrong_length.len()
                            ),
                        }
                    }
                    self.passed(check);
                }
                for &algorithm in unfitting {
                    match b.sign(ctx(), algorithm, &digest).await {
                        Err(BackendError::InvalidParameter(_) | BackendError::Unsupported(_)) => {}
                        other => panic!("conformance[{spec} refuses {algorithm}]: {other:?}"),
                    }
                }
                self.passed("signing algorithms of other key types refused");
            }
            if families.asymmetric_encrypt && rsa {
                let check = "RSAES-OAEP round trip, tampering and oversized plaintexts refused";
                for &algorithm in AsymmetricAlgorithm::ALL {
                    let hash_bytes = match algorithm {
                        AsymmetricAlgorithm::RsaesOaepSha256 => 32,
                        AsymmetricAlgorithm::RsaesOaepSha1 => 20,
                    };
                    let max = modulus_bytes - 2 * hash_bytes - 2;
                    for plaintext in [vec![1u8], vec![0x5a; max]] {
                        let ciphertext =
                            match b.asymmetric_encrypt(ctx(), algorithm, &plaintext).await {
                                Ok(c) => c,
                                Err(e) => panic!(
                                    "conformance[{spec} {algorithm} encrypt {} bytes]: {e:?}",
                                    plaintext.len()
                                ),
                            };
                        assert_eq!(
                            ciphertext.len(),
                            modulus_bytes,
                            "conformance[{spec} {algorithm} ciphertext length]"
                        );
                        match b.asymmetric_decrypt(ctx(), algorithm, &ciphertext).await {
                            Ok(back) if *back == plaintext => {}
                            other => panic!(
                                "conformance[{spec} {algorithm}: {check}]: {:?}",
                                other.map(|p| p.len())
                            ),
                        }
                        let mut bad = ciphertext.clone();
                        bad[modulus_bytes / 2] ^= 1;
                        let other_algorithm = AsymmetricAlgorithm::ALL
                            .iter()
                            .find(|a| **a != algorithm)
                            .copied()
                            .unwrap_or(algorithm);
                        for (ciphertext, algorithm) in [
                            (&bad[..], algorithm),
                            (&ciphertext[..1], algorithm),
                            (&ciphertext[..], other_algorithm),
                        ] {
                            match b.asymmetric_decrypt(ctx(), algorithm, ciphertext).await {
                                Err(BackendError::InvalidCiphertext) => {}
                                other => panic!(
                                    "conformance[{spec} {algorithm}: {check}]: {:?}",
                                    other.map(|p| p.len())
                                ),
                            }
                        }
                    }
                    match b
                        .asymmetric_encrypt(ctx(), algorithm, &vec![0x5a; max + 1])
                        .await
                    {
                        Err(BackendError::InvalidParameter(_)) => {}
                        other => panic!("conformance[{spec} {algorithm}: {check}]: {other:?}"),
                    }
                }
                self.passed(check);
            } else if families.asymmetric_encrypt {
                match b
                    .asymmetric_encrypt(ctx(), AsymmetricAlgorithm::RsaesOaepSha256, b"x")
                    .await
                {
                    Err(BackendError::InvalidParameter(_) | BackendError::Unsupported(_)) => {}
                    other => panic!("conformance[{spec} does not encrypt]: {other:?}"),
                }
                self.passed("EC keys do not encrypt");
            }
            if let Err(e) = b.destroy_version(&version.material).await {
                panic!("conformance[destroy_version {spec}]: {e:?}");
            }
        }
    }

    fn passed(&mut self, check: &'static str) {
        self.report.checks.push(check);
    }

    fn ctx<'v>(&'v self, version: &'v Version) -> KeyContext<'v> {
        context(version, self.external_key_id)
    }

    async fn encrypt(
        &mut self,
        version: &Version,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.report.crypto_calls += 1;
        self.backend
            .encrypt(self.ctx(version), plaintext, aad)
            .await
    }

    async fn decrypt(
        &mut self,
        version: &Version,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.report.crypto_calls += 1;
        self.backend
            .decrypt(self.ctx(version), payload, aad)
            .await
            .map(|p| p.to_vec())
    }

    async fn must_encrypt(
        &mut self,
        check: &str,
        version: &Version,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Vec<u8> {
        match self.encrypt(version, plaintext, aad).await {
            Ok(payload) => payload,
            Err(e) => panic!(
                "conformance[{check}]: encrypt of {} bytes failed: {e:?}",
                plaintext.len()
            ),
        }
    }

    async fn must_refuse(&mut self, check: &str, version: &Version, payload: &[u8], aad: &[u8]) {
        match self.decrypt(version, payload, aad).await {
            Err(BackendError::InvalidCiphertext) => {}
            other => panic!("conformance[{check}]: expected InvalidCiphertext, got {other:?}"),
        }
    }

    /// Capabilities agree with each other and with the product's rules.
    fn declarations(&mut self) {
        let caps = self.backend.capabilities();
        let check = "capabilities declared";
        assert!(
            caps.key_specs.contains(&SPEC),
            "conformance[{check}]: every instance kind makes {SPEC}"
        );
        assert_eq!(
            caps.protection_level == ProtectionLevel::Software,
            self.backend.kind() == InstanceKind::Software,
            "conformance[{check}]: protection level {}",
            caps.protection_level
        );
        assert_eq!(
            caps.needs_external_key_id,
            self.backend.kind() == InstanceKind::External,
            "conformance[{check}]: only external instances take an ExternalKeyId"
        );
        if caps.needs_external_key_id {
            // Seeds: no rotation, no import, no key versions for external keys.
            assert!(
                !caps.rotation && !caps.import,
                "conformance[{check}]: external keys neither rotate nor import"
            );
            assert!(
                self.external_key_id.is_some(),
                "conformance[{check}]: give the suite an external key id"
            );
        }
        assert_eq!(
            self.backend.status().state,
            ConnectionState::Connected,
            "conformance[{check}]: the backend must be ready"
        );
        self.passed(check);
    }

    /// Unsupported specs, and a missing external key id, are refused cleanly.
    async fn refusals(&mut self) {
        let key_id = KeyId::generate(REGION);
        let version_id = KeyVersionId::generate();
        let request = NewVersion {
            key_id: &key_id,
            version_id: &version_id,
            // A spec no symmetric backend makes yet.
            key_spec: KeySpec::EcSm2,
            external_key_id: self.external_key_id,
            principal: PRINCIPAL,
            request_id: "conformance",
        };
        match self.backend.new_version(request).await {
            Err(BackendError::Unsupported(_) | BackendError::InvalidParameter(_)) => {}
            other => panic!("conformance[unsupported spec refused]: {other:?}"),
        }
        assert!(
            !self
                .backend
                .capabilities()
                .key_specs
                .contains(&KeySpec::EcSm2),
            "conformance[unsupported spec refused]: pick another spec"
        );
        self.passed("unsupported spec refused");
        if self.backend.capabilities().needs_external_key_id {
            let request = NewVersion {
                key_spec: SPEC,
                external_key_id: None,
                ..request
            };
            match self.backend.new_version(request).await {
                Err(BackendError::InvalidParameter(_)) => {}
                other => panic!("conformance[external key id required]: {other:?}"),
            }
            self.passed("external key id required");
        }
    }

    async fn new_version(&mut self, key_id: &KeyId) -> Version {
        self.new_version_of(key_id, SPEC).await
    }

    async fn new_version_of(&mut self, key_id: &KeyId, key_spec: KeySpec) -> Version {
        let version_id = KeyVersionId::generate();
        let request = NewVersion {
            key_id,
            version_id: &version_id,
            key_spec,
            external_key_id: self.external_key_id,
            principal: PRINCIPAL,
            request_id: "conformance",
        };
        let material = match self.backend.new_version(request).await {
            Ok(material) => material,
            Err(e) => panic!("conformance[new version]: {e:?}"),
        };
        assert!(
            material.sealed.is_some() || material.backend_ref.is_some(),
            "conformance[new version]: material is neither sealed bytes nor a reference"
        );
        Version {
            key_id: key_id.clone(),
            version_id,
            material,
        }
    }

    async fn round_trips(&mut self, a: &Version) {
        let check = "round trips (1 byte to 6 KB, with and without AAD)";
        let big: Vec<u8> = (0..MAX_PLAINTEXT_BYTES).map(|i| (i % 251) as u8).collect();
        for aad in [&b""[..], &[0x5a; 32][..]] {
            for plaintext in [&b"x"[..], b"a secret of 31 bytes, say hello", &big[..]] {
                let payload = self.must_encrypt(check, a, plaintext, aad).await;
                if plaintext.len() >= 16 {
                    assert!(
                        !payload.windows(16).any(|w| w == &plaintext[..16]),
                        "conformance[{check}]: the payload shows the plaintext"
                    );
                }
                match self.decrypt(a, &payload, aad).await {
                    Ok(back) if back == plaintext => {}
                    other => panic!(
                        "conformance[{check}]: {} bytes came back as {:?}",
                        plaintext.len(),
                        other.map(|b| b.len())
                    ),
                }
            }
            // Empty: a round trip, or a clean InvalidParameter.
            match self.encrypt(a, b"", aad).await {
                Ok(payload) => match self.decrypt(a, &payload, aad).await {
                    Ok(back) if back.is_empty() => {}
                    other => panic!("conformance[empty plaintext]: {other:?}"),
                },
                Err(BackendError::InvalidParameter(_)) => {}
                Err(e) => panic!("conformance[empty plaintext]: {e:?}"),
            }
        }
        self.passed(check);
        self.passed("empty plaintext round-trips or is refused as InvalidParameter");
    }

    async fn randomised(&mut self, a: &Version) {
        let check = "same input, different payloads";
        let first = self.must_encrypt(check, a, b"same plaintext", b"").await;
        let second = self.must_encrypt(check, a, b"same plaintext", b"").await;
        assert_ne!(
            first, second,
            "conformance[{check}]: encryption is deterministic (IV reuse?)"
        );
        self.passed(check);
    }

    async fn wrong_aad(&mut self, a: &Version) {
        let check = "wrong AAD refused";
        let aad = [0x11u8; 32];
        let with = self
            .must_encrypt(check, a, b"bound to a context", &aad)
            .await;
        let without = self
            .must_encrypt(check, a, b"bound to no context", b"")
            .await;
        let mut other = aad;
        other[31] ^= 1;
        self.must_refuse(check, a, &with, &other).await;
        self.must_refuse(check, a, &with, b"").await;
        self.must_refuse(check, a, &without, &aad).await;
        self.passed(check);
    }

    /// Every byte of a payload matters, and its length too.
    async fn tampering(&mut self, a: &Version) {
        let check = "tampered payload refused (every byte, truncation, extension)";
        let aad = [0x22u8; 32];
        let payload = self
            .must_encrypt(check, a, b"thirty-two bytes of plaintext!!!", &aad)
            .await;
        for i in 0..payload.len() {
            let mut bad = payload.clone();
            bad[i] ^= 0x01;
            self.must_refuse(check, a, &bad, &aad).await;
            let mut bad = payload.clone();
            bad[i] ^= 0x80;
            self.must_refuse(check, a, &bad, &aad).await;
        }
        for cut in [
            0,
            1,
            payload.len() / 2,
            payload.len() - 16,
            payload.len() - 1,
        ] {
            self.must_refuse(check, a, &payload[..cut], &aad).await;
        }
        let mut longer = payload.clone();
        longer.push(0);
        self.must_refuse(check, a, &longer, &aad).await;
        self.passed(check);
    }

    async fn versions_apart(&mut self, x: &Version, y: &Version, check: &'static str) {
        let px = self.must_encrypt(check, x, b"belongs to x", b"").await;
        let py = self.must_encrypt(check, y, b"belongs to y", b"").await;
        self.must_refuse(check, y, &px, b"").await;
        self.must_refuse(check, x, &py, b"").await;
        self.passed(check);
    }

    /// Rotation-capable backends: a second version of the same key works on its own and stays
    /// apart from the first. Others have declared they do not rotate; nothing more to check.
    async fn rotation(&mut self, a: &Version) {
        if !self.backend.capabilities().rotation {
            self.passed("rotation not declared");
            return;
        }
        let a2 = self.new_version(&a.key_id).await;
        let check = "second version of the same key";
        for version in [a, &a2] {
            let payload = self
                .must_encrypt(check, version, b"per-version secret", b"")
                .await;
            match self.decrypt(version, &payload, b"").await {
                Ok(back) if back == b"per-version secret" => {}
                other => panic!("conformance[{check}]: {other:?}"),
            }
        }
        self.passed(check);
        self.versions_apart(a, &a2, "payload of one version refused under the next")
            .await;
    }
}
