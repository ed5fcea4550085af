//! The instance registry: `kst-…` → the backend serving it, built from the configuration and
//! mirrored into the store.
//!
//! The stored row is the connection state every replica shares. An operator's connect or
//! disconnect is written there first (unconditionally: it is the intent); each replica
//! follows the row within one health interval (connecting or disconnecting itself), and writes
//! back what its own health checks observe only while the row still says the operator wants
//! the connection up (`Store::observe_instance_connection`), so that no observation undoes a
//! disconnect made on another replica.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::hardware::HardwareBackend;
use crate::backend::software::SoftwareBackend;
use crate::backend::{ConnectionError, InstanceStatus, KeyBackend};
use crate::config::{Config, ConfigError, InstanceConfig};
use crate::store::{
    ConnectionState, Instance, InstanceKind, NewInstance, Store, StoreError, UnixMillis,
};

/// A background task of an instance (health checks, state persistence).
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What an instance kind with a connection (external) can be told to do.
#[async_trait::async_trait]
pub trait InstanceControl: Send + Sync + 'static {
    /// Connects (external: checks the XKI proxy's health with the configured credentials).
    async fn connect(&self) -> InstanceStatus;
    /// Disconnects on purpose: crypto stops until the next connect.
    async fn disconnect(&self) -> InstanceStatus;
    /// Probes the connection now and returns the state it leads to.
    async fn check_health(&self) -> InstanceStatus;
    /// Sets the state stored before a restart.
    fn restore(&self, _status: InstanceStatus) {}
    /// The connection epoch: every connect, disconnect and restore starts a new one.
    fn epoch(&self) -> u64 {
        0
    }
    /// Sets a state read from the store unless a connect, disconnect or restore came after
    /// epoch `seen` (the read is stale then).
    fn restore_at(&self, _seen: u64, _status: InstanceStatus) {}
    /// Connects unless a connect, disconnect or restore came after epoch `seen`.
    async fn connect_at(&self, _seen: u64) -> InstanceStatus {
        self.connect().await
    }
    /// Every state change (including those the backend makes on its own).
    fn subscribe(&self) -> Option<watch::Receiver<InstanceStatus>> {
        None
    }
    /// The periodic health checks, to be spawned while serving.
    fn health_checks(&self) -> Option<Task> {
        None
    }
    /// How often the health checks run (and so how often the stored state is followed).
    fn health_interval(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// One served instance.
pub struct InstanceHandle {
    /// `kst-…`.
    pub id: String,
    /// Software, hardware or external.
    pub kind: InstanceKind,
    /// Display name.
    pub name: String,
    /// What runs its crypto.
    pub backend: Arc<dyn KeyBackend>,
    /// Connect / disconnect / health (external instances).
    pub control: Option<Arc<dyn InstanceControl>>,
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("controllable", &self.control.is_some())
            .finish_non_exhaustive()
    }
}

/// A backend given instead of the one the configuration would build (tests, fault injection).
#[derive(Clone)]
pub struct BackendOverride {
    /// The backend.
    pub backend: Arc<dyn KeyBackend>,
    /// Its connection control, if it has one.
    pub control: Option<Arc<dyn InstanceControl>>,
}

impl std::fmt::Debug for BackendOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendOverride")
            .field("kind", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

/// Why the registry could not be built or an instance cannot be driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored instance has another kind than its configuration says.
    #[error(
        "instance {id}: stored as {stored}, configured as {configured}; an instance cannot change kind"
    )]
    KindChanged {
        /// The instance.
        id: String,
        /// Stored kind.
        stored: InstanceKind,
        /// Configured kind.
        configured: InstanceKind,
    },
}

/// Every served instance.
pub struct Instances {
    by_id: BTreeMap<String, Arc<InstanceHandle>>,
    default_id: Option<String>,
    store: Store,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("ids", &self.by_id.keys().collect::<Vec<_>>())
            .field("default_id", &self.default_id)
            .finish_non_exhaustive()
    }
}

