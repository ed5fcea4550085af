//! `xki-proxy`: serve, check a configuration, mint credentials, manage keys in the EKM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xki_proxy::admin::{AdminCreateKey, AdminError, AdminKey};
use xki_proxy::config::Config;
use xki_proxy::credentials::{AuthenticationCredential, ConnectionSettings, NewCredential};

#[derive(Parser)]
#[command(
    name = "xki-proxy",
    version,
    about = "XKI proxy (XKS Proxy API v1 compatible) in front of the external key manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML); XKI_PROXY__SECTION__KEY variables override it.
        #[arg(long, short, env = "XKI_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration and print what the proxy would do with it.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, env = "XKI_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// SigV4 credentials for a key store.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Keys in the external key manager (through the running proxy's admin API).
    Keys {
        /// Configuration file of the running proxy (gives the admin address, token and, with
        /// `[admin.tls]`, the certificate to expect).
        #[arg(long, short, env = "XKI_PROXY_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Mint a credential and print the connection settings a KMS instance needs (JSON).
    New {
        /// Public endpoint of the proxy, e.g. https://xki.example.com
        #[arg(long)]
        endpoint: String,
        /// Key store prefix ("" or /tenant).
        #[arg(long, default_value = "")]
        prefix: String,
        /// The proxy's server certificate (for its SHA-256 fingerprint).
        #[arg(long)]
        server_cert: PathBuf,
        /// `public` or `private-link`.
        #[arg(long, default_value = "public")]
        connectivity: String,
        /// Write the secret alone to this file (mode 0600) for the proxy's `secret.file`.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// Write the settings JSON here (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an AES-256 key in the EKM; prints its External Key ID.
    Create {
        /// Choose the id instead of letting the EKM generate one.
        #[arg(long)]
        id: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// List keys.
    List,
    /// Describe one key.
    Describe { id: String },
    /// Disable a key (its ciphertexts stop decrypting until it is enabled).
    Disable { id: String },
    /// Enable a key.
    Enable { id: String },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Credentials {
            command:
                CredentialsCommand::New {
                    endpoint,
                    prefix,
                    server_cert,
                    connectivity,
                    secret_out,
                    out,
                },
        } => credentials_new(
            &endpoint,
            &prefix,
            &server_cert,
            &connectivity,
            secret_out.as_deref(),
            out.as_deref(),
        ),
        Command::Keys {
            config,
            json,
            command,
        } => keys(&config, json, command),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_env("XKI_PROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(false)
        .init();
}

fn serve(path: &Path) -> Result<()> {
    init_logging();
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    actix_web::rt::System::new().block_on(async move {
        let app = xki_proxy::Application::build(config, Some(path.to_owned())).await?;
        tracing::info!(
            port = app.port(),
            ops_port = app.ops_port(),
            "xki-proxy listening"
        );
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn check_config(path: &Path) -> Result<()> {
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let tls = xki_proxy::tls::TlsState::load(&config.server)?;
    let stores = xki_proxy::tenancy::KeyStores::build(&config, None)?;
    println!("configuration {} is valid", path.display());
    println!(
        "  KMS-facing listener  https://{} (TLS 1.2/1.3, spec cipher suites)",
        config.server.listen
    );
    println!(
        "  server certificate   {} (SHA-256 {})",
        config.server.cert_file.display(),
        xki_proxy::tls::fingerprint(&tls.leaf())
    );
    match &config.server.mtls {
        Some(m) => println!(
            "  mutual TLS           required; CAs {:?}; allowed names {:?}",
            m.ca_files, m.allowed_names
        ),
        None => println!("  mutual TLS           off"),
    }
    println!(
        "  ops listener         http://{} (/ping /ready /metrics)",
        config.ops.listen
    );
    match (&config.admin.token, &config.admin.tls) {
        (None, _) => println!("  admin API            off (no admin.token)"),
        (Some(_), None) => println!(
            "  admin API            http://{}/admin",
            config.admin.listen
        ),
        (Some(_), Some(tls)) => println!(
            "  admin API            https://{}/admin (certificate {})",
            config.admin.listen,
            tls.cert_file.display()
        ),
    }
    let l = config.server.listener_limits()?;
    println!(
        "  listener limits      {} connections, handshake {} ms, head {} ms, body {} ms, \
         headers {} B, {} HTTP/2 streams per connection",
        l.max_connections,
        l.handshake_timeout.as_millis(),
        l.header_timeout.as_millis(),
        l.body_timeout.as_millis(),
        l.max_header_bytes,
        l.max_concurrent_streams
    );
    match &config.backend {
        xki_proxy::config::BackendConfig::Remote { url, .. } => {
            println!("  backend              remote EKM at {url} (mTLS, keep-alive pool)")
        }
        xki_proxy::config::BackendConfig::InProcess { ekm_config } => println!(
            "  backend              in-process EKM ({})",
            ekm_config.display()
        ),
    }
    println!(
        "  limits               data {} B, AAD {} B, deadline {} ms, clock skew {} s",
        config.limits.max_data_bytes,
        config.limits.max_aad_bytes,
        config.limits.deadline_ms,
        config.limits.max_clock_skew_secs
    );
    for store in &config.key_stores {
        println!(
            "  key store {:?}: path {}{}, regions {:?}, hosts {}, access keys {:?}, keys {:?}, quota {}, {} rule(s)",
            store.prefix,
            store.prefix,
            schemas::xki::API_BASE,
            store.regions,
            if store.hosts.is_empty() {
                "any".to_owned()
            } else {
                format!("{:?}", store.hosts)
            },
            store
                .credentials
                .iter()
                .map(|c| c.access_key_id.as_str())
                .collect::<Vec<_>>(),
            store.keys,
            store
                .quota
                .map_or("none".to_owned(), |q| format!("{}/s", q.per_second)),
            store.rules.len()
        );
    }
    println!(
        "  {} key store(s) loaded, every secret readable",
        stores.len()
    );
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn credentials_new(
    endpoint: &str,
    prefix: &str,
    server_cert: &Path,
    connectivity: &str,
    secret_out: Option<&Path>,
    out: Option<&Path>,
) -> Result<()> {
    xki_proxy::tenancy::check_prefix(prefix).map_err(anyhow::Error::msg)?;
    if !endpoint.starts_with("https://") {
        bail!("--endpoint must start with https://");
    }
    if !matches!(connectivity, "public" | "private-link") {
        bail!("--connectivity must be public or private-link");
    }
    let leaf = xki_proxy::tls::read_certs(server_cert)?;
    let fingerprint = xki_proxy::tls::fingerprint(&leaf[0]);
    let credential = NewCredential::generate();
    let settings = ConnectionSettings {
        xks_proxy_uri_endpoint: endpoint.trim_end_matches('/').to_owned(),
        xks_proxy_uri_path: format!("{prefix}{}", schemas::xki::API_BASE),
        xks_proxy_authentication_credential: AuthenticationCredential {
            access_key_id: credential.access_key_id.clone(),
            raw_secret_access_key: credential.secret.to_string(),
        },
        server_certificate_sha256: fingerprint,
        connectivity: connectivity.to_owned(),
    };
    let json = serde_json::to_string_pretty(&settings)?;
    match out {
        Some(path) => {
            write_private(path, &format!("{json}\n"))?;
            eprintln!("connection settings written to {}", path.display());
        }
        None => println!("{json}"),
    }
    if let Some(path) = secret_out {
        write_private(path, credential.secret.as_str())?;
        eprintln!("secret written to {} (0600)", path.display());
    }
    eprintln!("add to the proxy configuration, in the [[key_store]] with prefix {prefix:?}:");
    eprintln!(
        "  [[key_store.credentials]]\n  access_key_id = \"{}\"\n  secret = {{ file = \"{}\" }}",
        credential.access_key_id,
        secret_out.map_or("<path of the secret file>".into(), |p| p
            .display()
            .to_string())
    );
    Ok(())
}

fn keys(path: &Path, json: bool, command: KeysCommand) -> Result<()> {
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let token = config
        .admin
        .token
        .as_ref()
        .context("the proxy configuration has no admin.token: the admin API is off")?
        .resolve()?;
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let (base, client) = match &config.admin.tls {
        None => (format!("http://{addr}/admin/keys"), reqwest::Client::new()),
        Some(tls) => {
            // The CLI runs beside the proxy and reads its configuration: it expects exactly
            // the certificate the admin listener serves (no CA, no name to match).
            let leaf = xki_proxy::tls::read_certs(&tls.cert_file)?.remove(0);
            let provider = xki_proxy::tls::provider();
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate { leaf, provider }))
                .with_no_client_auth();
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .no_proxy()
                .build()?;
            (format!("https://{addr}/admin/keys"), client)
        }
    };
    let request = match &command {
        KeysCommand::Create { id, description } => client.post(&base).json(&AdminCreateKey {
            external_key_id: id.clone(),
            description: description.clone(),
        }),
        KeysCommand::List => client.get(&base),
        KeysCommand::Describe { id } => client.get(format!("{base}/{id}")),
        KeysCommand::Disable { id } => client.post(format!("{base}/{id}/disable")),
        KeysCommand::Enable { id } => client.post(format!("{base}/{id}/enable")),
    };
    let request = request
        .bearer_auth(token.expose())
        .timeout(std::time::Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let response: (u16, String) = runtime
        .block_on(async {
            let r = request.send().await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        })
        .with_context(|| {
            format!("calling the proxy admin API at {addr} (is the proxy running?)")
        })?;
    if !(200..300).contains(&response.0) {
        let error: AdminError = serde_json::from_str(&response.1).unwrap_or(AdminError {
            error: format!("HTTP {}", response.0),
            message: response.1.clone(),
        });
        bail!("{}: {}", error.error, error.message);
    }
    if json {
        println!("{}", response.1);
        return Ok(());
    }
    let keys: Vec<AdminKey> = match command {
        KeysCommand::List => serde_json::from_str(&response.1)?,
        _ => vec![serde_json::from_str(&response.1)?],
    };
    println!(
        "{:<44} {:<17} {:<16} {:>7}  CREATED",
        "EXTERNAL KEY ID", "STATE", "USAGE", "VERSION"
    );
    for k in keys {
        println!(
            "{:<44} {:<17} {:<16} {:>7}  {}",
            k.external_key_id,
            k.state,
            k.usage.join(","),
            k.current_version,
            k.created_at
        );
    }
    Ok(())
}

/// Trusts exactly one certificate (the admin listener's, read from the proxy's configuration)
/// and checks that the server holds its key.
#[derive(Debug)]
struct PinnedCertificate {
    leaf: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
