//! The X.509 contents, read back with an independent parser (x509-parser): basic constraints,
//! key usages, SANs, names, key identifiers, validity, and that each key matches its certificate.

// Test code: a panic is the failure report (helpers included, not only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use certs::{CertifiedKey, DevPki, PkiOptions};
use common::cert_der;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn with_parsed<R>(pem: &str, check: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let der = cert_der(pem);
    let (rest, cert) = X509Certificate::from_der(der.as_ref()).expect("parses as X.509");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    check(&cert)
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    let mut names = cert.subject().iter_common_name();
    let name = names
        .next()
        .expect("a CN")
        .as_str()
        .expect("CN is a string")
        .to_owned();
    assert!(names.next().is_none(), "one CN only");
    name
}

fn issuer_common_name(cert: &X509Certificate<'_>) -> String {
    cert.issuer()
        .iter_common_name()
        .next()
        .expect("an issuer CN")
        .as_str()
        .expect("issuer CN is a string")
        .to_owned()
}

fn key_ids(cert: &X509Certificate<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut subject_key_id, mut authority_key_id) = (None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    (subject_key_id, authority_key_id)
}

fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let ext = cert
        .subject_alternative_name()
        .expect("valid SAN")
        .expect("a SAN extension");
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(dns_name) => dns.push((*dns_name).to_owned()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                n => panic!("IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips)
}

fn validity_seconds(cert: &X509Certificate<'_>) -> i64 {
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

/// The PKCS#8 key is a P-256 key whose public half is the certificate's.
fn assert_key_matches(leaf_or_ca: &CertifiedKey) {
    assert!(
        leaf_or_ca
            .key_pem
            .starts_with(&format!("{}\n", certs::PKCS8_PEM_HEADER)),
        "PKCS#8 PEM"
    );
    let key_der = common::key_der(&leaf_or_ca.key_pem);
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        key_der.secret_der(),
        &SystemRandom::new(),
    )
    .expect("a P-256 PKCS#8 key");
    with_parsed(&leaf_or_ca.cert_pem, |cert| {
        assert_eq!(
            key.public_key().as_ref(),
            cert.public_key().subject_public_key.data.as_ref()
        );
    });
}

#[test]
fn ca_is_a_pathlen_0_signing_only_p256_root() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    with_parsed(pki.ca.cert_pem(), |cert| {
        let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));

        let ku = cert.key_usage().unwrap().expect("keyUsage");
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.key_encipherment());
        assert!(
            cert.extended_key_usage().unwrap().is_none(),
            "a root needs no EKU"
        );

        assert_eq!(common_name(cert), "HYOK dev CA");
        assert_eq!(cert.subject(), cert.issuer(), "self-issued");
        let unit = cert
            .subject()
            .iter_organizational_unit()
            .next()
            .expect("an OU");
        let unit = unit.as_str().unwrap();
        assert!(
            unit.starts_with("CA key ") && unit.len() == "CA key ".len() + 16,
            "{unit}"
        );
        let (ski, _) = key_ids(cert);
        assert!(ski.is_some(), "subjectKeyIdentifier");
        assert_eq!(validity_seconds(cert), 3650 * DAY + HOUR);
    });
    assert_key_matches(&CertifiedKey {
        cert_pem: pki.ca.cert_pem().to_owned(),
        key_pem: pki.ca.key_pem().to_owned(),
    });
}

