//! `kms-connector`: serve the KMS OpenAPI, check a configuration, inspect instances, keys and
//! the audit trail, and rotate the root key. `keys`, `audit` and `root-key` work on the store
//! directly; `instances connect` and
//! `disconnect` ask the running server (a signed OpenAPI call with a configured AccessKey), since
//! the connection lives in its memory. `instances check` and `check-endpoint` test the path to
//! an XKI proxy step by step (`backend::external::check`); `check-endpoint` needs no
//! configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use kms_connector::app::Application;
use kms_connector::config::Config;
use kms_connector::store::{AuditQuery, Instance, KeyFilter, Page, Store};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "kms-connector",
    version,
    about = "Alibaba Cloud KMS OpenAPI 2016-01-20 server of the HYOK stack"
)]
struct Cli {
    /// Configuration file (TOML); KMS_CONNECTOR__SECTION__KEY variables override it.
    #[arg(long, short, global = true, env = "KMS_CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration and print what the server would do with it.
    CheckConfig,
    /// KMS instances and their connection state.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
    /// The root key that seals software key material.
    RootKey {
        #[command(subcommand)]
        command: RootKeyCommand,
    },
    /// Keys (read from the store).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a presigned OpenAPI URL (HMAC-SHA1 RPC signature, first AccessKey of the account)
    /// for the running server: `curl "$(kms-connector sign-url Encrypt KeyId=alias/x Plaintext=hi)"`.
    SignUrl {
        /// The action, e.g. `Encrypt`.
        action: String,
        /// Parameters as `Name=Value`.
        params: Vec<String>,
    },
    /// Call the running server (a signed OpenAPI request) and print the JSON answer.
    Call {
        /// The action, e.g. `DescribeKey`.
        action: String,
        /// Parameters as `Name=Value`.
        params: Vec<String>,
    },
    /// Check the path to an XKI proxy before an instance exists: DNS, TCP, TLS, SigV4, health,
    /// and one key's metadata with --key-id. Exits non-zero unless every step passes.
    CheckEndpoint {
        /// The connection-settings JSON `xki-proxy credentials new` prints.
        #[arg(long)]
        settings: PathBuf,
        /// PEM bundle of the CAs the proxy's certificate must chain to (with a name check).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Client certificate (PEM) for mutual TLS.
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// SigV4 region; the configuration's region when --config is given.
        #[arg(long)]
        region: Option<String>,
        /// Budget of one XKI call, milliseconds (the connector's default).
        #[arg(long, default_value_t = kms_connector::backend::external::config::DEFAULT_TIMEOUT_MS)]
        timeout_ms: u64,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// The audit trail, newest first.
    Audit {
        /// Only events about this key.
        #[arg(long)]
        key_id: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Most events shown (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// Every instance in the store.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One instance, with its key count.
    Describe {
        /// `kst-…`.
        id: String,
    },
    /// Connect an external instance (asks the running server).
    Connect {
        /// `kst-…`.
        id: String,
    },
    /// Disconnect an external instance (asks the running server).
    Disconnect {
        /// `kst-…`.
        id: String,
    },
    /// Check the path to an external instance's XKI proxy, step by step: DNS, TCP, TLS, SigV4,
    /// health, and one key's metadata with --key-id. Exits non-zero unless every step passes.
    Check {
        /// `kst-…` of an external instance in the configuration.
        id: String,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Initialise the PKCS#11 token of a hardware instance in a free slot (SoftHSM2, or a token
    /// that allows it): the label and user PIN its `[instances.hardware]` names, the SO PIN
    /// from a file. Refuses a label that exists.
    InitToken {
        /// `kst-…` of a hardware instance.
        id: String,
        /// File holding the token's new security officer PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
    },
}

/// What both checks share.
#[derive(clap::Args)]
struct CheckArgs {
    /// An external key id behind the proxy: adds a GetKeyMetadata step.
    #[arg(long)]
    key_id: Option<String>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RootKeyCommand {
    /// Generate the root key inside the PKCS#11 token of `[root_key] token` (an AES-256 object
    /// labelled `key_label`, sensitive and never extractable). Refuses if the label exists.
    CreateInToken,
    /// How many sealed software key rows each root key id seals.
    Status,
    /// Re-seal every software key row under the current `[root_key]` (rows sealed under a
    /// `[[root_key.previous]]` key); no key's material changes. Resumable: run it again after
    /// an interruption. Exits non-zero while rows remain that no configured key unseals.
    Rotate {
        /// Stop after this many re-sealed rows (run again to continue).
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Keys of the configured account and region.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One key's metadata (JSON).
    Describe {
        /// The key id.
        key_id: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::CheckEndpoint {
        settings,
        ca_file,
        client_cert,
        client_key,
        region,
        timeout_ms,
        check,
    } = cli.command
    {
        let region = match (region, &cli.config) {
            (Some(region), _) => region,
            (None, Some(path)) => {
                Config::load(path)
                    .with_context(|| format!("loading {}", path.display()))?
                    .kms
                    .region
            }
            (None, None) => bail!("give --region (or --config for the connector's region)"),
        };
        let instance = kms_connector::backend::external::ExternalInstanceConfig {
            settings_file: Some(settings),
            ca_file,
            client_cert_file: client_cert,
            client_key_file: client_key,
            timeout_ms: Some(timeout_ms),
            // The configuration keeps a call's budget within the health interval.
            health_interval_secs: Some(
                timeout_ms
                    .div_ceil(1000)
                    .max(kms_connector::backend::external::config::DEFAULT_HEALTH_INTERVAL_SECS),
            ),
            ..Default::default()
        };
        let settings = instance
            .resolve(&region, &std::env::current_dir()?)
            .context("connection settings")?;
        return run_check(&settings, &check);
    }
    let path = cli
        .config
        .ok_or_else(|| anyhow!("give --config <file> (or KMS_CONNECTOR_CONFIG)"))?;
    let config = Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    match cli.command {
        Command::Serve => serve(config),
        Command::CheckConfig => check_config(&path, &config),
        Command::SignUrl { action, params } => {
            println!("{}", signed_url(&config, &action, &parse_params(&params)?)?);
            Ok(())
        }
        Command::Instances {
            command: InstancesCommand::Check { id, check },
        } => {
            let instance = config
                .instances
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| anyhow!("no instance {id} in the configuration"))?;
            let external = instance
                .external
                .as_ref()
                .ok_or_else(|| anyhow!("instance {id} is not an external instance"))?;
            let settings = external
                .resolve(&config.kms.region, &config.base_dir)
                .with_context(|| format!("instances {id}"))?;
            run_check(&settings, &check)
        }
        Command::Call { action, params } => {
            let params = parse_params(&params)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(ask_server(&config, &action, &params))
        }
        other => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(offline(other, config))
        }
    }
}

use kms_connector::backend::software::SoftwareBackend;

/// Runs the connectivity check, prints the report, and exits 1 unless every step passed.
fn run_check(
    settings: &kms_connector::backend::external::ExternalSettings,
    args: &CheckArgs,
) -> Result<()> {
    use kms_connector::backend::external::check;
    let key = args
        .key_id
        .as_deref()
        .map(schemas::xki::ExternalKeyId::parse)
        .transpose()
        .map_err(|e| anyhow!("--key-id: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(check::run(settings, key.as_ref()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

async fn root_key(command: RootKeyCommand, store: &Store, config: &Config) -> Result<()> {
    let root = config
        .root_key
        .as_ref()
        .ok_or_else(|| anyhow!("the configuration has no [root_key]"))?;
    match command {
        RootKeyCommand::CreateInToken => create_root_key_in_token(root).await,
        RootKeyCommand::Status => root_key_status(store, &configured_root_keys(root).await?).await,
        RootKeyCommand::Rotate { limit } => {
            rotate_root_key(store, &configured_root_keys(root).await?, limit).await
        }
    }
}

/// The configured root keys, each tried once.
async fn configured_root_keys(
    root: &kms_connector::config::RootKeyConfig,
) -> Result<SoftwareBackend> {
    let (current, previous) = root.load()?;
    let backend = SoftwareBackend::with_previous(current, previous);
    backend
        .self_test()
        .await
        .context("a configured root key cannot seal and unseal")?;
    Ok(backend)
}

async fn root_key_status(store: &Store, backend: &SoftwareBackend) -> Result<()> {
    let (current_id, known) = (backend.root_key_id(), backend.known_root_key_ids());
    for (id, rows) in kms_connector::root_key::census(store).await? {
        let role = if id == current_id {
            "current"
        } else if known.contains(&id) {
            "previous (configured)"
        } else {
            "NOT CONFIGURED"
        };
        println!("{id}  {rows:>8} rows  {role}");
    }
    Ok(())
}

async fn rotate_root_key(
    store: &Store,
    backend: &SoftwareBackend,
    limit: Option<u64>,
) -> Result<()> {
    let report = kms_connector::root_key::rotate(store, backend, limit).await?;
    println!(
        "root key {}: {} rows re-sealed, {} already current{}",
        backend.root_key_id(),
        report.resealed,
        report.current,
        if report.stopped_early {
            " (stopped at --limit; run again to continue)"
        } else {
            ""
        }
    );
    if !report.failed.is_empty() {
        bail!(
            "{} rows are sealed under a root key that is not configured (add it to [[root_key.previous]]): {}",
            report.failed.len(),
            report.failed.join(", ")
        );
    }
    Ok(())
}

async fn create_root_key_in_token(root: &kms_connector::config::RootKeyConfig) -> Result<()> {
    let source = root.current();
    let token = source
        .token
        .as_ref()
        .ok_or_else(|| anyhow!("[root_key] has no token to create the root key in"))?;
    let hsm = kms_connector::backend::hardware::open_token(token)?;
    kms_connector::backend::software::RootKey::create_in_token(&hsm, source.label()).await?;
    let backend = SoftwareBackend::new(root.load()?.0);
    backend.self_test().await?;
    println!(
        "root key {} created in token {:?} as object {:?}",
        backend.root_key_id(),
        hsm.token().label,
        source.label()
    );
    Ok(())
}

fn parse_params(params: &[String]) -> Result<Vec<(String, String)>> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("parameter {p:?} is not Name=Value"))
        })
        .collect()
}

fn serve(config: Config) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_env("KMS_CONNECTOR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(false)
        .init();
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(
            port = app.port(),
            tls_port = app.tls_port(),
            "kms-connector listening"
        );
        app.run_until_stopped().await?;
        Ok(())
    })
}

/// A PostgreSQL URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn check_config(path: &Path, config: &Config) -> Result<()> {
    // Read every secret and external setting now, so that `serve` cannot fail on them later.
    kms_connector::api::auth::AccessKeys::from_config(&config.access_keys)?;
    for instance in &config.instances {
        if let Some(external) = &instance.external {
            external
                .resolve(&config.kms.region, &config.base_dir)
                .with_context(|| format!("instances {}", instance.id))?;
        }
    }
    if let Some(root) = &config.root_key {
        root.load()?;
    }
    println!("configuration {} is valid", path.display());
    match config.server.listen {
        Some(addr) => println!("  http listener      http://{addr}"),
        None => println!("  http listener      none (HTTPS only)"),
    }
    match &config.server.tls {
        Some(tls) => println!(
            "  https listener     https://{} (cert {}, key {})",
            tls.listen,
            tls.cert_file.display(),
            tls.key_file.display()
        ),
        None => println!("  https listener     none"),
    }
    println!(
        "  database           {}",
        redact_url(&config.database_url())
    );
    println!(
        "  account / region   {} / {}",
        config.kms.account_id, config.kms.region
    );
    println!(
        "  limits             {} QPS per account, clock skew ±{} s",
        config.kms.qps, config.kms.max_clock_skew_secs
    );
    println!("  instances");
    for instance in &config.instances {
        let default = if config.default_instance_id() == Some(instance.id.as_str()) {
            " (default)"
        } else {
            ""
        };
        println!(
            "    {}  {:<9} {}{default}",
            instance.id, instance.kind, instance.name
        );
    }
    println!("  access keys (secrets not shown)");
    for key in &config.access_keys {
        println!("    {}  {}", key.access_key_id, key.principal);
    }
    Ok(())
}

async fn offline(command: Command, config: Config) -> Result<()> {
    let store = Store::open(&config.database_url())
        .await
        .context("opening the store")?;
    match command {
        Command::Instances { command } => instances(command, &store, &config).await,
        Command::RootKey { command } => root_key(command, &store, &config).await,
        Command::Keys { command } => keys(command, &store, &config).await,
        Command::Audit {
            key_id,
            action,
            limit,
            json,
        } => {
            let events = store
                .query_audit(AuditQuery {
                    key_id,
                    action,
                    limit,
                    ..AuditQuery::default()
                })
                .await?;
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        kms_connector::api::iso8601(e.time),
                        e.action.clone(),
                        e.key_id.clone().unwrap_or_default(),
                        e.result.clone(),
                        e.principal.clone(),
                        e.source_ip.clone().unwrap_or_default(),
                        e.request_id.clone(),
                    ]
                })
                .collect();
            if json {
                for e in &events {
                    println!(
                        "{}",
                        json!({"Time": kms_connector::api::iso8601(e.time), "Action": e.action,
                            "KeyId": e.key_id, "Result": e.result, "Principal": e.principal,
                            "AccountId": e.account_id, "SourceIp": e.source_ip,
                            "RequestId": e.request_id, "Detail": e.detail})
                    );
                }
            } else {
                table(
                    &[
                        "TIME",
                        "ACTION",
                        "KEY",
                        "RESULT",
                        "PRINCIPAL",
                        "SOURCE",
                        "REQUEST",
                    ],
                    &rows,
                );
            }
            Ok(())
        }
        Command::Serve
        | Command::CheckConfig
        | Command::CheckEndpoint { .. }
        | Command::SignUrl { .. }
        | Command::Call { .. } => Ok(()),
    }
}

