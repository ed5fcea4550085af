//! `hyok-dev-pki`: writes the development PKI of the HYOK stack, or prints a fingerprint.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use certs::{
    CONNECTOR_SERVICE, DevPki, EKM_SERVICE, PROXY_SERVICE, PkiOptions, PkiOutcome, PkiPaths,
    ensure_pki, server_dns_names, server_ips, sha256_fingerprint,
};
use clap::{Args, Parser, Subcommand};

/// Development PKI for the HYOK stack (ekm, xki-proxy, kms-connector).
///
/// Makes one root CA, a server certificate per service and a client certificate per mTLS hop.
/// For development and tests only: see certs/README.md before anything else.
#[derive(Debug, Parser)]
#[command(name = "hyok-dev-pki", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the PKI into a directory; keep an existing complete one (idempotent).
    ///
    /// Files: ca.pem ca.key, ekm.pem ekm.key, xki-proxy.pem xki-proxy.key,
    /// kms-connector.pem kms-connector.key, xki-proxy-client.pem xki-proxy-client.key,
    /// kms-connector-client.pem kms-connector-client.key. Keys are written 0600, certificates
    /// 0644. Server certificates cover their service name, localhost, 127.0.0.1 and ::1, plus
    /// every --dns and --ip.
    Init(InitArgs),
    /// Print the SHA-256 fingerprint (lower-case hex of the DER) of a PEM certificate.
    ///
    /// This is the value kms-connector pins for the xki-proxy server certificate.
    Fingerprint {
        /// A PEM certificate file (the first certificate is used).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Extra DNS name for every server certificate (repeatable), e.g. a public proxy domain.
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// Extra IP address for every server certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// Lifetime of the leaf certificates in days.
    #[arg(long, value_name = "DAYS", default_value_t = certs::DEFAULT_LEAF_VALIDITY_DAYS)]
    validity_days: u32,
    /// Replace an existing PKI in DIR (all of it: a new CA too).
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The chain of causes is the whole story; a backtrace would only bury it.
            eprintln!("hyok-dev-pki: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => init(&args),
        Command::Fingerprint { file } => {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let fingerprint = sha256_fingerprint(&pem)
                .with_context(|| format!("no certificate in {}", file.display()))?;
            println!("{fingerprint}");
            Ok(())
        }
    }
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    for name in &args.dns {
        certs::validate_dns_name(name).context("bad --dns")?;
    }
    let opts = PkiOptions {
        extra_dns: args.dns.clone(),
        extra_ips: args.ips.clone(),
        validity_days: args.validity_days,
        ..PkiOptions::default()
    };
    let out = &args.out;
    let shown = out.display();
    if args.force {
        let paths = DevPki::generate(&opts)
            .and_then(|pki| pki.write_to(out, true))
            .with_context(|| format!("cannot write a PKI into {shown}"))?;
        println!("generated a new PKI in {shown} (replacing any previous one)");
        print_written(&paths, &opts);
        return print_pin(&paths);
    }
    // The library's errors already name the directory and say what to do.
    let outcome = ensure_pki(out, &opts)?;
    match &outcome {
        PkiOutcome::Generated(paths) => {
            println!("generated a new PKI in {shown}");
            print_written(paths, &opts);
        }
        PkiOutcome::Kept(_) => println!("kept existing PKI in {shown}"),
    }
    print_pin(outcome.paths())
}

fn print_written(paths: &PkiPaths, opts: &PkiOptions) {
    let files = paths.files();
    let width = files
        .iter()
        .map(|file| file.path.display().to_string().len())
        .max()
        .unwrap_or_default();
    for file in files {
        let path = file.path.display().to_string();
        println!("  {:o}  {path:<width$}  {}", file.kind.mode(), file.role);
    }
    let ips: Vec<String> = server_ips(opts).iter().map(IpAddr::to_string).collect();
    for service in [EKM_SERVICE, PROXY_SERVICE, CONNECTOR_SERVICE] {
        println!(
            "  server {service}: DNS {}; IP {}",
            server_dns_names(service, opts).join(", "),
            ips.join(", ")
        );
    }
    println!(
        "  clients: {} (xki-proxy -> ekm), {} (kms-connector -> xki-proxy)",
        opts.proxy_client_name, opts.connector_client_name
    );
    println!("  ca.key can sign certificates every hop trusts: never commit or share it");
}

/// The kms-connector needs this value to pin the proxy, so every run shows it.
fn print_pin(paths: &PkiPaths) -> anyhow::Result<()> {
    let fingerprint = fingerprint_of(&paths.proxy_cert)?;
    println!("xki-proxy server certificate SHA-256 fingerprint: {fingerprint}");
    Ok(())
}

fn fingerprint_of(path: &Path) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_fingerprint(&pem)?)
}
