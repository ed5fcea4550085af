//! Fault drills with the real binaries (ekm on SoftHSM, xki-proxy with a remote EKM, the
//! kms-connector on SQLite), each while a stream of Encrypts runs on an external and a software
//! key: the EKM killed and restarted, the proxy killed and restarted, the database
//! write-locked, and a low-privilege user attacking the HYOK link while the root encrypts.
//!
//! Each drill asserts that the errors during the fault are the retryable ones
//! ([`RETRYABLE`]), that software keys never fail because of an external fault, that the stack
//! recovers with no operator action, and that every ciphertext made before or during the fault
//! decrypts after it (count made = count decrypted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    Connector, Ekm, ExternalInstance, ExtraAccessKey, KmsClient, Pki, Proxy, Service, field,
    wait_for,
};
use serde_json::Value;
use tokio::sync::Mutex;

/// What a caller may see while a dependency is down: both tell it to retry.
const RETRYABLE: [(u16, &str); 2] = [
    (503, "ServiceUnavailableTemporary"),
    (429, "Rejected.Throttling"),
];
const HEALTH_INTERVAL_SECS: u64 = 2;
const TIMEOUT_MS: u64 = 500;
/// Recovery deadline once the failed part is back (a deadline, not a sleep).
const RECOVERY: Duration = Duration::from_secs(20);

struct Stack {
    _temp: tempfile::TempDir,
    ekm: Ekm,
    proxy: Proxy,
    proxy_service: Service,
    connector: Connector,
    _connector_service: Service,
    kms: KmsClient,
    external_key: String,
    software_key: String,
}

async fn stack(extra: &[ExtraAccessKey]) -> Stack {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_owned();
    let pki = Pki::init(&dir.join("pki"));
    let ekm = Ekm::start(&dir, &pki).await;
    let proxy = Proxy::configure(&dir, &pki, ekm.port);
    let proxy_service = proxy.start().await;
    let connector = Connector::configure_with(
        &dir,
        None,
        Some(&ExternalInstance {
            settings_file: proxy.settings_file.clone(),
            ca_file: pki.file("ca.pem"),
            health_interval_secs: HEALTH_INTERVAL_SECS,
            timeout_ms: TIMEOUT_MS,
        }),
        extra,
    );
    let connector_service = connector.start().await;
    let kms = connector.client();
    let instance = connector.external_instance.clone().unwrap();
    kms.ok("ConnectKmsInstance", &[("KmsInstanceId", &instance)])
        .await;
    let minted = proxy.keys(&["create", "--description", "drill key"]);
    let external_key_id = minted["externalKeyId"].as_str().unwrap().to_owned();
    let external_key = field(
        &kms.ok(
            "CreateKey",
            &[
                ("DKMSInstanceId", &instance),
                ("ExternalKeyId", &external_key_id),
            ],
        )
        .await,
        "KeyMetadata.KeyId",
    );
    let software_key = field(&kms.ok("CreateKey", &[]).await, "KeyMetadata.KeyId");
    Stack {
        _temp: temp,
        ekm,
        proxy,
        proxy_service,
        connector,
        _connector_service: connector_service,
        kms,
        external_key,
        software_key,
    }
}

/// Ciphertexts made, and the refusals met, by a [`Stream`].
#[derive(Default)]
struct Tally {
    made: Vec<(String, String, &'static str)>,
    refused: BTreeMap<(&'static str, u16, String), usize>,
}

/// Encrypts in a loop on both keys until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn start(kms: &KmsClient, keys: [(&'static str, String); 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (kms, stop_flag, shared) = (kms.clone(), stop.clone(), tally.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop_flag.load(Ordering::SeqCst) {
                for (kind, key) in &keys {
                    n += 1;
                    let plaintext = format!("{kind} drill plaintext {n}");
                    let (status, body) = kms
                        .call("Encrypt", &[("KeyId", key), ("Plaintext", &plaintext)])
                        .await;
                    let mut tally = shared.lock().await;
                    if status == 200 {
                        tally
                            .made
                            .push((field(&body, "CiphertextBlob"), plaintext, kind));
                    } else {
                        let code = body["Code"].as_str().unwrap_or("?").to_owned();
                        *tally.refused.entry((kind, status, code)).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { stop, tally, task }
    }

    /// Stops the stream and returns what it saw.
    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.tally).ok().unwrap().into_inner()
    }
}