impl Instances {
    /// Builds every configured instance (or takes its override), and creates or updates its
    /// store row.
    pub async fn build(
        config: &Config,
        store: &Store,
        mut overrides: BTreeMap<String, BackendOverride>,
    ) -> Result<Self, InstanceError> {
        let mut by_id = BTreeMap::new();
        // Software instances share one backend: the root key is read (or its token opened) once.
        let mut software: Option<Arc<dyn KeyBackend>> = None;
        for instance in &config.instances {
            let kind = instance.kind()?;
            let (backend, control) = match overrides.remove(&instance.id) {
                Some(o) => (o.backend, o.control),
                None => build_backend(config, instance, kind, &mut software).await?,
            };
            let handle = Arc::new(InstanceHandle {
                id: instance.id.clone(),
                kind,
                name: instance.name.clone(),
                backend,
                control,
            });
            sync_row(store, &handle, spec_json(instance)).await?;
            by_id.insert(instance.id.clone(), handle);
        }
        Ok(Self {
            by_id,
            default_id: config.default_instance_id().map(str::to_owned),
            store: store.clone(),
        })
    }

    /// The instance with this id.
    pub fn get(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        self.by_id.get(id).cloned()
    }

    /// The instance CreateKey uses without `DKMSInstanceId`.
    pub fn default_id(&self) -> Option<&str> {
        self.default_id.as_deref()
    }