#[test]
fn leaves_have_the_documented_names_usages_and_lifetimes() {
    let opts = PkiOptions {
        extra_dns: vec!["xki.example.com".to_owned(), "ekm".to_owned()],
        extra_ips: vec!["192.0.2.7".parse().unwrap(), "::1".parse().unwrap()],
        ..PkiOptions::default()
    };
    let pki = DevPki::generate(&opts).unwrap();
    let (ca_ski, _) = with_parsed(pki.ca.cert_pem(), key_ids);
    assert!(ca_ski.is_some());
    let expected_ips: Vec<IpAddr> = ["127.0.0.1", "::1", "192.0.2.7"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();

    let leaves = [
        (&pki.ekm_server, "ekm", true),
        (&pki.proxy_server, "xki-proxy", true),
        (&pki.connector_server, "kms-connector", true),
        (&pki.proxy_client, "xki-proxy", false),
        (&pki.connector_client, "kms-connector", false),
    ];
    for (leaf, name, is_server) in leaves {
        with_parsed(&leaf.cert_pem, |cert| {
            assert_eq!(common_name(cert), name);
            assert_eq!(issuer_common_name(cert), "HYOK dev CA");
            let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
            assert!(!bc.value.ca, "{name}: CA:false");

            let ku = cert.key_usage().unwrap().expect("keyUsage").value;
            assert!(ku.digital_signature());
            assert!(
                !ku.key_cert_sign() && !ku.crl_sign(),
                "{name} cannot sign certificates"
            );

            let eku = cert
                .extended_key_usage()
                .unwrap()
                .expect("extendedKeyUsage")
                .value;
            assert_eq!(eku.server_auth, is_server, "{name}: serverAuth");
            assert_eq!(eku.client_auth, !is_server, "{name}: clientAuth");
            assert!(!eku.any && eku.other.is_empty());

            let (dns, ips) = sans(cert);
            if is_server {
                // The service name, localhost, then the extras; "ekm" is not repeated.
                let mut expected = vec![name, "localhost", "xki.example.com"];
                if name != "ekm" {
                    expected.push("ekm");
                }
                assert_eq!(dns, expected, "{name}: DNS SANs");
                assert_eq!(ips, expected_ips, "{name}: IP SANs");
            } else {
                assert_eq!(
                    dns,
                    vec![name],
                    "{name}: the client's DNS SAN equals its CN"
                );
                assert!(ips.is_empty());
            }

            let (ski, aki) = key_ids(cert);
            assert!(ski.is_some());
            assert_eq!(
                aki, ca_ski,
                "{name}: authorityKeyIdentifier is the CA's key id"
            );
            assert_eq!(validity_seconds(cert), 825 * DAY + HOUR);
        });
        assert_key_matches(leaf);
    }
}

#[test]
fn every_generation_makes_new_keys() {
    let first = DevPki::generate(&PkiOptions::default()).unwrap();
    let second = DevPki::generate(&PkiOptions::default()).unwrap();
    assert_ne!(first.ca.key_pem(), second.ca.key_pem());
    assert_ne!(first.ekm_server.key_pem, second.ekm_server.key_pem);
    let keys = [
        &first.ekm_server.key_pem,
        &first.proxy_server.key_pem,
        &first.connector_server.key_pem,
        &first.proxy_client.key_pem,
        &first.connector_client.key_pem,
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b, "two leaves share a key");
        }
    }
}

#[test]
fn custom_client_names_and_validity_are_honoured() {
    let opts = PkiOptions {
        proxy_client_name: "proxy-a.internal".to_owned(),
        connector_client_name: "connector-7".to_owned(),
        validity_days: 30,
        ..PkiOptions::default()
    };
    let pki = DevPki::generate(&opts).unwrap();
    with_parsed(&pki.proxy_client.cert_pem, |cert| {
        assert_eq!(common_name(cert), "proxy-a.internal");
        assert_eq!(sans(cert).0, vec!["proxy-a.internal"]);
        assert_eq!(validity_seconds(cert), 30 * DAY + HOUR);
    });
    with_parsed(&pki.connector_client.cert_pem, |cert| {
        assert_eq!(common_name(cert), "connector-7");
    });
    let too_long = PkiOptions {
        validity_days: 4000,
        ..PkiOptions::default()
    };
    assert!(matches!(
        DevPki::generate(&too_long),
        Err(certs::Error::InvalidValidity(_))
    ));
}

#[test]
fn two_cas_with_one_common_name_have_different_subjects() {
    let first = certs::Authority::new("HYOK dev CA").unwrap();
    let second = certs::Authority::new("HYOK dev CA").unwrap();
    let subject =
        |ca: &certs::Authority| with_parsed(ca.cert_pem(), |cert| cert.subject().to_string());
    assert_ne!(subject(&first), subject(&second));
}
