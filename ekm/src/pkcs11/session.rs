//! One worker's PKCS#11 session, its object-handle cache, and AES-GCM on it.
//!
//! A cached handle makes an operation cost `C_EncryptInit` + `C_Encrypt` (cryptoki adds a
//! length query to `C_Encrypt`, answered inside the library). A handle that the token no longer
//! knows (`CKR_OBJECT_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`: the object was destroyed and
//! re-created, the token was reset) is evicted and looked up again, once. A session the token
//! no longer knows is reopened (and the user logged in again if needed) on the next job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use rand::RngCore as _;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::config::{IvSource, VendorProfile};
use crate::ciphertext::{IV_BYTES, TAG_BITS, split_tag};
use crate::error::{Error, Result};

/// The token every worker talks to.
pub struct Token {
    /// The process-wide library context.
    pub pkcs11: Pkcs11,
    /// The slot the token was found in (resolved by label or serial at start).
    pub slot: Slot,
    /// Token label, for health reports.
    pub label: String,
    /// Manufacturer, model, firmware, for health reports.
    pub model: String,
    /// User PIN, for a re-login after the token lost the login state.
    pub pin: SecretString,
    /// Vendor quirks.
    pub profile: VendorProfile,
    /// Key objects destroyed so far by any worker. A worker that sees it change clears its
    /// handle cache: an HSM may hand a destroyed object's handle number to a new object, and a
    /// label can come back (an adopted key purged, then the same label adopted again).
    pub destroyed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("slot", &self.slot)
            .field("label", &self.label)
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Opens a read-write session, logging the user in unless the application already is
    /// (login state is shared by all sessions of a process).
    pub fn open_session(&self) -> Result<Session> {
        let session = self.pkcs11.open_rw_session(self.slot).map_err(hsm_error)?;
        let state = session
            .get_session_info()
            .map_err(hsm_error)?
            .session_state();
        if state != SessionState::RwUser {
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(hsm_error(e)),
            }
        }
        Ok(session)
    }
}

/// Maps a PKCS#11 failure without context onto the error enum: only the function and the
/// `CKR_*` name travel.
pub fn hsm_error(error: CkError) -> Error {
    match error {
        CkError::Pkcs11(RvError::PinIncorrect, _) => Error::PinIncorrect,
        CkError::Pkcs11(RvError::PinLocked, _) => Error::PinLocked,
        CkError::Pkcs11(rv, function) if is_session_lost(rv) || is_device_error(rv) => {
            Error::HsmUnavailable(format!("{function:?}: {rv:?}"))
        }
        CkError::Pkcs11(rv, function) => Error::Internal(format!("{function:?}: {rv:?}")),
        CkError::LibraryLoading(e) => Error::HsmUnavailable(format!("cannot load module: {e}")),
        other => Error::Internal(format!("cryptoki: {other}")),
    }
}

fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::TokenNotPresent
            | RvError::DeviceRemoved
    )
}

fn is_device_error(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError | RvError::DeviceMemory | RvError::GeneralError
    )
}

fn is_handle_stale(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}

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
        let _shared = super::keys::searching();
        let found = match self.session()?.find_objects(&template) {
            Ok(found) => found,
            Err(e) => return Err(self.note_failure(e)),
        };
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            // Replicas starting together on a fresh token may each create the probe key; any
            // of them serves (the lowest handle, so one process always uses the same one).
            [_, ..] if label == super::keys::PROBE_LABEL => {
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

    /// AES-256-GCM encryption.
    pub fn encrypt(
        &mut self,
        label: &str,
        gcm_aad: &[u8],
        plaintext: &[u8],
    ) -> std::result::Result<Sealed, KeyOpError> {
        let iv_source = self.token.profile.iv_source;
        let (sealed, iv) = self.with_key(label, |session, key| {
            let mut iv = [0u8; IV_BYTES];
            if iv_source == IvSource::Host {
                rand::rng().fill_bytes(&mut iv);
            }
            let params = GcmParams::new(&mut iv, gcm_aad, TAG_BITS.into())?;
            let sealed = session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
            Ok((sealed, iv))
        })?;
        if iv_source == IvSource::Hsm && iv == [0u8; IV_BYTES] {
            return Err(KeyOpError::Other(Error::Internal(
                "the HSM did not write a GCM IV (check the vendor profile)".into(),
            )));
        }
        let (ciphertext, tag) = split_tag(sealed).map_err(KeyOpError::Other)?;
        Ok(Sealed {
            iv: iv.to_vec(),
            ciphertext,
            tag,
        })
    }

    /// AES-256-GCM decryption of `ciphertext ‖ tag`.
    pub fn decrypt(
        &mut self,
        label: &str,
        iv: &[u8],
        gcm_aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, KeyOpError> {
        let mut sealed = Vec::with_capacity(ciphertext.len() + tag.len());
        sealed.extend_from_slice(ciphertext);
        sealed.extend_from_slice(tag);
        let bad_tag = self.token.profile.bad_tag_errors;
        self.with_key(label, |session, key| {
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, gcm_aad, TAG_BITS.into())?;
            session
                .decrypt(&Mechanism::AesGcm(params), key, &sealed)
                .map(Zeroizing::new)
        })
        .map_err(|e| match e {
            KeyOpError::Pkcs11(rv, Function::Decrypt) if bad_tag.contains(&rv) => {
                KeyOpError::BadTag
            }
            other => other,
        })
    }
}

/// AES-GCM output, split.
#[derive(Debug)]
pub struct Sealed {
    /// The IV used.
    pub iv: Vec<u8>,
    /// Ciphertext without the tag.
    pub ciphertext: Vec<u8>,
    /// The 16-byte tag.
    pub tag: Vec<u8>,
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

impl KeyOpError {
    /// Maps onto the error enum, `operation` on `key` giving context for usage refusals.
    pub fn into_error(
        self,
        key: &schemas::xki::ExternalKeyId,
        operation: crate::error::Operation,
    ) -> Error {
        match self {
            Self::BadTag => Error::InvalidCiphertext,
            Self::Pkcs11(RvError::KeyFunctionNotPermitted, _) => Error::KeyUsageNotPermitted {
                key: key.clone(),
                operation,
            },
            Self::Pkcs11(rv, function) => hsm_error(CkError::Pkcs11(rv, function)),
            Self::Other(e) => e,
        }
    }
}
