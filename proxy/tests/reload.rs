//! Changes without restart (spec §4.1, §4.3): credential rotation with a request in flight,
//! key stores, rules and the TLS certificate reloaded through `Reloader::apply`, and a bad
//! configuration refused while the running one stays in force.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::client::{Alpn, Encrypted, encrypt_body, http_client};
use common::raw::{Conn, TlsOptions, client_config};
use common::{Proxy, Setup, Store, eventually, new_credential};
use ekm::fault::Fault;
use schemas::sigv4::Credential;

#[actix_web::test]
async fn credential_rotation_without_restart_keeps_requests_in_flight() {
    let mut proxy = Proxy::start(Setup::with_stores(vec![Store::new("")])).await;
    let key = proxy.key("rotation").await;
    let old = proxy.setup.store("").credentials[0].clone();
    let new = new_credential();
    let with_old = proxy.client("").with_credential(old.clone());
    let with_new = proxy.client("").with_credential(new.clone());
    with_old.health().await.ok();
    with_new
        .health()
        .await
        .error(401, "AuthenticationFailedException");

    // Step 1: both credentials.
    let mut setup = proxy.setup.clone();
    setup.store_mut("").credentials = vec![old.clone(), new.clone()];
    proxy.apply(setup.clone()).unwrap();
    with_old.health().await.ok();
    with_new.health().await.ok();

    // A request signed with the old credential, held in the backend across the reload.
    proxy
        .backend
        .set_fault(Fault::Delay(Duration::from_millis(1500)));
    let calls = proxy.backend.crypto_calls();
    let in_flight = {
        let client = with_old.clone();
        let key = key.clone();
        actix_web::rt::spawn(async move {
            client
                .encrypt(&key, &encrypt_body(b"in flight", None, false))
                .await
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.backend.crypto_calls() > calls && proxy.backend.crypto_active() == 1
        })
        .await,
        "the request reached the backend (so it is past authentication)"
    );
    proxy.backend.set_fault(Fault::None);

    // Step 2: the old credential is retired.
    setup.store_mut("").credentials = vec![new.clone()];
    proxy.apply(setup).unwrap();
    with_old
        .health()
        .await
        .error(401, "AuthenticationFailedException");
    with_old
        .encrypt(&key, &encrypt_body(b"x", None, false))
        .await
        .error(401, "AuthenticationFailedException");
    with_new.health().await.ok();

    let reply = in_flight.await.unwrap();
    let e = Encrypted::from_json(&reply.ok());
    assert_eq!(with_new.decrypt_ok(&key, &e, None).await, b"in flight");
}

#[actix_web::test]
async fn stores_regions_keys_and_rules_reload() {
    let mut proxy = Proxy::default().await;
    let key = proxy.key("reload").await;
    let root = proxy.client("");
    let tenant = proxy.client("/tenant-a");
    root.metadata(&key).await.ok();
    tenant.health().await.ok();

    let mut setup = proxy.setup.clone();
    // Drop a prefix, add another, move a store to another region, restrict its keys, deny a
    // principal, add a quota.
    setup.stores.retain(|s| s.prefix != "/tenant-a");
    let added = Store::new("/tenant-b");
    setup.stores.push(added);
    let store = setup.store_mut("");
    store.regions = vec!["ap-southeast-1".into()];
    store.keys = vec!["only-this-key".into()];
    proxy.apply(setup.clone()).unwrap();

    tenant.health().await.error(404, "InvalidUriPathException");
    proxy.client("/tenant-b").health().await.ok();
    root.health()
        .await
        .error(401, "AuthenticationFailedException");
    let mut moved = proxy.client("");
    moved.region = "ap-southeast-1".into();
    moved.health().await.ok();
    moved
        .metadata(&key)
        .await
        .error(404, "KeyNotFoundException");

    let store = setup.store_mut("");
    store.keys = vec!["*".into()];
    store.rules = "[[key_store.rule]]\nid = \"deny-app\"\neffect = \"deny\"\n\
                   principals = [\"arn:aws:iam::*:role/app\"]\n"
        .into();
    proxy.apply(setup.clone()).unwrap();
    moved
        .metadata(&key)
        .await
        .error(403, "AccessDeniedException");
    moved.health().await.ok();

    setup.store_mut("").rules.clear();
    setup.store_mut("").quota = Some((1, 1));
    proxy.apply(setup).unwrap();
    moved.metadata(&key).await.ok();
    moved.metadata(&key).await.error(429, "ThrottlingException");
}

#[actix_web::test]
async fn a_bad_configuration_is_refused_and_the_running_one_stays() {
    let mut proxy = Proxy::default().await;
    let client = proxy.client("");
    let mut bad = proxy.setup.clone();
    // Parses, but the secret is not one KMS can hold (43 to 64 Base64 characters).
    let akid = new_credential().access_key_id;
    bad.store_mut("").credentials = vec![Credential::new(akid, "too-short")];
    assert!(proxy.apply(bad).is_err());
    client.health().await.ok();
    proxy.client("/tenant-a").health().await.ok();
}

