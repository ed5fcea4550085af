//! `ekm`: the external key manager's server and admin CLI.
//!
//! The admin commands talk to the token directly (the key records live in the HSM, so the CLI
//! and every running server see the same state; a server notices within `state_ttl_ms`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ekm::config::{Config, secret_from};
use ekm::pkcs11::{Pkcs11KeyManager, TokenSelector};
use ekm::server::{Application, health_body, key_metadata};
use ekm::{AdoptKey, CreateKey, KeyManager, KeyUsage, OpContext};
use schemas::ekm as wire;
use schemas::xki::ExternalKeyId;

/// External key manager: AES-256 keys inside a PKCS#11 HSM.
#[derive(Debug, Parser)]
#[command(name = "ekm", version, about)]
struct Cli {
    /// Configuration file (TOML); every key can be overridden by EKM__SECTION__KEY.
    #[arg(long, short, env = "EKM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the EKM API server (HTTPS, mTLS) and the liveness port.
    Serve,
    /// Initialise a token on a free slot (development, SoftHSM) and set its user PIN from the
    /// configured pin_file / pin_env.
    InitToken {
        /// Token label (default: hsm.token_label).
        #[arg(long)]
        label: Option<String>,
        /// File holding the security officer PIN.
        #[arg(long)]
        so_pin_file: Option<PathBuf>,
        /// Variable holding the security officer PIN.
        #[arg(long)]
        so_pin_env: Option<String>,
    },
    /// Manage keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run a deep health probe and print it.
    Health,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UsageArg {
    EncryptDecrypt,
    Encrypt,
    Decrypt,
    None,
}

impl From<UsageArg> for KeyUsage {
    fn from(u: UsageArg) -> Self {
        let (encrypt, decrypt) = match u {
            UsageArg::EncryptDecrypt => (true, true),
            UsageArg::Encrypt => (true, false),
            UsageArg::Decrypt => (false, true),
            UsageArg::None => (false, false),
        };
        KeyUsage { encrypt, decrypt }
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key (the EKM generates the id unless --id is given).
    Create {
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_enum, default_value = "encrypt-decrypt")]
        usage: UsageArg,
        #[arg(long)]
        description: Option<String>,
    },
    /// List managed keys.
    List,
    /// Describe one key.
    Describe { id: String },
    /// Enable a disabled key.
    Enable { id: String },
    /// Disable a key.
    Disable { id: String },
    /// Add a key version (encrypt uses it; old versions still decrypt).
    Rotate { id: String },
    /// Schedule a disabled key's destruction.
    ScheduleDeletion {
        id: String,
        /// Waiting period in days (default from the configuration).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Cancel a scheduled deletion (the key stays disabled).
    CancelDeletion { id: String },
    /// Take an existing HSM AES-256 key under management by its label.
    Adopt {
        #[arg(long)]
        hsm_label: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_enum, default_value = "encrypt-decrypt")]
        usage: UsageArg,
        #[arg(long)]
        description: Option<String>,
    },
}

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::InitToken {
            label,
            so_pin_file,
            so_pin_env,
        } => {
            let label = label
                .or_else(|| config.hsm.token_label.clone())
                .context("give --label or set hsm.token_label")?;
            let so_pin = secret_from(so_pin_file.as_deref(), so_pin_env.as_deref(), "so_pin")?;
            let slot =
                ekm::pkcs11::init_token(&config.hsm.module, &label, &so_pin, &config.pin()?)?;
            if cli.json {
                println!("{}", serde_json::json!({"label": label, "slot": slot.id()}));
            } else {
                println!("initialised token {label:?} in slot {}", slot.id());
            }
            Ok(())
        }
        Command::Keys { command } => keys(config, command, cli.json).await,
        Command::Health => {
            let manager = admin_manager(&config).await?;
            let health = health_body(manager.probe_now().await);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&health)?);
            } else {
                println!("status {:?} at {}", health.status, health.checked_at);
                for h in &health.hsms {
                    let latency = h.probe_latency_us.map_or("-".into(), |u| format!("{u} us"));
                    let detail = h.detail.as_deref().unwrap_or("");
                    println!(
                        "  {}  {:?}  {}  {}  {detail}",
                        h.id, h.health_status, latency, h.model
                    );
                }
            }
            if health.status == wire::HealthStatus::Unavailable {
                bail!("the HSM is unavailable");
            }
            Ok(())
        }
    }
}

