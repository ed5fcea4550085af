//! The PKCS#11 core of the workspace: what every user of a token needs, and nothing of what it
//! keeps there. The EKM's key directory ([`crate::pkcs11`]) sits on it, and so does the
//! kms-connector's hardware instance.
//!
//! - [`token`]: the library (loaded once per process), the token by label or serial, logged-in
//!   sessions, the process-wide object write lock, PKCS#11 errors mapped onto [`Error`];
//! - [`profile`]: the vendor profile (who makes GCM IVs, which error means a bad tag);
//! - [`pool`]: HSM worker threads, one logged-in session each, behind a bounded queue with
//!   admission control and deadlines;
//! - [`session`]: one worker's session and its object-handle cache;
//! - [`aes`]: AES key templates and generation, AES-GCM.
//!
//! [`Hsm`] puts them together: open the token, log in, start the workers, run jobs.

pub mod aes;
pub mod pool;
pub mod profile;
pub mod session;
pub mod token;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryptoki::session::Session;
use secrecy::SecretString;

pub use self::pool::{PoolStats, Timed, WorkerPool};
pub use self::profile::{IvSource, TokenSelector, VendorProfile};
pub use self::session::{HsmSession, KeyOpError};
pub use self::token::{Token, find_token, hsm_error, init_token, library};
use crate::error::{Error, Result};

/// How to reach a token and how many workers to run on it.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// The PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: SecretString,
    /// Vendor quirks.
    pub profile: VendorProfile,
    /// Worker threads (one session each).
    pub workers: usize,
    /// Jobs waiting at most; past that, jobs are refused with [`Error::Throttled`].
    pub queue_capacity: usize,
    /// Thread name prefix of the workers.
    pub thread_name: &'static str,
    /// Labels several processes may give objects at once (lookups take the lowest handle).
    pub interchangeable_labels: Vec<String>,
}

/// An open token with its worker pool.
pub struct Hsm {
    token: Arc<Token>,
    pool: WorkerPool<HsmSession>,
    /// Keeps the login alive while workers reopen sessions.
    _login: Mutex<Session>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.token)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the library, finds the token, logs in once and starts the workers. Blocks the
    /// calling thread for the PKCS#11 start-up calls.
    pub fn open(config: HsmConfig) -> Result<Self> {
        if config.workers == 0 || config.queue_capacity == 0 {
            return Err(Error::Config(
                "an HSM needs at least one worker and a queue".into(),
            ));
        }
        let pkcs11 = library(&config.module)?;
        let slot = find_token(&pkcs11, &config.token)?;
        let info = pkcs11.get_token_info(slot).map_err(hsm_error)?;
        let token = Arc::new(Token {
            pkcs11,
            slot,
            label: info.label().trim_end().to_owned(),
            model: format!(
                "{} {} fw {}",
                info.manufacturer_id().trim_end(),
                info.model().trim_end(),
                info.firmware_version()
            ),
            pin: config.pin.clone(),
            profile: config.profile.clone(),
            destroyed: std::sync::atomic::AtomicU64::new(0),
            interchangeable_labels: config.interchangeable_labels.clone(),
        });
        let login = token.open_session()?;
        let worker_token = Arc::clone(&token);
        let pool = WorkerPool::start(
            config.thread_name,
            config.workers,
            config.queue_capacity,
            move |_| HsmSession::open(Arc::clone(&worker_token)),
        )?;
        Ok(Self {
            token,
            pool,
            _login: Mutex::new(login),
        })
    }

    /// The token.
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool<HsmSession> {
        &self.pool
    }

    /// Runs `job` on a worker's session before `deadline` (queue full: [`Error::Throttled`];
    /// deadline passed: [`Error::DeadlineExceeded`]).
    pub async fn run<T, F>(&self, deadline: Instant, job: F) -> Result<Timed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut HsmSession) -> Result<T> + Send + 'static,
    {
        self.pool.run(deadline, job).await
    }
}
