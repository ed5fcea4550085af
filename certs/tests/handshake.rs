//! Real TLS handshakes over loopback TCP: an ekm-like server that requires client
//! certificates, and proxy-like clients with good and bad certificates.

// Test code: a panic is the failure report (helpers included, not only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use certs::{Authority, CertifiedKey, DevPki, LeafSpec, PkiOptions, self_signed};
use common::{client_config, is_expired, mtls_server_config};
use rustls::pki_types::ServerName;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, ServerConfig,
    ServerConnection, StreamOwned,
};

/// Long enough for a slow CI box, short enough that a broken test does not hang.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls error behind an I/O error, if there is one.
fn tls_error(err: &std::io::Error) -> Option<rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

#[derive(Debug)]
struct Outcome {
    /// What the server saw: the client's certificate (DER) on success.
    server: Result<Vec<u8>, std::io::Error>,
    /// What the client saw: the server's echo on success.
    client: Result<String, std::io::Error>,
}

/// One connection: the client sends a line, the server checks the handshake and echoes it.
fn exchange(
    server_config: Arc<ServerConfig>,
    client_config: Arc<ClientConfig>,
    server_name: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || -> Result<Vec<u8>, std::io::Error> {
        let (socket, _) = listener.accept()?;
        socket.set_read_timeout(Some(IO_TIMEOUT))?;
        socket.set_write_timeout(Some(IO_TIMEOUT))?;
        let connection = ServerConnection::new(server_config).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(connection, socket);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let peer = tls
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref().to_vec())
            .ok_or_else(|| std::io::Error::other("no client certificate"))?;
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line)?;
        tls.write_all(format!("echo {line}").as_bytes())?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(peer)
    });

    let client = (|| -> Result<String, std::io::Error> {
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(IO_TIMEOUT))?;
        socket.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
        let connection =
            ClientConnection::new(client_config, name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(connection, socket);
        tls.write_all(b"ping\n")?;
        tls.flush()?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply)?;
        Ok(reply)
    })();

    Outcome {
        server: server.join().expect("server thread"),
        client,
    }
}

fn ekm_server(pki: &DevPki) -> Arc<ServerConfig> {
    mtls_server_config(pki.ca.cert_pem(), &pki.ekm_server)
}

fn proxy_client(pki: &DevPki, cert: Option<&CertifiedKey>) -> Arc<ClientConfig> {
    client_config(pki.ca.cert_pem(), cert)
}

/// The server refused the client's certificate with `expected`, and the client got an alert.
fn assert_client_rejected(outcome: &Outcome, expected: impl Fn(&CertificateError) -> bool) {
    let server_err = outcome
        .server
        .as_ref()
        .expect_err("server accepted a bad client");
    match tls_error(server_err) {
        Some(rustls::Error::InvalidCertificate(err)) => assert!(expected(&err), "server: {err:?}"),
        other => panic!("server failed otherwise: {server_err} ({other:?})"),
    }
    let client_err = outcome.client.as_ref().expect_err("client got through");
    assert!(
        matches!(tls_error(client_err), Some(rustls::Error::AlertReceived(_))),
        "client: {client_err}"
    );
}

#[test]
fn proxy_client_cert_completes_mtls_with_ekm() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    for name in ["ekm", "localhost", "127.0.0.1"] {
        let outcome = exchange(
            ekm_server(&pki),
            proxy_client(&pki, Some(&pki.proxy_client)),
            name,
        );
        assert_eq!(
            outcome.client.as_deref().unwrap(),
            "echo ping\n",
            "via {name}"
        );
        let peer = outcome.server.unwrap();
        assert_eq!(peer, common::cert_der(&pki.proxy_client.cert_pem).as_ref());
    }
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let other = Authority::new("HYOK dev CA").unwrap();
    let foreign = other.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let outcome = exchange(ekm_server(&pki), proxy_client(&pki, Some(&foreign)), "ekm");
    assert_client_rejected(&outcome, |err| *err == CertificateError::UnknownIssuer);
}

#[test]
fn self_signed_and_expired_client_certs_are_refused() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let lone = self_signed(&LeafSpec::client("xki-proxy", &["xki-proxy"])).unwrap();
    let outcome = exchange(ekm_server(&pki), proxy_client(&pki, Some(&lone)), "ekm");
    assert_client_rejected(&outcome, |err| *err == CertificateError::UnknownIssuer);

    let expired = pki
        .ca
        .issue(&LeafSpec::client("xki-proxy", &["xki-proxy"]).expired())
        .unwrap();
    let outcome = exchange(ekm_server(&pki), proxy_client(&pki, Some(&expired)), "ekm");
    assert_client_rejected(&outcome, is_expired);
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let outcome = exchange(ekm_server(&pki), proxy_client(&pki, None), "ekm");
    let server_err = outcome
        .server
        .expect_err("server accepted an anonymous client");
    assert_eq!(
        tls_error(&server_err),
        Some(rustls::Error::NoCertificatesPresented)
    );
    let client_err = outcome.client.expect_err("client got through");
    assert!(
        matches!(
            tls_error(&client_err),
            Some(rustls::Error::AlertReceived(_))
        ),
        "{client_err}"
    );
}

#[test]
fn the_client_refuses_a_server_outside_its_trust_or_name() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();

    // A client that trusts another CA.
    let stranger = DevPki::generate(&PkiOptions::default()).unwrap();
    let outcome = exchange(
        ekm_server(&pki),
        client_config(stranger.ca.cert_pem(), Some(&stranger.proxy_client)),
        "ekm",
    );
    let client_err = outcome.client.expect_err("client trusted a foreign server");
    assert!(
        matches!(
            tls_error(&client_err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{client_err}"
    );
    assert!(matches!(
        outcome.server.as_ref().map_err(tls_error),
        Err(Some(rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
        )))
    ));

    // The right CA, the wrong name: the ekm certificate does not cover xki-proxy.
    let outcome = exchange(
        ekm_server(&pki),
        proxy_client(&pki, Some(&pki.proxy_client)),
        "xki-proxy",
    );
    let client_err = outcome.client.expect_err("client accepted the wrong name");
    match tls_error(&client_err) {
        Some(rustls::Error::InvalidCertificate(err)) => {
            assert!(common::is_wrong_name(&err), "{err:?}")
        }
        other => panic!("{client_err} ({other:?})"),
    }
    assert!(outcome.server.is_err());
}
