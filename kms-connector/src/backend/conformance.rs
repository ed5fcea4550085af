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
    for version in [&a, &b] {
        if let Err(e) = backend.destroy_version(&version.material).await {
            panic!("conformance[destroy_version]: {e:?}");
        }
    }
    suite.passed("destroy_version");
    suite.report
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
        let checks: [(&str, bool); 3] = [
            ("sign", families.sign),
            ("asymmetric encrypt", families.asymmetric_encrypt),
            ("public key", families.public_key),
        ];
        for (family, declared) in checks {
            assert!(
                !declared,
                "conformance[{family}]: declared, but the suite has no checks for it yet"
            );
        }
        let digest = [7u8; 32];
        let b = self.backend;
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
        refused("public key", b.public_key(ctx()).await.map(drop));
        self.passed("undeclared families refused");
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
        let version_id = KeyVersionId::generate();
        let request = NewVersion {
            key_id,
            version_id: &version_id,
            key_spec: SPEC,
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