impl Stack {
    fn keys(&self) -> [(&'static str, String); 2] {
        [
            ("external", self.external_key.clone()),
            ("software", self.software_key.clone()),
        ]
    }

    /// Waits until the external key encrypts again; how long that took.
    async fn recovered(&self) -> Duration {
        let started = Instant::now();
        wait_for("the external key to work again", RECOVERY, || async {
            let (status, _) = self
                .kms
                .call(
                    "Encrypt",
                    &[("KeyId", &self.external_key), ("Plaintext", "probe")],
                )
                .await;
            (status == 200).then_some(())
        })
        .await;
        started.elapsed()
    }

    /// Every ciphertext decrypts to its plaintext.
    async fn all_decrypt(&self, tally: &Tally) {
        let mut decrypted = 0;
        for (blob, plaintext, kind) in &tally.made {
            let body = self.kms.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
            assert_eq!(&field(&body, "Plaintext"), plaintext, "{kind}");
            decrypted += 1;
        }
        assert_eq!(decrypted, tally.made.len());
        let external = tally.made.iter().filter(|m| m.2 == "external").count();
        assert!(external > 0, "no external ciphertext was made");
        eprintln!(
            "made {} ciphertexts ({external} external), every one decrypted; refused: {:?}",
            tally.made.len(),
            tally.refused
        );
    }
}

/// Only retryable refusals, and none on software keys.
fn assert_retryable(tally: &Tally, fault: &str) {
    for ((kind, status, code), count) in &tally.refused {
        assert_ne!(
            *kind, "software",
            "{fault}: a software key failed {count}× with {status} {code}"
        );
        assert!(
            RETRYABLE.contains(&(*status, code.as_str())),
            "{fault}: {count}× {status} {code} is not a retryable answer"
        );
    }
}

/// Waits until the stream has met the fault (some external refusal).
async fn until_refused(stream: &Stream, fault: &str) {
    wait_for(fault, Duration::from_secs(30), || async {
        (!stream.tally.lock().await.refused.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ekm_killed_and_restarted() {
    let mut s = stack(&[]).await;
    let stream = Stream::start(&s.kms, s.keys());
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.ekm.service.kill();
    until_refused(&stream, "external requests to fail with the EKM killed").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.ekm.restart().await;
    let back = s.recovered().await;
    eprintln!("external key usable {back:?} after the EKM was ready again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = stream.stop().await;
    assert_retryable(&tally, "EKM killed");
    s.all_decrypt(&tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_and_restarted() {
    let mut s = stack(&[]).await;
    let stream = Stream::start(&s.kms, s.keys());
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.proxy_service.kill();
    until_refused(&stream, "external requests to fail with the proxy killed").await;
    // Longer than a health interval: the instance is in Error, probing with backoff.
    tokio::time::sleep(Duration::from_secs(HEALTH_INTERVAL_SECS + 1)).await;
    s.proxy_service = s.proxy.start().await;
    let back = s.recovered().await;
    eprintln!("external key usable {back:?} after the proxy was ready again");
    // The probe retries at most every second while the link is down.
    assert!(back < Duration::from_secs(5), "recovery took {back:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = stream.stop().await;
    assert_retryable(&tally, "proxy killed");
    s.all_decrypt(&tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_write_locked() {
    use diesel::Connection as _;
    use diesel::connection::SimpleConnection as _;
    let s = stack(&[]).await;
    let stream = Stream::start(&s.kms, s.keys());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = s
        .connector
        .database_url
        .strip_prefix("sqlite://")
        .unwrap()
        .to_owned();
    let mut lock = diesel::SqliteConnection::establish(&path).unwrap();
    lock.batch_execute("PRAGMA busy_timeout = 10000; BEGIN IMMEDIATE;")
        .unwrap();
    let locked = Instant::now();
    // Every request answers within the database timeout (1 s), retryable.
    let (status, body) = s
        .kms
        .call(
            "Encrypt",
            &[("KeyId", &s.software_key), ("Plaintext", "while locked")],
        )
        .await;
    let answered = locked.elapsed();
    assert_eq!(
        (status, field(&body, "Code").as_str()),
        (503, "ServiceUnavailableTemporary"),
        "{body}"
    );
    assert!(answered < Duration::from_millis(2500), "{answered:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    lock.batch_execute("ROLLBACK").unwrap();
    drop(lock);
    let back = s.recovered().await;
    eprintln!("usable {back:?} after the lock was released");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = stream.stop().await;
    for ((_, status, code), count) in &tally.refused {
        assert!(
            RETRYABLE.contains(&(*status, code.as_str())),
            "database locked: {count}× {status} {code} is not a retryable answer"
        );
    }
    assert!(
        !tally.refused.is_empty(),
        "the stream never met the locked database"
    );
    s.all_decrypt(&tally).await;
}

/// A create-only user hammers CreateKey with hostile External Key IDs and an account member
/// (no identity policy) tries to disconnect and reconnect the link, while the root encrypts on
/// the external key: not one of the root's requests fails, and the instance stays Connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_privilege_users_cannot_take_the_link_down() {
    let account = e2e::stack::ACCOUNT_ID;
    let s = stack(&[
        ExtraAccessKey {
            principal: format!("acs:ram::{account}:user/creator"),
            policy: Some(
                r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:CreateKey"],"Resource":"*"}]}"#
                    .into(),
            ),
        },
        ExtraAccessKey {
            principal: format!("acs:ram::{account}:user/member"),
            policy: None,
        },
    ])
    .await;
    let instance = s.connector.external_instance.clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (creator, member) = (s.connector.extra_client(0), s.connector.extra_client(1));
    let attacks = {
        let (stop, instance) = (stop.clone(), instance.clone());
        tokio::spawn(async move {
            let hostile = [
                "..",
                ".",
                "%2e%2e",
                "../health",
                "a/b",
                "no-such-key",
                "...",
            ];
            let mut tries = 0;
            while !stop.load(Ordering::SeqCst) {
                for id in hostile {
                    let (status, _) = creator
                        .call(
                            "CreateKey",
                            &[("DKMSInstanceId", &instance), ("ExternalKeyId", id)],
                        )
                        .await;
                    assert_ne!(status, 200, "CreateKey with {id:?}");
                    tries += 1;
                }
                for action in ["DisconnectKmsInstance", "ConnectKmsInstance"] {
                    let (status, body) = member.call(action, &[("KmsInstanceId", &instance)]).await;
                    assert_eq!(
                        (status, field(&body, "Code").as_str()),
                        (403, "Forbidden.NoPermission"),
                        "{action}: {body}"
                    );
                    tries += 1;
                }
            }
            tries
        })
    };
    let mut failures: Vec<Value> = Vec::new();
    let mut done = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let (status, body) = s
            .kms
            .call(
                "Encrypt",
                &[("KeyId", &s.external_key), ("Plaintext", "the root's data")],
            )
            .await;
        done += 1;
        if status != 200 {
            failures.push(body);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let tries = attacks.await.unwrap();
    eprintln!("{done} root encryptions during {tries} attacks");
    assert!(tries > 50, "only {tries} attacks");
    assert!(
        failures.is_empty(),
        "{} root requests failed: {failures:?}",
        failures.len()
    );
    let status = field(
        &s.kms
            .ok("GetKmsInstance", &[("KmsInstanceId", &instance)])
            .await,
        "KmsInstance.Status",
    );
    assert_eq!(status, "Connected");
}
