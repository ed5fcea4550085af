//! The token: the library loaded once per process, the token found by label or serial (never
//! by slot index), sessions logged in with the user PIN, and how PKCS#11 failures map onto the
//! error enum.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::profile::{TokenSelector, VendorProfile};
use crate::error::{Error, Result};

/// The process-wide PKCS#11 context of `module`, initialised once (`C_Initialize` twice, or
/// concurrently, crashes some libraries: rust-cryptoki #260).
pub fn library(module: &Path) -> Result<Pkcs11> {
    static LIBRARIES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut libraries = LIBRARIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(pkcs11) = libraries.get(module) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(module).map_err(|e| {
        Error::Config(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm_error(e)),
    }
    libraries.insert(module.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

/// Finds the slot of the token with the given label or serial; never by index.
pub fn find_token(pkcs11: &Pkcs11, selector: &TokenSelector) -> Result<Slot> {
    let mut matches = Vec::new();
    let mut seen = Vec::new();
    for slot in pkcs11
        .get_slots_with_initialized_token()
        .map_err(hsm_error)?
    {
        let info = pkcs11.get_token_info(slot).map_err(hsm_error)?;
        let hit = match selector {
            TokenSelector::Label(label) => info.label().trim_end() == label,
            TokenSelector::Serial(serial) => info.serial_number().trim_end() == serial,
        };
        if hit {
            matches.push(slot);
        }
        seen.push(info.label().trim_end().to_owned());
    }
    match matches.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Error::TokenNotFound(format!(
            "no initialised token with {selector} (tokens present: {})",
            if seen.is_empty() {
                "none".to_owned()
            } else {
                seen.join(", ")
            }
        ))),
        _ => Err(Error::Config(format!("several tokens match {selector}"))),
    }
}

/// Initialises a token on a free slot (development: SoftHSM always offers one) and sets its
/// user PIN. Refuses a label that is already taken.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<Slot> {
    let pkcs11 = library(module)?;
    if find_token(&pkcs11, &TokenSelector::Label(label.to_owned())).is_ok() {
        return Err(Error::Config(format!(
            "a token labelled {label:?} already exists"
        )));
    }
    let mut free = None;
    for slot in pkcs11.get_slots_with_token().map_err(hsm_error)? {
        if !pkcs11
            .get_token_info(slot)
            .map_err(hsm_error)?
            .token_initialized()
        {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| Error::Config("no slot with a free token".into()))?;
    pkcs11.init_token(slot, so_pin, label).map_err(hsm_error)?;
    // The slot id may change at init (SoftHSM): find the token again by its label.
    let slot = find_token(&pkcs11, &TokenSelector::Label(label.to_owned()))?;
    let session = pkcs11.open_rw_session(slot).map_err(hsm_error)?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(hsm_error)?;
    session.init_pin(user_pin).map_err(hsm_error)?;
    session.logout().map_err(hsm_error)?;
    Ok(slot)
}

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
    /// Labels several processes may give objects at once (see [`crate::hsm::HsmConfig`]).
    pub interchangeable_labels: Vec<String>,
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

pub(crate) fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::TokenNotPresent
            | RvError::DeviceRemoved
    )
}

pub(crate) fn is_device_error(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError | RvError::DeviceMemory | RvError::GeneralError
    )
}

pub(crate) fn is_handle_stale(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}

/// Serialises token-object writes against searches, process-wide. SoftHSM fails object
/// creation, destruction and concurrent key generation that overlap a `C_FindObjects` in
/// another session with `CKR_GENERAL_ERROR` / `CKR_TEMPLATE_INCONSISTENT` (SoftHSMv2
/// #573/#576; reproduced here with metadata reads during admin changes). Searches share the
/// lock, writes take it alone; crypto on cached handles takes none, so the hot path is free.
static TOKEN_OBJECTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held while searching token objects.
pub fn searching() -> std::sync::RwLockReadGuard<'static, ()> {
    TOKEN_OBJECTS.read().unwrap_or_else(|p| p.into_inner())
}

/// Held while creating, changing or destroying token objects.
pub fn writing() -> std::sync::RwLockWriteGuard<'static, ()> {
    TOKEN_OBJECTS.write().unwrap_or_else(|p| p.into_inner())
}
