//! What the proxy decides about a request before its body and about its signature: route,
//! method, key store, a declared body over the cap, the SigV4 checks of the headers (shape,
//! date, skew, scope, known access key, signed host), and then the signature over the body.

use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpRequest;
use actix_web::http::Method;
use schemas::sigv4::RequestParts;
use schemas::xki::ErrorName;

use super::{Failure, Trace, XkiState, xki};
use crate::tenancy::{KeyStore, Route, route};

/// A request that passed every check that needs no body.
pub(super) struct Admitted<'r> {
    pub(super) route: Route<'r>,
    pub(super) store: Arc<KeyStore>,
    /// The headers as SigV4 signs them (`host` from `:authority` over HTTP/2).
    pub(super) headers: Vec<(String, String)>,
}

/// Route, method, key store, a declared body over the cap (before authentication, spec §4.1)
/// and the SigV4 checks of the headers: what can be refused before the body is read (an
/// unauthenticated client cannot make the proxy wait for one).
pub(super) fn admit<'r>(
    req: &'r HttpRequest,
    state: &XkiState,
    declared: Option<usize>,
    trace: &mut Trace,
) -> Result<Admitted<'r>, Failure> {
    let Some(route) = route(req.path()) else {
        return Err(xki(ErrorName::InvalidUriPathException, "unknown URI path"));
    };
    let prefix = match &route {
        Route::Health { prefix } => {
            trace.op = "health";
            *prefix
        }
        Route::Key { prefix, key_id, op } => {
            trace.op = op.as_str();
            trace.key_id = (*key_id).chars().take(128).collect();
            *prefix
        }
    };
    trace.prefix = prefix.to_owned();
    if req.method() != Method::POST {
        return Err(Failure::MethodNotAllowed);
    }
    let stores = state.tenancy.snapshot();
    let Some(store) = stores.get(prefix) else {
        return Err(xki(
            ErrorName::InvalidUriPathException,
            "unknown URI path prefix",
        ));
    };
    let limit = state.limits.max_body_bytes();
    if declared.is_some_and(|len| len > limit) {
        return Err(Failure::Refused(listener::Refusal::BodyTooLarge { limit }));
    }
    let started = Instant::now();
    let headers = signed_headers(req);
    let parts = RequestParts {
        method: req.method().as_str(),
        target: target(req),
        headers: &headers,
        body: &[],
    };
    let now = time::OffsetDateTime::now_utc();
    store
        .verifier
        .check_headers(&parts, |ak: &str| store.secret(ak), now)
        .map_err(|e| xki(ErrorName::AuthenticationFailedException, e.to_string()))?;
    check_host(&store, &parts)?;
    trace.auth = started.elapsed();
    Ok(Admitted {
        route,
        store,
        headers,
    })
}

/// With `hosts` set, the request must be signed for one of them (`host` is always signed).
fn check_host(store: &KeyStore, parts: &RequestParts<'_>) -> Result<(), Failure> {
    if store.hosts.is_empty() {
        return Ok(());
    }
    let refused = || {
        xki(
            ErrorName::AuthenticationFailedException,
            "request signed for a host this key store does not serve",
        )
    };
    let host = parts.single_header("host").map_err(|_| refused())?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if store.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The request's headers as SigV4 signs them: HTTP/2 carries the host as `:authority`.
fn signed_headers(req: &HttpRequest) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        if let Some(authority) = req.uri().authority() {
            headers.push(("host".into(), authority.as_str().to_owned()));
        }
    }
    headers
}

fn target(req: &HttpRequest) -> &str {
    req.uri()
        .path_and_query()
        .map_or_else(|| req.path(), |pq| pq.as_str())
}

pub(super) fn authenticate(
    req: &HttpRequest,
    headers: &[(String, String)],
    body: &[u8],
    store: &KeyStore,
) -> Result<(), Failure> {
    let parts = RequestParts {
        method: req.method().as_str(),
        target: target(req),
        headers,
        body,
    };
    store
        .verifier
        .verify(
            &parts,
            |ak: &str| store.secret(ak),
            time::OffsetDateTime::now_utc(),
        )
        .map(|_| ())
        .map_err(|e| xki(ErrorName::AuthenticationFailedException, e.to_string()))
}