    /// Every served instance, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<InstanceHandle>> {
        self.by_id.values()
    }

    /// The stored row of a served instance (state, error code, creation time).
    pub async fn row(&self, id: &str) -> Result<Instance, StoreError> {
        self.store.get_instance(id).await
    }

    /// Connects an instance that has a connection; `None` if it has none. The intent is
    /// stored first, so that every replica follows it.
    pub async fn connect(
        &self,
        handle: &InstanceHandle,
    ) -> Result<Option<InstanceStatus>, StoreError> {
        let Some(control) = &handle.control else {
            return Ok(None);
        };
        self.store
            .update_instance_connection(
                &handle.id,
                ConnectionState::Connecting,
                None,
                UnixMillis::now(),
            )
            .await?;
        let status = control.connect().await;
        self.observe(handle, status).await?;
        Ok(Some(status))
    }

    /// Disconnects an instance that has a connection; `None` if it has none. The intent is
    /// stored first, so that every replica follows it.
    pub async fn disconnect(
        &self,
        handle: &InstanceHandle,
    ) -> Result<Option<InstanceStatus>, StoreError> {
        let Some(control) = &handle.control else {
            return Ok(None);
        };
        self.store
            .update_instance_connection(
                &handle.id,
                ConnectionState::Disconnected,
                None,
                UnixMillis::now(),
            )
            .await?;
        Ok(Some(control.disconnect().await))
    }

    /// The tasks to run while serving, per controllable instance: its health checks, a watcher
    /// that stores what they observe, and a follower of the stored (shared) state.
    pub fn background_tasks(self: &Arc<Self>) -> Vec<Task> {
        let mut tasks: Vec<Task> = Vec::new();
        for handle in self.by_id.values() {
            let Some(control) = &handle.control else {
                continue;
            };
            if let Some(task) = control.health_checks() {
                tasks.push(task);
            }
            if let Some(mut changes) = control.subscribe() {
                let registry = Arc::clone(self);
                let handle = Arc::clone(handle);
                tasks.push(Box::pin(async move {
                    while changes.changed().await.is_ok() {
                        let status = *changes.borrow_and_update();
                        if let Err(error) = registry.observe(&handle, status).await {
                            tracing::warn!(instance = %handle.id, %error, "cannot record the instance state");
                        }
                    }
                }));
            }
            let registry = Arc::clone(self);
            let handle = Arc::clone(handle);
            let interval = control.health_interval();
            tasks.push(Box::pin(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    if let Err(error) = registry.follow(&handle).await {
                        tracing::warn!(instance = %handle.id, %error, "cannot read the stored instance state");
                    }
                }
            }));
        }
        tasks
    }

    /// Brings this replica's connection in line with the stored intent: connects if another
    /// replica connected, disconnects if another disconnected.
    pub async fn follow(&self, handle: &InstanceHandle) -> Result<(), StoreError> {
        let Some(control) = &handle.control else {
            return Ok(());
        };
        // The local state first, then the row: a connect made here in between has stored its
        // intent already, and a stale row cannot undo or supersede it (`restore_at` and
        // `connect_at` act only if no connect, disconnect or restore came since `seen`).
        let seen = control.epoch();
        let local_up = handle.backend.status().state.wanted_up();
        let row = self.store.get_instance(&handle.id).await?;
        match (row.connection_state.wanted_up(), local_up) {
            (true, false) => {
                tracing::info!(instance = %handle.id, "connecting: the instance was connected on another replica");
                let status = control.connect_at(seen).await;
                self.observe(handle, status).await?;
            }
            (false, true) => {
                tracing::info!(instance = %handle.id, state = %row.connection_state, "disconnecting: the instance was disconnected on another replica");
                control.restore_at(
                    seen,
                    InstanceStatus {
                        state: row.connection_state,
                        error: None,
                    },
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Stores what this replica observed of a connection (`Connected`, `Error`), unless the
    /// stored intent is down; other states are intents, stored by connect and disconnect.
    async fn observe(
        &self,
        handle: &InstanceHandle,
        status: InstanceStatus,
    ) -> Result<(), StoreError> {
        if !matches!(
            status.state,
            ConnectionState::Connected | ConnectionState::Error
        ) {
            return Ok(());
        }
        let code = status.error.map(|e| e.as_str().to_owned());
        let changed = self
            .store
            .observe_instance_connection(&handle.id, status.state, code.clone(), UnixMillis::now())
            .await?;
        if changed {
            tracing::debug!(
                instance = %handle.id,
                state = status.state.as_str(),
                error_code = code.as_deref().unwrap_or(""),
                "stored the observed instance state"
            );
        }
        Ok(())
    }
}

type Built = (Arc<dyn KeyBackend>, Option<Arc<dyn InstanceControl>>);

async fn build_backend(
    config: &Config,
    instance: &InstanceConfig,
    kind: InstanceKind,
    software: &mut Option<Arc<dyn KeyBackend>>,
) -> Result<Built, ConfigError> {
    match kind {
        InstanceKind::Software => {
            let backend = match software {
                Some(backend) => Arc::clone(backend),
                None => Arc::clone(software.insert(software_backend(config).await?)),
            };
            Ok((backend, None))
        }
        InstanceKind::External => external::build(config, instance),
        InstanceKind::Hardware => {
            let hardware = instance.hardware.as_ref().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "instances {}: [instances.hardware] is missing",
                    instance.id
                ))
            })?;
            let backend = HardwareBackend::open(hardware)
                .map_err(|e| ConfigError::Invalid(format!("instances {}: {e}", instance.id)))?;
            Ok((Arc::new(backend), None))
        }
    }
}

/// The software instances' backend, its root keys tried once.
async fn software_backend(config: &Config) -> Result<Arc<dyn KeyBackend>, ConfigError> {
    let (current, previous) = config
        .root_key
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid("software instances need a [root_key]".into()))?
        .load()?;
    let backend = SoftwareBackend::with_previous(current, previous);
    backend
        .self_test()
        .await
        .map_err(|e| ConfigError::Invalid(format!("root_key: {e}")))?;
    Ok(Arc::new(backend))
}

/// Non-secret settings as the store keeps them (`spec`): the external table as JSON (it holds
/// secret *references* only), `{}` for the others.
fn spec_json(instance: &InstanceConfig) -> String {
    instance
        .external
        .as_ref()
        .and_then(|e| serde_json::to_string(e).ok())
        .unwrap_or_else(|| "{}".to_owned())
}

