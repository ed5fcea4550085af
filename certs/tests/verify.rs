//! The generated certificates verify (and fail to verify) with the same rustls verifiers the
//! services use.

// Test code: a panic is the failure report (helpers included, not only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use certs::{Authority, CertifiedKey, DevPki, LeafSpec, PkiOptions, Usage, self_signed};
use common::{
    cert_der, certificate_error, client_verifier, is_expired, is_wrong_name, is_wrong_purpose,
    server_verifier,
};
use rustls::CertificateError;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::danger::ClientCertVerified;

fn verify_server(
    ca_pem: &str,
    leaf: &CertifiedKey,
    name: &str,
) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).expect("valid server name");
    server_verifier(ca_pem).verify_server_cert(
        &cert_der(&leaf.cert_pem),
        &[],
        &name,
        &[],
        UnixTime::now(),
    )
}

fn verify_client(ca_pem: &str, leaf: &CertifiedKey) -> Result<ClientCertVerified, rustls::Error> {
    client_verifier(ca_pem).verify_client_cert(&cert_der(&leaf.cert_pem), &[], UnixTime::now())
}

fn options_with_extras() -> PkiOptions {
    PkiOptions {
        extra_dns: vec!["xki.example.com".to_owned()],
        extra_ips: vec!["10.1.2.3".parse().unwrap()],
        ..PkiOptions::default()
    }
}

#[test]
fn server_certs_verify_for_every_expected_name_and_ip() {
    let pki = DevPki::generate(&options_with_extras()).unwrap();
    let ca = pki.ca.cert_pem();
    for (service, leaf) in [
        ("ekm", &pki.ekm_server),
        ("xki-proxy", &pki.proxy_server),
        ("kms-connector", &pki.connector_server),
    ] {
        for name in [
            service,
            "localhost",
            "xki.example.com",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
        ] {
            verify_server(ca, leaf, name)
                .unwrap_or_else(|err| panic!("{service} for {name}: {err}"));
        }
    }
}

#[test]
fn server_certs_do_not_verify_for_other_names() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let ca = pki.ca.cert_pem();
    for name in [
        "xki-proxy",
        "kms-connector",
        "ekm.example.com",
        "example.com",
        "127.0.0.2",
        "::2",
    ] {
        let err = certificate_error(verify_server(ca, &pki.ekm_server, name));
        assert!(is_wrong_name(&err), "ekm cert for {name}: {err:?}");
    }
    let err = certificate_error(verify_server(ca, &pki.proxy_server, "ekm"));
    assert!(is_wrong_name(&err), "{err:?}");
}

#[test]
fn client_certs_verify_as_clients() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    verify_client(pki.ca.cert_pem(), &pki.proxy_client).unwrap();
    verify_client(pki.ca.cert_pem(), &pki.connector_client).unwrap();
}

#[test]
fn server_and_client_certs_are_not_interchangeable() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let ca = pki.ca.cert_pem();
    let err = certificate_error(verify_client(ca, &pki.ekm_server));
    assert!(
        is_wrong_purpose(&err),
        "server cert accepted as client: {err:?}"
    );
    // The proxy's client cert names "xki-proxy", so only its usage can reject it as a server.
    let err = certificate_error(verify_server(ca, &pki.proxy_client, "xki-proxy"));
    assert!(
        is_wrong_purpose(&err),
        "client cert accepted as server: {err:?}"
    );
}

#[test]
fn a_leaf_for_both_usages_verifies_either_way() {
    let ca = Authority::new("both CA").unwrap();
    let mut spec = LeafSpec::server("peer", &["peer"], &[]);
    spec.usage = Usage::Both;
    let leaf = ca.issue(&spec).unwrap();
    verify_server(ca.cert_pem(), &leaf, "peer").unwrap();
    verify_client(ca.cert_pem(), &leaf).unwrap();
}

#[test]
fn expired_leaves_fail_with_an_expiry_error() {
    let ca = Authority::new("expiry CA").unwrap();
    let server = ca
        .issue(&LeafSpec::server("ekm", &["ekm"], &[]).expired())
        .unwrap();
    let err = certificate_error(verify_server(ca.cert_pem(), &server, "ekm"));
    assert!(is_expired(&err), "{err:?}");

    let client = ca
        .issue(&LeafSpec::client("xki-proxy", &["xki-proxy"]).expired())
        .unwrap();
    let err = certificate_error(verify_client(ca.cert_pem(), &client));
    assert!(is_expired(&err), "{err:?}");
}

#[test]
fn self_signed_leaves_fail() {
    let ca = Authority::new("trusted CA").unwrap();
    let server = self_signed(&LeafSpec::server("ekm", &["ekm"], &[])).unwrap();
    let err = certificate_error(verify_server(ca.cert_pem(), &server, "ekm"));
    assert_eq!(err, CertificateError::UnknownIssuer);

    let client = self_signed(&LeafSpec::client("xki-proxy", &["xki-proxy"])).unwrap();
    let err = certificate_error(verify_client(ca.cert_pem(), &client));
    assert_eq!(err, CertificateError::UnknownIssuer);
}

#[test]
fn leaves_from_another_authority_fail() {
    let trusted = Authority::new("HYOK dev CA").unwrap();
    // Same common name, different key: the subjects still differ (the key id is in them).
    let other = Authority::new("HYOK dev CA").unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let server = other.issue_server("ekm", &["ekm"], &[ip]).unwrap();
    let err = certificate_error(verify_server(trusted.cert_pem(), &server, "ekm"));
    assert_eq!(err, CertificateError::UnknownIssuer);

    let client = other.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let err = certificate_error(verify_client(trusted.cert_pem(), &client));
    assert_eq!(err, CertificateError::UnknownIssuer);

    // And the other authority's own leaves are fine against it.
    verify_server(other.cert_pem(), &server, "127.0.0.1").unwrap();
}

#[test]
fn a_ca_certificate_is_not_accepted_as_a_leaf() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let as_leaf = CertifiedKey {
        cert_pem: pki.ca.cert_pem().to_owned(),
        key_pem: pki.ca.key_pem().to_owned(),
    };
    assert!(verify_server(pki.ca.cert_pem(), &as_leaf, "ekm").is_err());
    assert!(verify_client(pki.ca.cert_pem(), &as_leaf).is_err());
}
