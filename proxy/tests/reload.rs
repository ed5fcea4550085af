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