async fn sync_row(
    store: &Store,
    handle: &InstanceHandle,
    spec: String,
) -> Result<(), InstanceError> {
    let now = UnixMillis::now();
    let existing = store.get_instance(&handle.id).await;
    // A connection survives a restart: the backend resumes from the stored state (and its
    // first health check confirms or corrects it).
    if let (Ok(row), Some(control)) = (&existing, &handle.control) {
        control.restore(InstanceStatus {
            state: row.connection_state,
            error: row
                .connection_error_code
                .as_deref()
                .and_then(parse_connection_error),
        });
    }
    let status = handle.backend.status();
    match existing {
        Err(StoreError::NotFound(_)) => {
            store
                .create_instance(NewInstance {
                    instance_id: handle.id.clone(),
                    kind: handle.kind,
                    name: handle.name.clone(),
                    spec,
                    connection_state: status.state,
                    created_at: now,
                })
                .await?;
        }
        Err(other) => return Err(other.into()),
        Ok(row) => {
            if row.kind != handle.kind {
                return Err(InstanceError::KindChanged {
                    id: handle.id.clone(),
                    stored: row.kind,
                    configured: handle.kind,
                });
            }
            if row.name != handle.name {
                store
                    .rename_instance(&handle.id, handle.name.clone(), now)
                    .await?;
            }
            if row.spec != spec {
                store.update_instance_spec(&handle.id, spec, now).await?;
            }
        }
    }
    let code = status.error.map(|e| e.as_str().to_owned());
    store
        .update_instance_connection(&handle.id, status.state, code, now)
        .await?;
    Ok(())
}

/// The stored code of a connection error.
fn parse_connection_error(code: &str) -> Option<ConnectionError> {
    [
        ConnectionError::InvalidCredentials,
        ConnectionError::AccessDenied,
        ConnectionError::InvalidConfiguration,
        ConnectionError::InvalidResponse,
        ConnectionError::InvalidTlsConfiguration,
        ConnectionError::NotReachable,
        ConnectionError::TimedOut,
        ConnectionError::InternalError,
    ]
    .into_iter()
    .find(|e| e.as_str() == code)
}

mod external {
    //! Wiring of the external (XKI) backend: the backend itself, and its connection control.
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::{Built, Config, ConfigError, InstanceConfig, InstanceControl, Task};
    use crate::backend::InstanceStatus;
    use crate::backend::external::ExternalBackend;

    struct Control(ExternalBackend);

    #[async_trait::async_trait]
    impl InstanceControl for Control {
        async fn connect(&self) -> InstanceStatus {
            self.0.connect().await
        }

        async fn disconnect(&self) -> InstanceStatus {
            self.0.disconnect()
        }

        async fn check_health(&self) -> InstanceStatus {
            self.0.check_health().await
        }

        fn restore(&self, status: InstanceStatus) {
            self.0.restore(status);
        }

        fn epoch(&self) -> u64 {
            self.0.epoch()
        }

        fn restore_at(&self, seen: u64, status: InstanceStatus) {
            self.0.restore_at(seen, status);
        }

        async fn connect_at(&self, seen: u64) -> InstanceStatus {
            self.0.connect_at(seen).await
        }

        fn subscribe(&self) -> Option<watch::Receiver<InstanceStatus>> {
            Some(self.0.subscribe())
        }

        fn health_checks(&self) -> Option<Task> {
            Some(Box::pin(self.0.health_checks()))
        }

        fn health_interval(&self) -> std::time::Duration {
            self.0.health_interval()
        }
    }

    pub(super) fn build(config: &Config, instance: &InstanceConfig) -> Result<Built, ConfigError> {
        let external = instance.external.as_ref().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "instances {}: [instances.external] is missing",
                instance.id
            ))
        })?;
        let backend = ExternalBackend::from_config(external, &config.kms.region, &config.base_dir)
            .map_err(|e| ConfigError::Invalid(format!("instances {}: {e}", instance.id)))?;
        Ok((Arc::new(backend.clone()), Some(Arc::new(Control(backend)))))
    }
}
