//! `xki-proxy`: serve, check a configuration, mint credentials, manage keys in the EKM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xki_proxy::config::Config;
use xki_proxy::credentials::{AuthenticationCredential, ConnectionSettings, NewCredential};
use xki_proxy::ops::{AdminCreateKey, AdminError, AdminKey};

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
        /// Configuration file of the running proxy (gives the ops address and admin token).
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
    if let Some(der) = tls.cert.leaf() {
        println!(
            "  server certificate   {} (SHA-256 {})",
            config.server.cert_file.display(),
            xki_proxy::tls::fingerprint(&der)
        );
    }
    match &config.server.mtls {
        Some(m) => println!(
            "  mutual TLS           required; CAs {:?}; allowed names {:?}",
            m.ca_files, m.allowed_names
        ),
        None => println!("  mutual TLS           off"),
    }
    println!(
        "  ops listener         http://{} (/ping /ready /metrics{})",
        config.ops.listen,
        if config.ops.admin_token.is_some() {
            " /admin"
        } else {
            ""
        }
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
            "  key store {:?}: path {}{}, regions {:?}, access keys {:?}, keys {:?}, quota {}, {} rule(s)",
            store.prefix,
            store.prefix,
            schemas::xki::API_BASE,
            store.regions,
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
        .ops
        .admin_token
        .as_ref()
        .context("the proxy configuration has no [ops] admin_token: the admin API is off")?
        .resolve()?;
    let mut addr = config.ops.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let base = format!("http://{addr}/admin/keys");
    let client = reqwest::Client::new();
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
