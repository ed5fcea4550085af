//! Encrypt throughput in one run on one machine: a raw `cryptoki` loop (one session, cached
//! handle: `C_EncryptInit` + `C_Encrypt`), the same load through `Pkcs11KeyManager` (worker pool,
//! queue, state check), and through the EKM server over TLS with keep-alive.
//!
//! The raw loop and the `KeyManager` configurations are measured in **paired rounds**: each
//! round runs every one of them for one slice, back to back (the order rotating between
//! rounds), and a configuration's ratio to raw is the median of its per-round ratios. Machine
//! speed on a shared VM drifts by ±10 % over seconds; a ratio of two slices a few seconds apart
//! does not.
//!
//! `cargo bench -p ekm --bench throughput`. Environment: `EKM_BENCH_SECS` (slice length,
//! default 1 s), `EKM_BENCH_ROUNDS` (default 5), `EKM_BENCH_CALLERS` (concurrent `KeyManager`
//! callers, comma-separated, default `16,64`; 64 is the proxy's default `max_in_flight`),
//! `EKM_BENCH_WORKERS` (HSM worker counts, default `1,2`), `EKM_BENCH_SERVER=0` (skip the
//! server rows, e.g. to profile the others).
//! Uses a private SoftHSM2 token directory: re-runs itself once with `SOFTHSM2_CONF` set (see
//! `ekm::testing`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use ekm::ciphertext::{AadFormat, CiphertextMetadata};
use ekm::hsm::aes::{AesUsage, aes_key_template};
use ekm::pkcs11::{Pkcs11Config, Pkcs11KeyManager, TokenSelector, find_token, library};
use ekm::server::{Application, ServerSettings, tls};
use ekm::{CreateKey, EncryptRequest, KeyManager, KeyUsage, OpContext};
use rand::RngCore as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use secrecy::SecretString;
use zeroize::Zeroizing;