fn instance_json(instance: &Instance, key_num: Option<u64>) -> Value {
    let mut v = json!({
        "InstanceId": instance.instance_id,
        "InstanceName": instance.name,
        "InstanceType": instance.kind.as_str(),
        "Status": instance.connection_state.as_str(),
        "ConnectionErrorCode": instance.connection_error_code.clone().unwrap_or_default(),
        "CreateTime": kms_connector::api::iso8601(instance.created_at),
        "UpdateTime": kms_connector::api::iso8601(instance.updated_at),
    });
    if let Some(n) = key_num {
        v["KeyNum"] = json!(n);
    }
    v
}

async fn instances(command: InstancesCommand, store: &Store, config: &Config) -> Result<()> {
    match command {
        InstancesCommand::InitToken { id, so_pin_file } => {
            let token = config
                .instances
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| anyhow!("no instance {id} in the configuration"))?
                .hardware
                .as_ref()
                .ok_or_else(|| anyhow!("instance {id} is not a hardware instance"))?;
            let label = token
                .token_label
                .as_deref()
                .ok_or_else(|| anyhow!("instance {id}: init-token needs token_label"))?;
            let so_pin = kms_connector::config::SecretRef {
                file: Some(so_pin_file),
                env: None,
            }
            .resolve()?;
            let user_pin = token.pin.resolve()?;
            let slot = ekm::hsm::init_token(
                &token.module,
                label,
                &secrecy::SecretString::from(so_pin.expose().to_owned()),
                &secrecy::SecretString::from(user_pin.expose().to_owned()),
            )?;
            println!("initialised token {label:?} in slot {} for {id}", slot.id());
            Ok(())
        }
        InstancesCommand::List { json } => {
            let all = store.list_instances().await?;
            if json {
                let list: Vec<Value> = all.iter().map(|i| instance_json(i, None)).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|i| {
                        vec![
                            i.instance_id.clone(),
                            i.kind.to_string(),
                            i.name.clone(),
                            i.connection_state.to_string(),
                            i.connection_error_code.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["INSTANCE", "KIND", "NAME", "STATUS", "ERROR"], &rows);
            }
            Ok(())
        }
        InstancesCommand::Describe { id } => {
            let instance = store.get_instance(&id).await?;
            let keys = store.count_instance_keys(&id).await?;
            let mut v = instance_json(&instance, Some(keys));
            v["Spec"] = serde_json::from_str(&instance.spec).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        InstancesCommand::Check { .. } => Ok(()),
        InstancesCommand::Connect { id } => {
            ask_server(
                config,
                "ConnectKmsInstance",
                &[("KmsInstanceId".into(), id)],
            )
            .await
        }
        InstancesCommand::Disconnect { id } => {
            ask_server(
                config,
                "DisconnectKmsInstance",
                &[("KmsInstanceId".into(), id)],
            )
            .await
        }
    }
}

async fn keys(command: KeysCommand, store: &Store, config: &Config) -> Result<()> {
    match command {
        KeysCommand::List { json } => {
            let mut all = Vec::new();
            for number in 1.. {
                let page = store
                    .list_keys(
                        &config.kms.account_id,
                        &config.kms.region,
                        KeyFilter::default(),
                        Page::new(number, Page::MAX_SIZE)?,
                    )
                    .await?;
                let done = page.items.len() < Page::MAX_SIZE as usize;
                all.extend(page.items);
                if done {
                    break;
                }
            }
            if json {
                let list: Vec<Value> = all.iter().map(kms_connector::api::key_metadata).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.key_state.as_str().to_owned(),
                            k.key_spec.to_string(),
                            k.instance_id.clone(),
                            kms_connector::api::iso8601(k.created_at),
                            k.description.chars().take(40).collect(),
                        ]
                    })
                    .collect();
                table(
                    &["KEY", "STATE", "SPEC", "INSTANCE", "CREATED", "DESCRIPTION"],
                    &rows,
                );
            }
            Ok(())
        }
        KeysCommand::Describe { key_id } => {
            let key = store.get_key(&key_id).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&kms_connector::api::key_metadata(&key))?
            );
            Ok(())
        }
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A presigned OpenAPI URL for the running server's HTTP listener: `GET /?…` with the HMAC-SHA1
/// RPC signature (first AccessKey of the account) in the query string, usable with plain curl.
fn signed_url(config: &Config, action: &str, params: &[(String, String)]) -> Result<String> {
    use schemas::acs::{Credential, RpcRequest, encode_parameters, sign_rpc};

    let access_key = config
        .access_keys
        .iter()
        .find(|k| {
            k.principal
                .starts_with(&format!("acs:ram::{}:", config.kms.account_id))
        })
        .ok_or_else(|| anyhow!("no [[access_keys]] of account {}", config.kms.account_id))?;
    let credential = Credential::new(
        access_key.access_key_id.clone(),
        access_key.secret.resolve()?,
    );
    let nonce = uuid::Uuid::new_v4().to_string();
    let mut all: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("Format", "JSON"));
    let pairs = sign_rpc(
        &credential,
        &RpcRequest {
            method: "GET",
            action,
            version: schemas::kms::API_VERSION,
            params: &all,
            nonce: &nonce,
        },
        time::OffsetDateTime::now_utc(),
    )?;
    // The plain HTTP listener if there is one; otherwise the HTTPS one under the name
    // `localhost` (give curl the CA that signed the server's certificate).
    let (scheme, mut addr) = match (&config.server.listen, &config.server.tls) {
        (Some(addr), _) => ("http", *addr),
        (None, Some(tls)) => ("https", tls.listen),
        (None, None) => bail!("the configuration has no listener"),
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let host = match scheme {
        "https" if addr.ip().is_loopback() => format!("localhost:{}", addr.port()),
        _ => addr.to_string(),
    };
    Ok(format!("{scheme}://{host}/?{}", encode_parameters(pairs)))
}

/// Sends a signed OpenAPI call to the running server and prints the answer.
async fn ask_server(config: &Config, action: &str, params: &[(String, String)]) -> Result<()> {
    let Some(listen) = config.server.listen else {
        bail!(
            "'call' talks to the plain HTTP listener (server.listen), which this configuration leaves out; use sign-url with curl --cacert instead"
        );
    };
    let url = signed_url(config, action, params)?;
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("calling the server at {listen} (is it running?)"))?;
    let status = response.status();
    let value: Value = response
        .json()
        .await
        .context("the server's answer is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    if !status.is_success() {
        bail!("{action} failed");
    }
    Ok(())
}
