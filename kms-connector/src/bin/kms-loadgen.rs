//! `kms-loadgen`: a bounded load generator for the kms-connector's OpenAPI. Loopback only,
//! signed requests (ACS3-HMAC-SHA256 as the Tea SDKs send them, or the HMAC-SHA1 RPC
//! signature), a fresh nonce each request, one keep-alive connection per worker, HTTP or
//! HTTPS. Stops after `--duration` or `--requests`, whichever comes first, and prints
//! throughput, latency percentiles, every HTTP status / error `Code` seen, and its own CPU time
//! per request (so a bench can show the generator costs little next to the server).

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use schemas::acs::{Acs3Request, Credential, RpcRequest, encode_parameters, sign_acs3, sign_rpc};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(
    name = "kms-loadgen",
    about = "Bounded, signed KMS OpenAPI load on a loopback kms-connector"
)]
struct Args {
    /// Server base URL, http://127.0.0.1:PORT or https://localhost:PORT (must be loopback).
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that issued the server's certificate (HTTPS).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The OpenAPI action to load.
    #[arg(long, value_enum, default_value_t = LoadAction::Encrypt)]
    action: LoadAction,
    /// KeyId (or alias/…) the action uses.
    #[arg(long)]
    key_id: String,
    /// KeyVersionId (asymmetric-sign).
    #[arg(long)]
    key_version_id: Option<String>,
    /// Signing algorithm (asymmetric-sign).
    #[arg(long, default_value = "RSA_PSS_SHA_256")]
    algorithm: String,
    /// Plaintext bytes (encrypt, decrypt), or NumberOfBytes (generate-data-key).
    #[arg(long, default_value_t = 32)]
    plaintext_bytes: usize,
    /// Request signature.
    #[arg(long, value_enum, default_value_t = SignatureKind::Acs3HmacSha256)]
    signature: SignatureKind,
    /// AccessKey id.
    #[arg(long)]
    access_key_id: String,
    /// File holding the AccessKey secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// Concurrent keep-alive connections (one worker each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Target rate in requests per second across all connections (soaks); without it every
    /// connection sends its next request as soon as the previous one is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many measured requests (warm-up requests not counted).
    #[arg(long, default_value_t = 10_000_000)]
    requests: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runtime threads of the generator itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadAction {
    Encrypt,
    /// Decrypt of one blob, made by one Encrypt before the load starts.
    Decrypt,
    GenerateDataKey,
    AsymmetricSign,
}

impl LoadAction {
    fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::AsymmetricSign => "AsymmetricSign",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SignatureKind {
    /// `Authorization: ACS3-HMAC-SHA256 …` (alibabacloud-kms20160120).
    #[value(name = "acs3-hmac-sha256")]
    Acs3HmacSha256,
    /// `Signature=` parameter, HMAC-SHA1 (aliyun-python-sdk-kms).
    #[value(name = "hmac-sha1")]
    HmacSha1,
}

/// One OpenAPI call, signed afresh (date, nonce) for every request.
struct Call {
    action: &'static str,
    params: Vec<(String, String)>,
}

/// What signs the calls: the credential, the algorithm and the `host` the server sees.
struct Signer {
    credential: Credential,
    kind: SignatureKind,
    authority: String,
}

/// A signed POST to `/`: the form body and the headers to send (`host` is reqwest's own).
struct SignedCall {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const FORM: &str = "application/x-www-form-urlencoded";

impl Signer {
    fn sign(&self, call: &Call) -> Result<SignedCall> {
        // 32 hex digits, as the SDKs make them.
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let now = time::OffsetDateTime::now_utc();
        let params: Vec<(&str, &str)> = call
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.kind {
            SignatureKind::Acs3HmacSha256 => {
                let body = encode_parameters(params.iter().copied()).into_bytes();
                let signed = sign_acs3(
                    &self.credential,
                    &Acs3Request {
                        method: "POST",
                        host: &self.authority,
                        path: "/",
                        action: call.action,
                        version: schemas::kms::API_VERSION,
                        query: &[],
                        body: &body,
                        content_type: Some(FORM),
                        nonce: &nonce,
                    },
                    now,
                )?;
                let headers = signed
                    .headers
                    .into_iter()
                    .filter(|(name, _)| name != "host")
                    .collect();
                Ok(SignedCall { headers, body })
            }
            SignatureKind::HmacSha1 => {
                let mut all = params;
                all.push(("Format", "JSON"));
                let pairs = sign_rpc(
                    &self.credential,
                    &RpcRequest {
                        method: "POST",
                        action: call.action,
                        version: schemas::kms::API_VERSION,
                        params: &all,
                        nonce: &nonce,
                    },
                    now,
                )?;
                Ok(SignedCall {
                    headers: vec![("content-type".to_owned(), FORM.to_owned())],
                    body: encode_parameters(pairs).into_bytes(),
                })
            }
        }
    }
}

/// Sends one signed call; the status and the body text.
async fn send(
    client: &reqwest::Client,
    url: &str,
    signed: SignedCall,
) -> Result<(u16, String), reqwest::Error> {
    let mut request = client.post(url).body(signed.body);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// `200`, or `<status> <Code>` from the Alibaba error body.
fn outcome(status: u16, body: &str) -> String {
    if status == 200 {
        return "200".to_owned();
    }
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    format!("{status} {code}")
}

/// User + system CPU time of this whole process. `getrusage` needs `unsafe` (forbidden in
/// this workspace), so this reads the same counters from `/proc/self/stat` (clock ticks of
/// 1/100 s, the fixed Linux USER_HZ): 10 ms resolution, fine over runs of seconds.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may itself hold spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    outcomes: BTreeMap<String, u64>,
}

fn check_loopback(url: &reqwest::Url) -> Result<String> {
    let host = url.host_str().context("--url has no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    for addr in (host.as_str(), port).to_socket_addrs()? {
        if !addr.ip().is_loopback() {
            bail!(
                "{host} resolves to {}, not loopback: this tool only loads local servers",
                addr.ip()
            );
        }
    }
    // The `host` header reqwest sends, which ACS3 signs.
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

fn client(ca: Option<&reqwest::Certificate>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(1)
        .http1_only()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    Ok(builder.build()?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let url = reqwest::Url::parse(&args.url).context("--url")?;
    let authority = check_loopback(&url)?;
    if args.connections == 0 || args.duration <= 0.0 || args.threads == 0 {
        bail!("--connections, --duration and --threads must be positive");
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    let secret = std::fs::read_to_string(&args.secret_file).context("--secret-file")?;
    let signer = Arc::new(Signer {
        credential: Credential::new(args.access_key_id.clone(), secret.trim_end().to_owned()),
        kind: args.signature,
        authority,
    });
    let ca = match &args.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).context("--ca-file")?;
            Some(
                reqwest::Certificate::from_pem(&pem)
                    .context("--ca-file is not a PEM certificate")?,
            )
        }
        None => None,
    };
    let target = format!("{}/", args.url.trim_end_matches('/'));
    let plaintext = "Z".repeat(args.plaintext_bytes);
    let key = ("KeyId".to_owned(), args.key_id.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let call = match args.action {
        LoadAction::Encrypt => Call {
            action: "Encrypt",
            params: vec![key, ("Plaintext".into(), plaintext)],
        },
        LoadAction::GenerateDataKey => Call {
            action: "GenerateDataKey",
            params: vec![
                key,
                ("NumberOfBytes".into(), args.plaintext_bytes.to_string()),
            ],
        },
        LoadAction::AsymmetricSign => {
            let version = args
                .key_version_id
                .clone()
                .context("asymmetric-sign needs --key-version-id")?;
            let digest = Sha256::digest(b"kms-loadgen AsymmetricSign message");
            Call {
                action: "AsymmetricSign",
                params: vec![
                    key,
                    ("KeyVersionId".into(), version),
                    ("Algorithm".into(), args.algorithm.clone()),
                    ("Digest".into(), schemas::b64::encode(digest)),
                ],
            }
        }
        LoadAction::Decrypt => {
            let encrypt = Call {
                action: "Encrypt",
                params: vec![key, ("Plaintext".into(), plaintext)],
            };
            let (status, body) = runtime
                .block_on(send(&client(ca.as_ref())?, &target, signer.sign(&encrypt)?))
                .context("the Encrypt that makes the blob to decrypt")?;
            let blob = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("CiphertextBlob")?.as_str().map(str::to_owned));
            let Some(blob) = blob.filter(|_| status == 200) else {
                bail!("the Encrypt that makes the blob to decrypt answered {status}: {body}");
            };
            Call {
                action: "Decrypt",
                params: vec![("CiphertextBlob".into(), blob)],
            }
        }
    };
    let call = Arc::new(call);

    // `slots` numbers the rate schedule; `counted` the measured requests, against --requests.
    let (slots, counted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);
    let interval = args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let (results, cpu_at_start) = runtime.block_on(async {
        let cpu_at_start = tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            process_cpu()
        });
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let client = client(ca.as_ref())?;
            let (signer, call, target, slots, counted) = (
                signer.clone(),
                call.clone(),
                target.clone(),
                slots.clone(),
                counted.clone(),
            );
            let max = args.requests;
            tasks.push(tokio::spawn(async move {
                let mut stats = WorkerStats::default();
                loop {
                    // Rate mode paces one shared schedule (request i is due at i / rate) and
                    // counts latency from the due time, as wrk2 does, so a server falling
                    // behind shows in the percentiles instead of slowing the generator down.
                    let due = match interval {
                        Some(step) => {
                            let slot = slots.fetch_add(1, Ordering::Relaxed);
                            let due = started + step.mul_f64(slot as f64);
                            tokio::time::sleep_until(due.into()).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    let measured = due >= measure_from;
                    if due >= stop_at
                        || (measured && counted.fetch_add(1, Ordering::Relaxed) >= max)
                    {
                        break;
                    }
                    let Ok(signed) = signer.sign(&call) else {
                        break;
                    };
                    let outcome = match send(&client, &target, signed).await {
                        Ok((status, body)) => outcome(status, &body),
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(_) => "transport-error".to_owned(),
                    };
                    if measured {
                        let us = u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX);
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
        Ok::<_, anyhow::Error>((out, cpu_at_start.await?))
    })?;
    let cpu_at_end = process_cpu();
    let measured = (Instant::now().min(stop_at) - measure_from)
        .as_secs_f64()
        .max(1e-9);
    report(&args, &results, measured, cpu_at_start, cpu_at_end);
    Ok(())
}

fn report(
    args: &Args,
    results: &[WorkerStats],
    measured: f64,
    cpu_at_start: Option<Duration>,
    cpu_at_end: Option<Duration>,
) {
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for s in results {
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
    let requests = latencies.len();
    let rps = requests as f64 / measured;
    // CPU of the measured window only (warm-up and the decrypt's first Encrypt excluded).
    let cpu = cpu_at_start
        .zip(cpu_at_end)
        .map(|(start, end)| end.saturating_sub(start).as_secs_f64());
    let cpu_us_per_request = cpu
        .filter(|_| requests > 0)
        .map(|s| s * 1e6 / requests as f64);
    let signature = match args.signature {
        SignatureKind::Acs3HmacSha256 => "ACS3-HMAC-SHA256",
        SignatureKind::HmacSha1 => "HMAC-SHA1",
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "action": args.action.name(), "signature": signature,
                "connections": args.connections, "plaintext_bytes": args.plaintext_bytes,
                "target_rps": args.rate, "requests": requests, "seconds": measured, "rps": rps,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "outcomes": outcomes,
                "loadgen_cpu_seconds": cpu, "loadgen_cpu_us_per_request": cpu_us_per_request,
            })
        );
    } else {
        let rate = args
            .rate
            .map_or_else(String::new, |r| format!(", target {r:.0} req/s"));
        let cpu = cpu_us_per_request.map_or_else(
            || "loadgen CPU n/a".to_owned(),
            |us| format!("loadgen CPU {us:.0} µs/req"),
        );
        println!(
            "{} {signature}, {} conn, {} B{rate}: {requests} requests in {measured:.2} s = {rps:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {cpu}; {outcomes:?}",
            args.action.name(),
            args.connections,
            args.plaintext_bytes,
            pct(0.5),
            pct(0.99),
            pct(1.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use schemas::acs::{Algorithm, RequestParts, Secret, Verifier};

    use super::*;

    fn signer(kind: SignatureKind) -> Signer {
        Signer {
            credential: Credential::new("LTAI5tLoadgenTest", "loadgen-secret"),
            kind,
            authority: "127.0.0.1:8443".to_owned(),
        }
    }

    /// What the server sees: the signed headers plus the `host` reqwest adds.
    fn verify(signer: &Signer, signed: &SignedCall) -> schemas::acs::Verified {
        let mut headers = signed.headers.clone();
        headers.push(("host".to_owned(), signer.authority.clone()));
        let request = RequestParts {
            method: "POST",
            target: "/",
            headers: &headers,
            body: &signed.body,
        };
        let lookup = |id: &str| (id == "LTAI5tLoadgenTest").then(|| Secret::from("loadgen-secret"));
        Verifier::new()
            .verify(&request, lookup, time::OffsetDateTime::now_utc())
            .unwrap()
    }

    #[test]
    fn both_signatures_verify_with_a_fresh_nonce_each() {
        let call = Call {
            action: "Encrypt",
            params: vec![
                ("KeyId".into(), "alias/x y".into()),
                ("Plaintext".into(), "ZZ*~+".into()),
            ],
        };
        for (kind, algorithm) in [
            (SignatureKind::Acs3HmacSha256, Algorithm::Acs3HmacSha256),
            (SignatureKind::HmacSha1, Algorithm::RpcHmacSha1),
        ] {
            let signer = signer(kind);
            let first = verify(&signer, &signer.sign(&call).unwrap());
            let second = verify(&signer, &signer.sign(&call).unwrap());
            assert_eq!(first.algorithm, algorithm);
            assert_eq!(first.action.as_deref(), Some("Encrypt"));
            assert_ne!(first.nonce, second.nonce);
        }
    }

    #[test]
    fn outcomes_name_status_and_code() {
        assert_eq!(outcome(200, "{}"), "200");
        assert_eq!(
            outcome(400, r#"{"HttpStatus":400,"Code":"UnsupportedOperation"}"#),
            "400 UnsupportedOperation"
        );
        assert_eq!(outcome(502, "<html>"), "502 ?");
    }

    #[test]
    fn reads_its_own_cpu_time() {
        // Spinning moves the counter by at least one tick (loaded box: allow 5 s wall time).
        let before = process_cpu().unwrap();
        let spin = Instant::now();
        while process_cpu().unwrap() <= before {
            assert!(
                spin.elapsed() < Duration::from_secs(5),
                "CPU time did not move"
            );
        }
    }
}