#[actix_web::test]
async fn the_server_certificate_reloads_for_new_connections() {
    let mut proxy = Proxy::default().await;
    let old_ca_pem = proxy.ca.cert_pem().to_owned();
    let new_ca = certs::Authority::new("XKI proxy rotated CA").unwrap();
    let server = new_ca
        .issue_server(common::HOST, &[common::HOST], &[])
        .unwrap();
    proxy.write_file("server.pem", &server.cert_pem);
    proxy.write_file("server.key", &server.key_pem);
    // A connection opened before the reload keeps working.
    let mut before = proxy.client("");
    before = before.with_http(http_client(&old_ca_pem, proxy.port, Alpn::Http1, None));
    before.health().await.ok();
    proxy.apply(proxy.setup.clone()).unwrap();
    before.health().await.ok();

    let trusts_new = proxy.client("").with_http(http_client(
        new_ca.cert_pem(),
        proxy.port,
        Alpn::Http1,
        None,
    ));
    trusts_new.health().await.ok();
    let old_only = client_config(&old_ca_pem, None, &TlsOptions::default());
    let error = Conn::connect(proxy.port, old_only).await.unwrap_err();
    assert!(
        matches!(
            common::raw::rustls_error(&error),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "a client trusting only the old CA refuses the new certificate: {error}"
    );
}

/// A reload changes the server certificate and the client verifier together or not at all: a
/// new certificate with an unusable client CA file is refused whole, and the old certificate
/// and CAs stay in force. (The certificate used to be swapped before the CA file failed.)
#[actix_web::test]
async fn certificate_and_client_verifier_reload_together_or_not_at_all() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let mut setup = Setup::new();
    setup.mtls = Some(common::Mtls {
        ca_pems: vec![client_ca.cert_pem().to_owned()],
        allowed_names: vec![common::KMS_CLIENT_NAME.into()],
    });
    let mut proxy = Proxy::start(setup).await;
    let kms = client_ca
        .issue_client(common::KMS_CLIENT_NAME, &[])
        .unwrap();
    let old_server_ca = proxy.ca.cert_pem().to_owned();
    let with_old_trust = || client_config(&old_server_ca, Some(&kms), &TlsOptions::default());
    assert_eq!(
        common::raw::attempt(proxy.port, with_old_trust())
            .await
            .unwrap(),
        401
    );

    let new_ca = certs::Authority::new("XKI proxy rotated CA").unwrap();
    let server = new_ca
        .issue_server(common::HOST, &[common::HOST], &[])
        .unwrap();
    proxy.write_file("server.pem", &server.cert_pem);
    proxy.write_file("server.key", &server.key_pem);
    let mut broken = proxy.setup.clone();
    broken.mtls = Some(common::Mtls {
        ca_pems: vec!["not a certificate".into()],
        allowed_names: vec![common::KMS_CLIENT_NAME.into()],
    });
    let error = proxy.apply(broken).unwrap_err().to_string();
    assert!(error.contains("no certificate"), "{error}");
    // Neither the certificate nor the client CA changed.
    assert_eq!(
        common::raw::attempt(proxy.port, with_old_trust())
            .await
            .unwrap(),
        401,
        "the old server certificate and client CA are still in force"
    );
}

/// Switching mTLS on or off is not something a reload can do: it is refused loudly (an error
/// naming the restart it needs) and nothing changes. (It used to be accepted and ignored.)
#[actix_web::test]
async fn switching_mtls_on_or_off_by_reload_is_refused() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let mtls = common::Mtls {
        ca_pems: vec![client_ca.cert_pem().to_owned()],
        allowed_names: vec![common::KMS_CLIENT_NAME.into()],
    };
    // Off → on.
    let mut proxy = Proxy::default().await;
    let mut on = proxy.setup.clone();
    on.mtls = Some(mtls.clone());
    let error = proxy.apply(on).unwrap_err().to_string();
    assert!(
        error.contains("server.mtls") && error.contains("restart"),
        "{error}"
    );
    proxy.client("").health().await.ok();
    // On → off.
    let mut setup = Setup::new();
    setup.mtls = Some(mtls);
    let mut proxy = Proxy::start(setup).await;
    let mut off = proxy.setup.clone();
    off.mtls = None;
    let error = proxy.apply(off).unwrap_err().to_string();
    assert!(
        error.contains("server.mtls") && error.contains("restart"),
        "{error}"
    );
    let anonymous = client_config(proxy.ca.cert_pem(), None, &TlsOptions::default());
    assert!(
        common::raw::attempt(proxy.port, anonymous).await.is_err(),
        "still requires a client certificate"
    );
}

/// `/admin/reload` re-reads the file and says how it went: 200 when applied, 409 with the
/// reason when refused (the running configuration stays).
#[actix_web::test]
async fn the_admin_reload_answers_whether_it_applied() {
    let proxy = Proxy::default().await;
    let token = proxy.admin_token.clone();
    let mut next = proxy.setup.clone();
    next.stores.retain(|s| s.prefix != "/tenant-a");
    next.write_config(proxy.dir());
    let (status, body) = proxy.admin_post("/admin/reload", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    proxy
        .client("/tenant-a")
        .health()
        .await
        .error(404, "InvalidUriPathException");

    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let mut refused = next.clone();
    refused.stores.push(Store::new("/tenant-c"));
    refused.mtls = Some(common::Mtls {
        ca_pems: vec![client_ca.cert_pem().to_owned()],
        allowed_names: vec![common::KMS_CLIENT_NAME.into()],
    });
    refused.write_config(proxy.dir());
    let (status, body) = proxy.admin_post("/admin/reload", Some(&token)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("ReloadRefused") && body.contains("restart"),
        "{body}"
    );
    proxy
        .unsigned("/tenant-c")
        .health()
        .await
        .error(404, "InvalidUriPathException");
    proxy.client("").health().await.ok();
}
