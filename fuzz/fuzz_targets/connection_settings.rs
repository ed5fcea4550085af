//! The connection-settings JSON that `xki-proxy credentials new` writes and the kms-connector
//! reads (`kms_connector::backend::external::config`, via `settings_file`).
//!
//! - Reader on arbitrary files: nothing panics; a refusal never quotes the secret; accepted
//!   settings hold the file's values and meet the reader's rules (`https://host[:port]`, the
//!   path rule, the AccessKeyId rule, a non-empty secret, a 32-byte pin).
//! - Writer → reader: settings the proxy writes (`xki_proxy::credentials::ConnectionSettings`
//!   from values that pass the proxy's own checks) are read back to the same values.
//!
//! Each input is written to one file in a private directory (on tmpfs where there is one).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kms_connector::backend::external::config::{Connectivity, ExternalInstanceConfig};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use xki_proxy::credentials::{
    AuthenticationCredential, ConnectionSettings, check_access_key_id, check_secret,
};

/// A secret no message can contain by chance.
const SENTINEL: &str = "Sentinel+Secret/8f3a1c9e2b7d4f60a5c1e3b9d7f2a4c6=";

fn directory() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hyok-fuzz-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn read(
    contents: &[u8],
) -> Result<kms_connector::backend::external::config::ExternalSettings, String> {
    let dir = directory();
    std::fs::write(dir.join("settings.json"), contents).unwrap();
    let config = ExternalInstanceConfig {
        settings_file: Some("settings.json".into()),
        ..ExternalInstanceConfig::default()
    };
    config
        .resolve("cn-hangzhou", dir)
        .map_err(|e| e.to_string())
}

fn host_ok(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && !host.starts_with(['.', '-'])
}

/// Maps bytes onto an alphabet.
fn text(bytes: &[u8], alphabet: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let file: Option<serde_json::Value> = serde_json::from_slice(rest).ok();
        let field = |path: &[&str]| {
            let mut v = file.as_ref()?;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_owned)
        };
        let secret = field(&["XksProxyAuthenticationCredential", "RawSecretAccessKey"]);
        match read(rest) {
            Ok(s) => {
                assert_eq!(s.endpoint, format!("https://{}", s.authority));
                let host = s
                    .authority
                    .rsplit_once(':')
                    .map_or(s.authority.as_str(), |(h, _)| h);
                assert!(
                    host_ok(host)
                        && host.bytes().all(|b| b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || b == b'.'
                            || b == b'-')
                );
                assert_eq!(Some(s.path.clone()), field(&["XksProxyUriPath"]));
                assert!(s.path.len() <= 128 && s.path.contains("/kms/xks/v"));
                assert_eq!(
                    Some(s.credential.access_key_id.clone()),
                    field(&["XksProxyAuthenticationCredential", "AccessKeyId"])
                );
                assert_eq!(Some(s.credential.secret.expose().to_owned()), secret);
                assert!(!s.credential.secret.expose().is_empty());
                assert!(s.certificate_sha256.is_some());
                assert_eq!(s.region, "cn-hangzhou");
            }
            Err(_) => {
                // The same file with a recognisable secret: the refusal must not quote it. (The
                // fuzzer's own secret may well be a word of some message.)
                let Some(mut document) = file.filter(|_| secret.is_some()) else {
                    return;
                };
                document["XksProxyAuthenticationCredential"]["RawSecretAccessKey"] =
                    SENTINEL.into();
                if let Err(message) = read(&serde_json::to_vec(&document).unwrap()) {
                    assert!(
                        !message.contains(SENTINEL),
                        "the error quotes the secret: {message}"
                    );
                }
            }
        }
    } else {
        let mut parts = rest.splitn(5, |b| *b == b'\n');
        let mut next = || parts.next().unwrap_or_default();
        let (host_bytes, prefix_bytes, ak_bytes, secret_bytes) = (next(), next(), next(), next());
        let der = next();
        let host = text(
            host_bytes.get(2..).unwrap_or_default(),
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-",
        );
        let port = host_bytes
            .first()
            .map(|p| u16::from(*p) * 256 + u16::from(host_bytes.get(1).copied().unwrap_or(1)));
        let prefix = text(
            prefix_bytes,
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-",
        );
        let prefix = if prefix.is_empty() {
            prefix
        } else {
            format!("/{prefix}")
        };
        let access_key_id = text(ak_bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        let secret = text(
            secret_bytes,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
        );
        let writable = xki_proxy::tenancy::check_prefix(&prefix).is_ok()
            && check_access_key_id(&access_key_id).is_ok()
            && check_secret(&secret).is_ok()
            && host_ok(&host)
            && port != Some(0);
        if !writable {
            return;
        }
        let endpoint = match port {
            Some(port) => format!("https://{host}:{port}"),
            None => format!("https://{host}"),
        };
        let connectivity = if selector & 2 == 0 {
            "public"
        } else {
            "private-link"
        };
        let settings = ConnectionSettings {
            xks_proxy_uri_endpoint: format!("{endpoint}/").trim_end_matches('/').to_owned(),
            xks_proxy_uri_path: format!("{prefix}{}", schemas::xki::API_BASE),
            xks_proxy_authentication_credential: AuthenticationCredential {
                access_key_id: access_key_id.clone(),
                raw_secret_access_key: secret.clone(),
            },
            server_certificate_sha256: xki_proxy::tls::fingerprint(der),
            connectivity: connectivity.to_owned(),
        };
        let json = serde_json::to_string_pretty(&settings).unwrap();
        let s = read(json.as_bytes())
            .unwrap_or_else(|e| panic!("the connector refuses what the proxy wrote: {e}\n{json}"));
        let lower = host.to_ascii_lowercase();
        let authority = match port {
            Some(port) if port != 443 => format!("{lower}:{port}"),
            _ => lower,
        };
        assert_eq!(s.authority, authority);
        assert_eq!(s.path, settings.xks_proxy_uri_path);
        assert_eq!(s.credential.access_key_id, access_key_id);
        assert_eq!(s.credential.secret.expose(), secret);
        assert_eq!(
            s.certificate_sha256,
            Some(<[u8; 32]>::from(Sha256::digest(der)))
        );
        let expected = if selector & 2 == 0 {
            Connectivity::Public
        } else {
            Connectivity::PrivateLink
        };
        assert_eq!(s.connectivity, expected);
    }
});
