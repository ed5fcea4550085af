//! `xki-loadgen`: a bounded load generator for the XKI proxy. Loopback only, signed (SigV4)
//! Encrypt requests over TLS with keep-alive, one connection per worker. Stops after
//! `--duration` or `--max-requests`, whichever comes first, and prints throughput, latency
//! percentiles and the count of every status/errorName seen.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use schemas::sigv4::{Credential, RequestParts, Signer};

#[derive(Parser, Debug)]
#[command(
    name = "xki-loadgen",
    about = "Bounded XKI encrypt load on a loopback proxy"
)]
struct Args {
    /// Proxy base URL, e.g. https://localhost:8443 (must resolve to loopback).
    #[arg(long)]
    url: String,
    /// Key store prefix ("" or /tenant).
    #[arg(long, default_value = "")]
    prefix: String,
    /// External key id to encrypt under.
    #[arg(long)]
    key_id: String,
    /// SigV4 access key id.
    #[arg(long)]
    access_key_id: String,
    /// File holding the SigV4 secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// SigV4 region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// CA certificate (PEM) that issued the proxy's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Concurrent connections (one worker each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Plaintext size in bytes.
    #[arg(long, default_value_t = 32)]
    plaintext_bytes: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many requests in total.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    outcomes: BTreeMap<String, u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let url = reqwest::Url::parse(&args.url).context("--url")?;
    let host = url.host_str().context("--url has no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    for addr in (host.as_str(), port).to_socket_addrs()? {
        if !addr.ip().is_loopback() {
            bail!(
                "{host} resolves to {}, not loopback: this tool only loads local servers",
                addr.ip()
            );
        }
    }
    if args.connections == 0 || args.duration <= 0.0 {
        bail!("--connections and --duration must be positive");
    }
    let secret = std::fs::read_to_string(&args.secret_file).context("--secret-file")?;
    let ca = std::fs::read(&args.ca).context("--ca")?;
    let ca = reqwest::Certificate::from_pem(&ca).context("--ca is not a PEM certificate")?;
    let path = format!("{}/kms/xks/v1/keys/{}/encrypt", args.prefix, args.key_id);
    let body = serde_json::to_vec(&schemas::xki::EncryptRequest {
        request_metadata: schemas::xki::RequestMetadata {
            aws_principal_arn: Some("arn:aws:iam::123456789012:role/loadgen".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/loadgen".into()),
            kms_operation: Some("Encrypt".into()),
            kms_request_id: Some("loadgen".into()),
            ..Default::default()
        },
        plaintext: schemas::b64::encode(vec![0x5a; args.plaintext_bytes]),
        encryption_algorithm: "AES_GCM".into(),
        additional_authenticated_data: Some(schemas::b64::encode(b"loadgen-aad")),
        ciphertext_data_integrity_value_algorithm: None,
    })?;
    let signer = Arc::new(Signer::new(
        Credential::new(args.access_key_id.clone(), secret.trim_end().to_owned()),
        args.region.clone(),
        schemas::xki::SIGV4_SERVICE,
    ));
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let target = format!("{}{}", args.url.trim_end_matches('/'), path);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let stop_at = started + warmup + Duration::from_secs_f64(args.duration);
    let results: Vec<WorkerStats> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let client = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .pool_max_idle_per_host(1)
                .http1_only()
                .tcp_nodelay(true)
                .build()?;
            let (signer, body, target, path, authority, total) = (
                signer.clone(),
                body.clone(),
                target.clone(),
                path.clone(),
                authority.clone(),
                total.clone(),
            );
            let max = args.max_requests;
            tasks.push(tokio::spawn(async move {
                let mut stats = WorkerStats::default();
                while Instant::now() < stop_at && total.fetch_add(1, Ordering::Relaxed) < max {
                    let headers = vec![
                        ("host".to_owned(), authority.clone()),
                        ("content-type".to_owned(), "application/json".to_owned()),
                    ];
                    let parts = RequestParts {
                        method: "POST",
                        target: &path,
                        headers: &headers,
                        body: &body,
                    };
                    let Ok(sig) = signer.sign(&parts, &[], time::OffsetDateTime::now_utc()) else {
                        break;
                    };
                    let t0 = Instant::now();
                    let response = client
                        .post(&target)
                        .header("content-type", "application/json")
                        .header("x-amz-date", &sig.x_amz_date)
                        .header("authorization", &sig.authorization)
                        .body(body.clone())
                        .send()
                        .await;
                    let outcome = match response {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let text = r.text().await.unwrap_or_default();
                            if status == 200 {
                                "200".to_owned()
                            } else {
                                let name = serde_json::from_str::<schemas::xki::ErrorBody>(&text)
                                    .map_or_else(
                                        |_| "?".to_owned(),
                                        |b| b.error_name.as_str().to_owned(),
                                    );
                                format!("{status} {name}")
                            }
                        }
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(_) => "transport-error".to_owned(),
                    };
                    if t0 >= started + warmup {
                        let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                        stats.latencies_us.push(us);
                        *stats.outcomes.entry(outcome).or_default() += 1;
                    }
                }
                stats
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await?);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let measured = (Instant::now().min(stop_at) - (started + warmup))
        .as_secs_f64()
        .max(1e-9);
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for s in &results {
        for (k, v) in &s.outcomes {
            *outcomes.entry(k.clone()).or_default() += v;
        }
    }
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[idx]) / 1000.0
    };
    let rps = latencies.len() as f64 / measured;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "connections": args.connections, "plaintext_bytes": args.plaintext_bytes,
                "requests": latencies.len(), "seconds": measured, "rps": rps,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0), "outcomes": outcomes,
            })
        );
    } else {
        println!(
            "{} conn, {} B: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:?}",
            args.connections,
            args.plaintext_bytes,
            latencies.len(),
            measured,
            rps,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            outcomes
        );
    }
    Ok(())
}
