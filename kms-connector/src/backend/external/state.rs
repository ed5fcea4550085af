//! The connection state machine of an external instance.
//!
//! ```text
//!   Uninitialized ──connect()──► Connecting ──health ok──► Connected ◄──┐
//!        ▲                           │                        │        │ health ok
//!        │                     health fails             health fails   │ (on its own)
//!        │                           ▼                        ▼        │
//!   (restore)                    Error(code) ◄────────────────┘────────┘
//!   any state ──disconnect()──► Disconnected (no calls until connect())
//! ```
//!
//! Every change goes through one mutex that also carries an epoch: `connect()` and
//! `disconnect()` start a new epoch, and the result of a check that began in an older epoch is
//! dropped, so a slow health answer never undoes an operator's disconnect or a newer connect.
//! Changes are published on a `watch` channel (the API layer persists them).

use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::backend::{ConnectionError, InstanceStatus};
use crate::store::ConnectionState;

/// An `Error` status with `code`.
pub(crate) fn error_status(code: ConnectionError) -> InstanceStatus {
    InstanceStatus {
        state: ConnectionState::Error,
        error: Some(code),
    }
}

fn plain(state: ConnectionState) -> InstanceStatus {
    InstanceStatus { state, error: None }
}

#[derive(Debug, Default)]
struct Epoch {
    /// Bumped by connect and disconnect.
    number: u64,
    /// `connect()` calls under way.
    connects: usize,
}

/// The state of one instance.
#[derive(Debug)]
pub(crate) struct ConnectionMonitor {
    status: watch::Sender<InstanceStatus>,
    epoch: Mutex<Epoch>,
    /// For logs.
    endpoint: String,
}

/// A check that may change the state when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl ConnectionMonitor {
    pub(crate) fn new(endpoint: String) -> Self {
        Self {
            status: watch::Sender::new(plain(ConnectionState::Uninitialized)),
            epoch: Mutex::new(Epoch::default()),
            endpoint,
        }
    }

    pub(crate) fn current(&self) -> InstanceStatus {
        *self.status.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.status.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Epoch> {
        self.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `next` (caller holds the lock); logs real changes.
    fn set(&self, next: InstanceStatus) {
        let previous = self.current();
        let changed = self.status.send_if_modified(|status| {
            let changed = *status != next;
            *status = next;
            changed
        });
        if changed {
            let code = next.error.map(ConnectionError::as_str);
            if next.state == ConnectionState::Error {
                tracing::warn!(target: "kms_connector::external", endpoint = %self.endpoint, from = %previous.state, to = %next.state, code, "external instance connection state changed");
            } else {
                tracing::info!(target: "kms_connector::external", endpoint = %self.endpoint, from = %previous.state, to = %next.state, "external instance connection state changed");
            }
        }
    }

    /// Sets the state read back from the store at startup. A stored `Connecting` (the process
    /// stopped mid-connect) is finished by the next health check.
    pub(crate) fn restore(&self, status: InstanceStatus) {
        let mut epoch = self.lock();
        Self::apply_restore(self, &mut epoch, status);
    }

    /// The number of the current epoch: every connect, disconnect and restore starts one.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().number
    }

    /// [`Self::restore`], unless another epoch began since `seen` (a connect or disconnect made
    /// after the caller read the state it acts on). Whether it applied.
    pub(crate) fn restore_at(&self, seen: u64, status: InstanceStatus) -> bool {
        let mut epoch = self.lock();
        if epoch.number != seen {
            return false;
        }
        Self::apply_restore(self, &mut epoch, status);
        true
    }

    fn apply_restore(&self, epoch: &mut Epoch, status: InstanceStatus) {
        epoch.number += 1;
        let status = match status.state {
            ConnectionState::Error => {
                error_status(status.error.unwrap_or(ConnectionError::InternalError))
            }
            state => plain(state),
        };
        self.set(status);
    }

    /// `connect()` begins: `Connecting`, new epoch.
    pub(crate) fn begin_connect(&self) -> Ticket {
        let mut epoch = self.lock();
        Self::start_connect(self, &mut epoch)
    }

    /// [`Self::begin_connect`] unless another epoch began since `seen` (then a connect or
    /// disconnect made after the caller's read is under way or done, and wins).
    pub(crate) fn begin_connect_at(&self, seen: u64) -> Option<Ticket> {
        let mut epoch = self.lock();
        (epoch.number == seen).then(|| Self::start_connect(self, &mut epoch))
    }

    fn start_connect(&self, epoch: &mut Epoch) -> Ticket {
        epoch.number += 1;
        epoch.connects += 1;
        self.set(plain(ConnectionState::Connecting));
        Ticket(epoch.number)
    }

    /// `connect()` ends (or was abandoned: `outcome` is `None`).
    pub(crate) fn end_connect(&self, ticket: Ticket, outcome: Option<Result<(), ConnectionError>>) {
        let mut epoch = self.lock();
        epoch.connects = epoch.connects.saturating_sub(1);
        if let (Some(outcome), true) = (outcome, epoch.number == ticket.0) {
            self.set(outcome_status(outcome));
        }
    }

    /// `disconnect()`: `Disconnected`, new epoch.
    pub(crate) fn disconnect(&self) {
        let mut epoch = self.lock();
        epoch.number += 1;
        self.set(plain(ConnectionState::Disconnected));
    }

    /// A periodic check may run now: the instance is `Connected`, in `Error`, or `Connecting`
    /// with no `connect()` under way (restored).
    pub(crate) fn begin_check(&self) -> Option<Ticket> {
        let epoch = self.lock();
        let eligible = match self.current().state {
            ConnectionState::Connected | ConnectionState::Error => true,
            ConnectionState::Connecting => epoch.connects == 0,
            ConnectionState::Uninitialized | ConnectionState::Disconnected => false,
        };
        eligible.then_some(Ticket(epoch.number))
    }

    /// A periodic check ended with `outcome`; `None` is inconclusive (nothing changes).
    pub(crate) fn end_check(&self, ticket: Ticket, outcome: Option<Result<(), ConnectionError>>) {
        let epoch = self.lock();
        if let (Some(outcome), true) = (outcome, epoch.number == ticket.0) {
            self.set(outcome_status(outcome));
        }
    }

    /// A cryptographic call found the proxy unusable: a `Connected` instance goes to `Error`
    /// at once instead of waiting for the next check; the checks bring it back.
    pub(crate) fn report_failure(&self, code: ConnectionError) {
        let _epoch = self.lock();
        if self.current().state == ConnectionState::Connected {
            self.set(error_status(code));
        }
    }
}