const MODULE: &str = ekm::testing::SOFTHSM_MODULE;
const PIN: &str = "bench-pin-1234";
const MARKER: &str = "EKM_BENCH_SOFTHSM_DIR";
/// (plaintext, AAD) sizes: a small payload, and the XKS maxima.
const SIZES: [(usize, usize); 2] = [(32, 16), (4300, 8192)];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    ekm::testing::isolated_softhsm(MARKER, &[]);
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, as
    // a quick smoke test of every path (a debug build's numbers mean nothing).
    let measuring = std::env::args().any(|a| a == "--bench");
    let secs: f64 = env_or("EKM_BENCH_SECS", if measuring { 1.0 } else { 0.1 });
    let rounds: usize = env_or("EKM_BENCH_ROUNDS", if measuring { 5 } else { 1 });
    let callers = list_env("EKM_BENCH_CALLERS", "16,64");
    let worker_counts = list_env("EKM_BENCH_WORKERS", "1,2");
    let with_server = env_or("EKM_BENCH_SERVER", 1) != 0;
    let slice = Duration::from_secs_f64(secs);
    ekm::pkcs11::init_token(
        Path::new(MODULE),
        "bench",
        &SecretString::from("so-1234"),
        &SecretString::from(PIN),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| plaintext / AAD | path | encrypt ops/s (median) | vs raw, 1 thread | vs raw, as many threads as HSM workers |"
    );
    println!("| --- | --- | ---: | ---: | ---: |");
    for (plaintext, aad) in SIZES {
        let sizes = format!("{plaintext} B / {aad} B");
        let threads = worker_counts.iter().copied().max().unwrap_or(1);
        let mut raw = RawLoop::new(plaintext, aad, threads);
        let mut paths: Vec<Row> = (1..=threads).map(Row::Raw).collect();
        for &workers in &worker_counts {
            let load = rt.block_on(ManagerLoad::new(workers, plaintext, aad));
            for &clients in &callers {
                paths.push(Row::Manager(load.clone(), clients));
            }
        }
        // ops[path][round]
        let mut ops = vec![Vec::with_capacity(rounds); paths.len()];
        for round in 0..rounds {
            for i in 0..paths.len() {
                let i = (i + round) % paths.len();
                let measured = match &paths[i] {
                    Row::Raw(threads) => raw.run(slice, *threads),
                    Row::Manager(load, clients) => rt.block_on(load.run(slice, *clients)),
                };
                ops[i].push(measured);
            }
        }
        // Median and range of a row's per-round ratios to raw row `base`.
        let ratio = |i: usize, base: usize| {
            let mut ratios: Vec<f64> = (0..rounds).map(|r| ops[i][r] / ops[base][r]).collect();
            ratios.sort_by(f64::total_cmp);
            format!(
                "{:.0} % ({:.0}–{:.0} %)",
                median(&ratios) * 100.0,
                ratios[0] * 100.0,
                ratios[ratios.len() - 1] * 100.0
            )
        };
        for (i, path) in paths.iter().enumerate() {
            let (name, same) = match path {
                Row::Raw(1) => ("raw cryptoki loop, 1 session, 1 thread".to_owned(), 0),
                Row::Raw(n) => (
                    format!("raw cryptoki loop, {n} sessions, {n} threads"),
                    n - 1,
                ),
                Row::Manager(load, clients) => (
                    format!(
                        "`KeyManager`, {} HSM worker(s), {clients} callers",
                        load.workers
                    ),
                    load.workers - 1,
                ),
            };
            println!(
                "| {sizes} | {name} | {:.0} | {} | {} |",
                median(&ops[i]),
                ratio(i, 0),
                ratio(i, same)
            );
        }
        if !with_server {
            continue;
        }
        let server_run = slice.mul_f64(3.0);
        let server_ops =
            actix_web::rt::System::new().block_on(server_load(server_run, 2, 32, plaintext, aad));
        let raw_now = raw.run(server_run, 1);
        println!(
            "| {sizes} | EKM server, TLS keep-alive, 2 HSM workers, 32 requests in flight | {server_ops:.0} | {:.0} % (one pair) | |",
            server_ops / raw_now * 100.0
        );
    }
    let build = if measuring {
        "bench profile"
    } else {
        "smoke test, not a measurement"
    };
    println!(
        "\nAES-256-GCM encrypt, SoftHSM2, {rounds} paired round(s) of {secs} s slices, {build}"
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list of numbers from the environment.
fn list_env(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: comma-separated numbers"))
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One measured configuration of a round.
enum Row {
    /// The raw loop on this many threads, each with its own session.
    Raw(usize),
    Manager(ManagerLoad, usize),
}

fn config(workers: usize) -> Pkcs11Config {
    let mut c = Pkcs11Config::new(
        MODULE,
        TokenSelector::Label("bench".into()),
        SecretString::from(PIN),
    );
    c.workers = workers;
    c.queue_capacity = 4096;
    c.background = false;
    c
}

/// Raw sessions (one per thread) and one generated key, handle kept: per op a fresh IV, the
/// XKS AAD, `C_EncryptInit` and `C_Encrypt` (cryptoki's length query included), the tag split
/// off.
struct RawLoop {
    sessions: Vec<cryptoki::session::Session>,
    key: cryptoki::object::ObjectHandle,
    plaintext: Vec<u8>,
    aad: Vec<u8>,
    metadata: Vec<u8>,
}

impl RawLoop {
    fn new(plaintext_len: usize, aad_len: usize, threads: usize) -> Self {
        let pkcs11 = library(Path::new(MODULE)).unwrap();
        let slot = find_token(&pkcs11, &TokenSelector::Label("bench".into())).unwrap();
        let sessions: Vec<_> = (0..threads)
            .map(|_| pkcs11.open_rw_session(slot).unwrap())
            .collect();
        let _ = sessions[0].login(
            cryptoki::session::UserType::User,
            Some(&SecretString::from(PIN)),
        );
        let key = sessions[0]
            .generate_key(
                &Mechanism::AesKeyGen,
                &aes_key_template(
                    &format!("raw-bench-{plaintext_len}"),
                    32,
                    AesUsage {
                        encrypt: true,
                        decrypt: true,
                    },
                ),
            )
            .unwrap();
        let metadata = CiphertextMetadata {
            aad_format: AadFormat::Raw,
            key_version: 1,
        }
        .encode();
        Self {
            sessions,
            key,
            plaintext: vec![7u8; plaintext_len],
            aad: vec![9u8; aad_len],
            metadata,
        }
    }

    /// Ops/s of `threads` threads (the first on the calling thread), each on its own session.
    fn run(&mut self, run: Duration, threads: usize) -> f64 {
        let started = Instant::now();
        let Self {
            sessions,
            key,
            plaintext,
            aad,
            metadata,
        } = self;
        let (key, plaintext, aad, metadata) = (*key, &plaintext[..], &aad[..], &metadata[..]);
        let (first, others) = sessions[..threads].split_first_mut().unwrap();
        let ops: u64 = std::thread::scope(|scope| {
            let spawned: Vec<_> = others
                .iter_mut()
                .map(|s| scope.spawn(move || spin(s, key, plaintext, aad, metadata, run)))
                .collect();
            spin(first, key, plaintext, aad, metadata, run)
                + spawned.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        ops as f64 / started.elapsed().as_secs_f64()
    }
}

/// The raw loop on one session for `run`; returns the ops done.
fn spin(
    session: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
    plaintext: &[u8],
    aad: &[u8],
    metadata: &[u8],
    run: Duration,
) -> u64 {
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < run {
        let gcm_aad = AadFormat::Raw.gcm_aad(aad, metadata).unwrap();
        let mut iv = [0u8; 12];
        rand::rng().fill_bytes(&mut iv);
        let params = GcmParams::new(&mut iv, &gcm_aad, 128.into()).unwrap();
        let mut sealed = session
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)
            .unwrap();
        let tag = sealed.split_off(sealed.len() - 16);
        std::hint::black_box((&sealed, &tag, &iv));
        ops += 1;
    }
    ops
}

async fn new_key(m: &dyn KeyManager) -> schemas::xki::ExternalKeyId {
    let ctx = OpContext::new("bench", Duration::from_secs(10));
    m.create_key(
        &ctx,
        CreateKey {
            id: None,
            usage: KeyUsage::BOTH,
            description: None,
        },
    )
    .await
    .unwrap()
    .id
}

/// A `Pkcs11KeyManager` with `workers` HSM workers and one key, loaded by async callers that
/// each build a fresh request per op (as a server handler would).
#[derive(Clone)]
struct ManagerLoad {
    manager: Arc<Pkcs11KeyManager>,
    key: schemas::xki::ExternalKeyId,
    workers: usize,
    plaintext: usize,
    aad: usize,
}

impl ManagerLoad {
    async fn new(workers: usize, plaintext: usize, aad: usize) -> Self {
        let manager = Arc::new(Pkcs11KeyManager::open(config(workers)).await.unwrap());
        let key = new_key(manager.as_ref()).await;
        Self {
            manager,
            key,
            workers,
            plaintext,
            aad,
        }
    }

    async fn run(&self, run: Duration, clients: usize) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (m, key, stop, count) = (
                Arc::clone(&self.manager),
                self.key.clone(),
                Arc::clone(&stop),
                Arc::clone(&count),
            );
            let (plaintext, aad) = (self.plaintext, self.aad);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ctx = OpContext::new("bench", Duration::from_secs(5));
                    let request = EncryptRequest {
                        plaintext: Zeroizing::new(vec![7u8; plaintext]),
                        aad: vec![9u8; aad],
                        want_cdiv: false,
                    };
                    m.encrypt(&ctx, &key, request).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(run).await;
        let done = count.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        done as f64 / elapsed.as_secs_f64()
    }
}

async fn server_load(
    run: Duration,
    workers: usize,
    concurrency: usize,
    plaintext: usize,
    aad: usize,
) -> f64 {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let m: Arc<dyn KeyManager> = Arc::new(Pkcs11KeyManager::open(config(workers)).await.unwrap());
    let key = new_key(m.as_ref()).await;
    let ca = certs::Authority::new("bench CA").unwrap();
    let server = ca
        .issue_server("localhost", &["localhost"], &[localhost])
        .unwrap();
    let client = ca.issue_client("bench", &["bench"]).unwrap();
    let tls_config = tls::server_config(
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
        Some(ca.cert_pem().as_bytes()),
        &["bench".to_owned()],
    )
    .unwrap();
    let settings = ServerSettings {
        listen: SocketAddr::new(localhost, 0),
        liveness_listen: None,
        http_workers: 1,
        ..ServerSettings::default()
    };
    let app = Application::build(settings, tls_config, m).unwrap();
    let port = app.port();
    let handles = app.handles();
    actix_web::rt::spawn(app.run_until_stopped());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![client.cert_der().unwrap()], client.key_der().unwrap())
    .unwrap();
    let http = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(Arc::new(client_tls))
                .limit(concurrency),
        )
        .timeout(Duration::from_secs(10))
        .finish();
    let url = format!("https://localhost:{port}/v1/keys/{key}/encrypt");
    let body = serde_json::json!({
        "plaintext": schemas::b64::encode(vec![7u8; plaintext]),
        "additionalAuthenticatedData": schemas::b64::encode(vec![9u8; aad]),
    });
    let stop = Instant::now() + run;
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body, count) = (http.clone(), url.clone(), body.clone(), count.clone());
        tasks.push(actix_web::rt::spawn(async move {
            while Instant::now() < stop {
                let mut resp = http
                    .post(&url)
                    .insert_header(("x-ekm-deadline-ms", "5000"))
                    .send_json(&body)
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                resp.body().await.unwrap();
                count.set(count.get() + 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ops = count.get() as f64 / started.elapsed().as_secs_f64();
    for h in handles {
        h.stop(false).await;
    }
    ops
}
