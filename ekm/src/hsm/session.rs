//! One worker's PKCS#11 session and its object-handle cache.
//!
//! A cached handle makes an operation cost `C_EncryptInit` + `C_Encrypt` (cryptoki adds a
//! length query to `C_Encrypt`, answered inside the library). A handle that the token no longer
//! knows (`CKR_OBJECT_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`: the object was destroyed and
//! re-created, the token was reset) is evicted and looked up again, once. A session the token
//! no longer knows is reopened (and the user logged in again if needed) on the next job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::token::{Token, hsm_error, is_handle_stale, is_session_lost, searching};
use crate::error::{Error, Result};

/// One worker's session and handle cache.
pub struct HsmSession {
    token: Arc<Token>,
    session: Option<Session>,
    handles: HashMap<String, ObjectHandle>,
    /// `Token::destroyed` when the cache was last known good.
    seen_destroyed: u64,
}

impl std::fmt::Debug for HsmSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSession")
            .field("open", &self.session.is_some())
            .field("cached_handles", &self.handles.len())
            .finish()
    }
}

/// Handles cached per worker before the cache is cleared (deleted keys leave entries behind).
const MAX_CACHED_HANDLES: usize = 16_384;

impl HsmSession {
    /// Opens the worker's session.
    pub fn open(token: Arc<Token>) -> Result<Self> {
        let session = token.open_session()?;
        Ok(Self {
            seen_destroyed: token.destroyed.load(Ordering::Acquire),
            token,
            session: Some(session),
            handles: HashMap::new(),
        })
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The live session, reopened if a previous call found it lost.
    pub fn session(&mut self) -> Result<&Session> {
        if self.session.is_none() {
            self.handles.clear();
            self.session = Some(self.token.open_session()?);
        }
        self.session
            .as_ref()
            .ok_or_else(|| Error::Internal("session missing".into()))
    }

    /// Records that `error` happened on this session; a lost session is dropped so that the
    /// next job reopens it. Returns the error mapped without context.
    pub fn note_failure(&mut self, error: CkError) -> Error {
        if let CkError::Pkcs11(rv, _) = &error {
            if is_session_lost(*rv) {
                self.session = None;
                self.handles.clear();
            }
        }
        hsm_error(error)
    }

    /// Drops the session and the handle cache; the next job opens a new session.
    pub fn reset(&mut self) {
        self.session = None;
        self.handles.clear();
    }

    /// Records that the key object labelled `label` was destroyed: every worker's cached
    /// handles are dropped before their next use.
    pub fn destroyed(&mut self, label: &str) {
        self.handles.remove(label);
        self.token.destroyed.fetch_add(1, Ordering::AcqRel);
    }

    /// Looks up the single secret key object labelled `label`, if there is one.
    pub fn find_secret_key_opt(&mut self, label: &str) -> Result<Option<ObjectHandle>> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let _shared = searching();
        let found = match self.session()?.find_objects(&template) {
            Ok(found) => found,
            Err(e) => return Err(self.note_failure(e)),
        };
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            // Objects several processes may create at once (the EKM's health-probe key, made by
            // replicas starting together): any of them serves (the lowest handle, so one
            // process always uses the same one).
            [_, ..] if self.token.interchangeable_labels.iter().any(|l| l == label) => {
                Ok(found.iter().min_by_key(|h| h.handle()).copied())
            }
            _ => Err(Error::Internal(format!(
                "{} key objects are labelled {label:?}",
                found.len()
            ))),
        }
    }

    /// Looks up the single secret key object labelled `label`; missing is an error.
    pub fn find_secret_key(&mut self, label: &str) -> Result<ObjectHandle> {
        self.find_secret_key_opt(label)?.ok_or_else(|| {
            Error::Internal(format!("key object {label:?} is missing from the token"))
        })
    }

    /// Runs `op` with the (cached) handle of key `label`; a stale handle is looked up again once.
    pub fn with_key<T>(
        &mut self,
        label: &str,
        op: impl Fn(&Session, ObjectHandle) -> cryptoki::error::Result<T>,
    ) -> std::result::Result<T, KeyOpError> {
        let destroyed = self.token.destroyed.load(Ordering::Acquire);
        if destroyed != self.seen_destroyed {
            self.handles.clear();
            self.seen_destroyed = destroyed;
        }
        let mut fresh = false;
        let mut handle = match self.handles.get(label) {
            Some(handle) => *handle,
            None => {
                fresh = true;
                self.lookup(label)?
            }
        };
        loop {
            let result = op(self.session().map_err(KeyOpError::Other)?, handle);
            match result {
                Ok(value) => return Ok(value),
                Err(e) if is_handle_stale(&e) && !fresh => {
                    self.handles.remove(label);
                    fresh = true;
                    handle = self.lookup(label)?;
                }
                Err(CkError::Pkcs11(rv, function)) if !is_session_lost(rv) => {
                    return Err(KeyOpError::Pkcs11(rv, function));
                }
                Err(e) => return Err(KeyOpError::Other(self.note_failure(e))),
            }
        }
    }

    fn lookup(&mut self, label: &str) -> std::result::Result<ObjectHandle, KeyOpError> {
        let handle = self.find_secret_key(label).map_err(KeyOpError::Other)?;
        if self.handles.len() >= MAX_CACHED_HANDLES {
            self.handles.clear();
        }
        self.handles.insert(label.to_owned(), handle);
        Ok(handle)
    }
}

/// Why an operation on a key failed, before the manager adds the key's context.
#[derive(Debug)]
pub enum KeyOpError {
    /// The tag did not verify (per the vendor profile).
    BadTag,
    /// Another PKCS#11 failure on a live session.
    Pkcs11(RvError, Function),
    /// Already mapped (lookup failures, lost sessions).
    Other(Error),
}