fn outcome_status(outcome: Result<(), ConnectionError>) -> InstanceStatus {
    match outcome {
        Ok(()) => InstanceStatus::CONNECTED,
        Err(code) => error_status(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let m = ConnectionMonitor::new("https://x".into());
        let mut watch = m.subscribe();
        assert_eq!(m.current().state, ConnectionState::Uninitialized);
        assert!(m.begin_check().is_none(), "never connected: no checks");

        let t = m.begin_connect();
        assert_eq!(m.current().state, ConnectionState::Connecting);
        assert!(m.begin_check().is_none(), "a connect is under way");
        m.end_connect(t, Some(Ok(())));
        assert_eq!(m.current(), InstanceStatus::CONNECTED);
        assert!(watch.has_changed().unwrap());
        watch.borrow_and_update();

        let check = m.begin_check().unwrap();
        m.end_check(check, Some(Err(ConnectionError::NotReachable)));
        assert_eq!(m.current(), error_status(ConnectionError::NotReachable));
        let check = m.begin_check().unwrap();
        m.end_check(check, None);
        assert_eq!(
            m.current(),
            error_status(ConnectionError::NotReachable),
            "inconclusive"
        );
        let check = m.begin_check().unwrap();
        m.end_check(check, Some(Ok(())));
        assert_eq!(
            m.current(),
            InstanceStatus::CONNECTED,
            "recovers on its own"
        );

        // A check that began before a disconnect does not undo it.
        let stale = m.begin_check().unwrap();
        m.disconnect();
        m.end_check(stale, Some(Ok(())));
        assert_eq!(m.current().state, ConnectionState::Disconnected);
        assert!(m.begin_check().is_none(), "disconnected: no checks");
        m.report_failure(ConnectionError::InvalidCredentials);
        assert_eq!(m.current().state, ConnectionState::Disconnected);

        // A disconnect during a connect wins.
        let t = m.begin_connect();
        m.disconnect();
        m.end_connect(t, Some(Ok(())));
        assert_eq!(m.current().state, ConnectionState::Disconnected);

        // Crypto failures move Connected to Error only.
        let t = m.begin_connect();
        m.end_connect(t, Some(Ok(())));
        m.report_failure(ConnectionError::InvalidTlsConfiguration);
        assert_eq!(
            m.current(),
            error_status(ConnectionError::InvalidTlsConfiguration)
        );
        m.report_failure(ConnectionError::NotReachable);
        assert_eq!(
            m.current(),
            error_status(ConnectionError::InvalidTlsConfiguration)
        );
    }

    #[test]
    fn a_restore_from_a_stale_read_does_not_undo_a_connect() {
        let m = ConnectionMonitor::new("https://x".into());
        let seen = m.epoch();
        let connect = m.begin_connect();
        assert!(!m.restore_at(seen, plain(ConnectionState::Disconnected)));
        m.end_connect(connect, Some(Ok(())));
        assert_eq!(m.current(), InstanceStatus::CONNECTED);
        let seen = m.epoch();
        assert!(m.restore_at(seen, plain(ConnectionState::Disconnected)));
        assert_eq!(m.current().state, ConnectionState::Disconnected);
    }

    #[test]
    fn a_connect_from_a_stale_read_does_not_supersede_a_newer_one() {
        let m = ConnectionMonitor::new("https://x".into());
        let seen = m.epoch();
        let newer = m.begin_connect();
        assert!(m.begin_connect_at(seen).is_none());
        m.end_connect(newer, Some(Ok(())));
        assert_eq!(m.current(), InstanceStatus::CONNECTED);
        assert!(m.begin_connect_at(m.epoch()).is_some());
    }

    #[test]
    fn restored_connecting_is_finished_by_a_check() {
        let m = ConnectionMonitor::new("https://x".into());
        m.restore(plain(ConnectionState::Connecting));
        let check = m.begin_check().unwrap();
        m.end_check(check, Some(Ok(())));
        assert_eq!(m.current(), InstanceStatus::CONNECTED);
        m.restore(plain(ConnectionState::Error));
        assert_eq!(m.current(), error_status(ConnectionError::InternalError));
        // An abandoned connect leaves Connecting to the checks.
        let t = m.begin_connect();
        m.end_connect(t, None);
        assert!(m.begin_check().is_some());
    }
}