async fn admin_manager(config: &Config) -> anyhow::Result<Pkcs11KeyManager> {
    let mut pkcs11 = config.pkcs11()?;
    pkcs11.workers = 1;
    pkcs11.background = false;
    let which = match &pkcs11.token {
        TokenSelector::Label(l) => format!("token {l:?}"),
        TokenSelector::Serial(s) => format!("token serial {s:?}"),
    };
    Pkcs11KeyManager::open(pkcs11)
        .await
        .with_context(|| format!("cannot open {which}"))
}

fn key_id(text: &str) -> anyhow::Result<ExternalKeyId> {
    ExternalKeyId::parse(text).with_context(|| format!("invalid key id {text:?}"))
}

async fn keys(config: Config, command: KeysCommand, json: bool) -> anyhow::Result<()> {
    let manager = admin_manager(&config).await?;
    let ctx = OpContext::new("cli", Duration::from_secs(60));
    let info = match command {
        KeysCommand::List => {
            let keys: Vec<_> = manager
                .list_keys(&ctx)
                .await?
                .into_iter()
                .map(key_metadata)
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&wire::ListKeysResponse { keys })?
                );
            } else {
                print_table(&keys);
            }
            return Ok(());
        }
        KeysCommand::Create {
            id,
            usage,
            description,
        } => {
            let id = id.as_deref().map(key_id).transpose()?;
            let request = CreateKey {
                id,
                usage: usage.into(),
                description,
            };
            manager.create_key(&ctx, request).await?
        }
        KeysCommand::Adopt {
            hsm_label,
            id,
            usage,
            description,
        } => {
            let id = id.as_deref().map(key_id).transpose()?;
            let request = AdoptKey {
                id,
                hsm_label,
                usage: usage.into(),
                description,
            };
            manager.adopt_key(&ctx, request).await?
        }
        KeysCommand::Describe { id } => manager.describe_key(&ctx, &key_id(&id)?).await?,
        KeysCommand::Enable { id } => manager.enable_key(&ctx, &key_id(&id)?).await?,
        KeysCommand::Disable { id } => manager.disable_key(&ctx, &key_id(&id)?).await?,
        KeysCommand::Rotate { id } => manager.rotate_key(&ctx, &key_id(&id)?).await?,
        KeysCommand::ScheduleDeletion { id, days } => {
            manager
                .schedule_key_deletion(&ctx, &key_id(&id)?, days)
                .await?
        }
        KeysCommand::CancelDeletion { id } => {
            manager.cancel_key_deletion(&ctx, &key_id(&id)?).await?
        }
    };
    let meta = key_metadata(info);
    if json {
        println!("{}", serde_json::to_string_pretty(&meta)?);
    } else {
        print_table(std::slice::from_ref(&meta));
    }
    Ok(())
}

fn print_table(keys: &[wire::KeyMetadata]) {
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            let usage: Vec<_> = k
                .usage
                .iter()
                .map(|u| match u {
                    wire::KeyUsage::Encrypt => "ENCRYPT",
                    wire::KeyUsage::Decrypt => "DECRYPT",
                })
                .collect();
            let state = serde_json::to_value(k.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            [
                k.external_key_id.to_string(),
                state,
                if usage.is_empty() {
                    "-".into()
                } else {
                    usage.join(",")
                },
                k.current_version.to_string(),
                format!("{:?}", k.origin).to_uppercase(),
                k.created_at.clone(),
                k.deletion_date.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "ID", "STATE", "USAGE", "VERSION", "ORIGIN", "CREATED", "DELETION",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        println!("(no keys)");
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EKM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .init();
    let tls = config.tls()?;
    let manager: Arc<dyn KeyManager> = Arc::new(Pkcs11KeyManager::open(config.pkcs11()?).await?);
    let app = Application::build(config.server_settings()?, tls, manager)?;
    tracing::info!(port = app.port(), liveness_port = ?app.liveness_port(), "ekm serving");
    let handles = app.handles();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        for handle in handles {
            handle.stop(true).await;
        }
    });
    app.run_until_stopped().await?;
    Ok(())
}
