//! Instances through the API (ListKmsInstances, GetKmsInstance, ConnectKmsInstance,
//! DisconnectKmsInstance; the store row follows), and the mapping of every backend failure onto
//! its OpenAPI error, through a fault-injecting backend on the spare instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use harness::{Client, SOFTWARE, SPARE, Setup, TestApp};
use kms_connector::backend::software::{RootKey, SoftwareBackend};
use kms_connector::backend::{
    BackendError, Capabilities, ConnectionError, InstanceStatus, KeyBackend, KeyContext,
    NewVersion, VersionMaterial,
};
use kms_connector::instances::{BackendOverride, InstanceControl};
use kms_connector::store::{ConnectionState, InstanceKind, Store};
use zeroize::Zeroizing;

/// A software backend whose state and failures a test sets.
struct Faulty {
    inner: SoftwareBackend,
    status: Mutex<InstanceStatus>,
    fail: Mutex<Option<BackendError>>,
}

impl Faulty {
    fn fail_with(&self, error: Option<BackendError>) {
        *self.fail.lock().unwrap() = error;
    }

    fn failure(&self) -> Result<(), BackendError> {
        self.fail.lock().unwrap().clone().map_or(Ok(()), Err)
    }
}

#[async_trait::async_trait]
impl KeyBackend for Faulty {
    fn kind(&self) -> InstanceKind {
        InstanceKind::Software
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn status(&self) -> InstanceStatus {
        *self.status.lock().unwrap()
    }
    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError> {
        self.failure()?;
        self.inner.new_version(request).await
    }
    async fn encrypt(
        &self,
        key: KeyContext<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.failure()?;
        self.inner.encrypt(key, plaintext, aad).await
    }
    async fn decrypt(
        &self,
        key: KeyContext<'_>,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.failure()?;
        self.inner.decrypt(key, payload, aad).await
    }
}

struct Control(Arc<Faulty>);

#[async_trait::async_trait]
impl InstanceControl for Control {
    async fn connect(&self) -> InstanceStatus {
        *self.0.status.lock().unwrap() = InstanceStatus::CONNECTED;
        InstanceStatus::CONNECTED
    }
    async fn disconnect(&self) -> InstanceStatus {
        let status = InstanceStatus {
            state: ConnectionState::Disconnected,
            error: None,
        };
        *self.0.status.lock().unwrap() = status;
        status
    }
    async fn check_health(&self) -> InstanceStatus {
        *self.0.status.lock().unwrap()
    }
}

async fn start() -> (TestApp, Arc<Faulty>) {
    let faulty = Arc::new(Faulty {
        inner: SoftwareBackend::new(RootKey::from_bytes([9; 32])),
        status: Mutex::new(InstanceStatus::CONNECTED),
        fail: Mutex::new(None),
    });
    let backend: Arc<dyn KeyBackend> = faulty.clone();
    let control: Arc<dyn InstanceControl> = Arc::new(Control(faulty.clone()));
    let backends = BTreeMap::from([(
        SPARE.to_owned(),
        BackendOverride {
            backend,
            control: Some(control),
        },
    )]);
    (
        TestApp::start_with(Setup {
            backends,
            ..Setup::default()
        })
        .await,
        faulty,
    )
}

async fn spare_key(c: &Client) -> String {
    let meta = c.ok("CreateKey", &[("DKMSInstanceId", SPARE)]).await;
    meta["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

async fn stored_state(app: &TestApp, id: &str) -> (ConnectionState, Option<String>) {
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let row = store.get_instance(id).await.unwrap();
    (row.connection_state, row.connection_error_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_instances() {
    let (app, _) = start().await;
    let c = app.root();
    let listed = c.ok("ListKmsInstances", &[]).await;
    assert_eq!(listed["TotalCount"], 2);
    let ids: Vec<&str> = listed["KmsInstances"]["KmsInstance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["KmsInstanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [SOFTWARE, SPARE]);
    let page = c
        .ok(
            "ListKmsInstances",
            &[("PageNumber", "2"), ("PageSize", "1")],
        )
        .await;
    assert_eq!(
        page["KmsInstances"]["KmsInstance"][0]["KmsInstanceId"],
        SPARE
    );

    for _ in 0..2 {
        c.ok("CreateKey", &[]).await;
    }
    let got = c.ok("GetKmsInstance", &[("KmsInstanceId", SOFTWARE)]).await["KmsInstance"].clone();
    assert_eq!(got["InstanceId"], SOFTWARE);
    assert_eq!(got["InstanceName"], "software");
    assert_eq!(got["InstanceType"], "software");
    assert_eq!(got["Status"], "Connected");
    assert_eq!(got["ConnectionErrorCode"], "");
    assert_eq!(got["KeyNum"], 2);
    assert!(got["CreateTime"].as_str().unwrap().ends_with('Z'), "{got}");
    c.call(
        "GetKmsInstance",
        &[("KmsInstanceId", "kst-hzz68d1fd85nosuchinst")],
    )
    .await
    .expect("Forbidden.DKMSInstanceNotFound", 403);
    c.call("GetKmsInstance", &[])
        .await
        .expect("MissingParameter", 400);
    c.call("ConnectKmsInstance", &[("KmsInstanceId", SOFTWARE)])
        .await
        .expect("Rejected.UnsupportedOperation", 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_instance_refuses_crypto_until_reconnected() {
    let (app, _) = start().await;
    let c = app.root();
    let key = spare_key(&c).await;
    let blob = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "before")])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();

    let answer = c
        .ok("DisconnectKmsInstance", &[("KmsInstanceId", SPARE)])
        .await;
    assert_eq!(answer["Status"], "Disconnected");
    assert_eq!(
        stored_state(&app, SPARE).await,
        (ConnectionState::Disconnected, None)
    );
    let got = c.ok("GetKmsInstance", &[("KmsInstanceId", SPARE)]).await;
    assert_eq!(got["KmsInstance"]["Status"], "Disconnected");
    for (action, params) in [
        ("Encrypt", vec![("KeyId", key.as_str()), ("Plaintext", "p")]),
        ("Decrypt", vec![("CiphertextBlob", blob.as_str())]),
        ("GenerateDataKey", vec![("KeyId", key.as_str())]),
    ] {
        let reply = c.call(action, &params).await;
        reply.expect("Rejected.Unavailable", 409);
        assert!(
            reply.message().contains(SPARE) && reply.message().contains("Disconnected"),
            "{}",
            reply.body
        );
    }
    // Metadata still works; new keys wait for the connection.
    c.ok("DescribeKey", &[("KeyId", &key)]).await;
    c.call("CreateKey", &[("DKMSInstanceId", SPARE)])
        .await
        .expect("Forbidden.DKMSInstanceStateInvalid", 403);

    let answer = c
        .ok("ConnectKmsInstance", &[("KmsInstanceId", SPARE)])
        .await;
    assert_eq!(answer["Status"], "Connected");
    assert_eq!(
        stored_state(&app, SPARE).await,
        (ConnectionState::Connected, None)
    );
    let dec = c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
    assert_eq!(dec["Plaintext"], "before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_map_onto_openapi_errors() {
    let (app, faulty) = start().await;
    let c = app.root();
    let key = spare_key(&c).await;
    let blob = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = [
        (
            BackendError::ExternalKeyDisabled,
            "Rejected.Unavailable",
            409,
            Some("the external key is disabled in the XKI proxy"),
        ),
        (
            BackendError::ExternalKeyNotFound,
            "Rejected.Unavailable",
            409,
            Some("not found in the XKI proxy"),
        ),
        (
            BackendError::Unavailable("the XKI proxy is not reachable".into()),
            "Rejected.Unavailable",
            409,
            Some("not reachable"),
        ),
        (
            BackendError::Throttled,
            "Rejected.Throttling",
            429,
            Some("QPS Limit Exceeded"),
        ),
        (
            BackendError::Timeout,
            "ServiceUnavailableTemporary",
            503,
            None,
        ),
        (
            BackendError::InvalidCiphertext,
            "InvalidParameter",
            400,
            Some("CiphertextBlob"),
        ),
        (
            BackendError::Unsupported("no such mode"),
            "Rejected.UnsupportedOperation",
            400,
            Some("no such mode"),
        ),
        (
            BackendError::Internal("hsm slot 3 detail".into()),
            "InternalFailure",
            500,
            Some("Internal Failure."),
        ),
    ];
    for (error, code, status, message) in cases {
        faulty.fail_with(Some(error.clone()));
        for (action, params) in [
            ("Encrypt", vec![("KeyId", key.as_str()), ("Plaintext", "p")]),
            ("Decrypt", vec![("CiphertextBlob", blob.as_str())]),
            ("GenerateDataKey", vec![("KeyId", key.as_str())]),
        ] {
            let reply = c.call(action, &params).await;
            reply.expect(code, status);
            if let Some(message) = message {
                assert!(
                    reply.message().contains(message),
                    "{error:?}: {}",
                    reply.body
                );
            }
            assert!(
                !reply.message().contains("hsm slot"),
                "internal detail leaked: {}",
                reply.body
            );
        }
    }
    // At CreateKey, an unknown or unusable external key is the caller's parameter.
    let before = c.ok("ListKeys", &[]).await["TotalCount"].as_u64().unwrap();
    faulty.fail_with(Some(BackendError::ExternalKeyNotFound));
    let reply = c.call("CreateKey", &[("DKMSInstanceId", SPARE)]).await;
    reply.expect("InvalidParameter", 400);
    assert!(reply.message().contains("ExternalKeyId"), "{}", reply.body);
    faulty.fail_with(Some(BackendError::ExternalKeyUnusable(
        "usage is SIGN".into(),
    )));
    c.call("CreateKey", &[("DKMSInstanceId", SPARE)])
        .await
        .expect("InvalidParameter", 400);
    assert_eq!(
        c.ok("ListKeys", &[]).await["TotalCount"].as_u64().unwrap(),
        before,
        "nothing stored"
    );
    faulty.fail_with(None);
    c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_show_in_get_kms_instance() {
    let (app, faulty) = start().await;
    *faulty.status.lock().unwrap() = InstanceStatus {
        state: ConnectionState::Error,
        error: Some(ConnectionError::NotReachable),
    };
    let got = app
        .root()
        .ok("GetKmsInstance", &[("KmsInstanceId", SPARE)])
        .await["KmsInstance"]
        .clone();
    assert_eq!(
        (got["Status"].as_str(), got["ConnectionErrorCode"].as_str()),
        (Some("Error"), Some("XKS_PROXY_NOT_REACHABLE"))
    );
}
