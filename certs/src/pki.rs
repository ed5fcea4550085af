//! The whole dev PKI: one CA and the five leaves the three TLS hops need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::authority::{DEFAULT_CA_VALIDITY_DAYS, DEFAULT_LEAF_VALIDITY_DAYS};
use crate::layout::PkiPaths;
use crate::{Authority, CertifiedKey, Error, LeafSpec, store};

/// The ekm service name (docker-compose service, DNS SAN of its server certificate).
pub const EKM_SERVICE: &str = "ekm";
/// The xki-proxy service name; also the CN of the proxy's client certificate.
pub const PROXY_SERVICE: &str = "xki-proxy";
/// The kms-connector service name; also the CN of the connector's client certificate.
pub const CONNECTOR_SERVICE: &str = "kms-connector";

/// How to generate the PKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiOptions {
    /// Common name of the root CA.
    pub ca_common_name: String,
    /// DNS names added to every server certificate (e.g. a public proxy domain).
    pub extra_dns: Vec<String>,
    /// IP addresses added to every server certificate.
    pub extra_ips: Vec<IpAddr>,
    /// Lifetime of the leaf certificates, in days.
    pub validity_days: u32,
    /// Lifetime of the CA certificate, in days; at least `validity_days`.
    pub ca_validity_days: u32,
    /// CN and DNS SAN of the client certificate xki-proxy shows to ekm.
    pub proxy_client_name: String,
    /// CN and DNS SAN of the client certificate kms-connector shows to xki-proxy.
    pub connector_client_name: String,
}

impl Default for PkiOptions {
    fn default() -> Self {
        Self {
            ca_common_name: "HYOK dev CA".to_owned(),
            extra_dns: Vec::new(),
            extra_ips: Vec::new(),
            validity_days: DEFAULT_LEAF_VALIDITY_DAYS,
            ca_validity_days: DEFAULT_CA_VALIDITY_DAYS,
            proxy_client_name: PROXY_SERVICE.to_owned(),
            connector_client_name: CONNECTOR_SERVICE.to_owned(),
        }
    }
}

/// The DNS SANs of `service`'s server certificate: the service name, `localhost`, then the
/// extras, without duplicates.
pub fn server_dns_names(service: &str, opts: &PkiOptions) -> Vec<String> {
    let mut names = vec![service.to_owned(), "localhost".to_owned()];
    for extra in &opts.extra_dns {
        if !names.iter().any(|name| name.eq_ignore_ascii_case(extra)) {
            names.push(extra.clone());
        }
    }
    names
}

/// The IP SANs of every server certificate: `127.0.0.1`, `::1`, then the extras, without
/// duplicates.
pub fn server_ips(opts: &PkiOptions) -> Vec<IpAddr> {
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for extra in &opts.extra_ips {
        if !ips.contains(extra) {
            ips.push(*extra);
        }
    }
    ips
}

/// A freshly generated dev PKI, in memory.
#[derive(Debug)]
pub struct DevPki {
    /// The root CA.
    pub ca: Authority,
    /// ekm's server certificate.
    pub ekm_server: CertifiedKey,
    /// xki-proxy's server certificate (the one the kms-connector pins).
    pub proxy_server: CertifiedKey,
    /// kms-connector's HTTPS server certificate.
    pub connector_server: CertifiedKey,
    /// xki-proxy's client certificate towards ekm.
    pub proxy_client: CertifiedKey,
    /// kms-connector's client certificate towards xki-proxy.
    pub connector_client: CertifiedKey,
}

impl DevPki {
    /// Generates a new CA and every leaf.
    pub fn generate(opts: &PkiOptions) -> Result<Self, Error> {
        if opts.validity_days == 0 {
            return Err(Error::InvalidValidity(
                "leaves need at least one day".to_owned(),
            ));
        }
        if opts.validity_days > opts.ca_validity_days {
            return Err(Error::InvalidValidity(format!(
                "leaves ({} days) cannot outlive the CA ({} days)",
                opts.validity_days, opts.ca_validity_days
            )));
        }
        let ca = Authority::with_validity_days(&opts.ca_common_name, opts.ca_validity_days)?;
        let ips = server_ips(opts);
        let server = |service: &str| {
            let dns = server_dns_names(service, opts);
            let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
            ca.issue(&LeafSpec::server(service, &dns, &ips).valid_for_days(opts.validity_days))
        };
        let client = |name: &str| {
            ca.issue(&LeafSpec::client(name, &[name]).valid_for_days(opts.validity_days))
        };
        Ok(Self {
            ekm_server: server(EKM_SERVICE)?,
            proxy_server: server(PROXY_SERVICE)?,
            connector_server: server(CONNECTOR_SERVICE)?,
            proxy_client: client(&opts.proxy_client_name)?,
            connector_client: client(&opts.connector_client_name)?,
            ca,
        })
    }

    /// Writes the [layout](crate::layout) into `dir` (created if absent): keys 0600,
    /// certificates 0644.
    ///
    /// Without `overwrite`, refuses with [`Error::AlreadyExists`] before writing anything if
    /// any file of the layout exists. With it, each file is replaced atomically (write to a
    /// temporary file, then rename).
    pub fn write_to(&self, dir: &Path, overwrite: bool) -> Result<PkiPaths, Error> {
        let paths = PkiPaths::in_dir(dir);
        let contents = [
            self.ca.cert_pem(),
            self.ca.key_pem(),
            &self.ekm_server.cert_pem,
            &self.ekm_server.key_pem,
            &self.proxy_server.cert_pem,
            &self.proxy_server.key_pem,
            &self.connector_server.cert_pem,
            &self.connector_server.key_pem,
            &self.proxy_client.cert_pem,
            &self.proxy_client.key_pem,
            &self.connector_client.cert_pem,
            &self.connector_client.key_pem,
        ];
        let files: Vec<_> = paths.files().into_iter().zip(contents).collect();
        store::write_files(dir, &files, overwrite)?;
        Ok(paths)
    }
}
