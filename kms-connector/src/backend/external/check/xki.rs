//! The steps read off the instance's own signed XKI calls: SigV4 (did the proxy accept the
//! signature at this path?), health (its key managers' verdicts) and the test key's metadata.

use schemas::xki::{ErrorName, ExternalKeyId, HealthResponse, HealthStatus, MetadataResponse};
use serde::Serialize;

use super::super::client::{CallError, Transport};
use super::super::config::ExternalSettings;
use super::{Failure, fail, millis};

/// The SigV4 step, read off the signed GetHealthStatus.
pub(super) fn sigv4(
    settings: &ExternalSettings,
    health: &Result<HealthResponse, CallError>,
) -> Result<String, Failure> {
    let accepted = || {
        format!(
            "signature of access key id {} (region {}) accepted at {}",
            settings.credential.access_key_id, settings.region, settings.path
        )
    };
    match health {
        Ok(_) => Ok(accepted()),
        Err(CallError::Refused { status, name }) => {
            let what = match name {
                Some(name) => format!("HTTP {status} {name}"),
                None => format!("HTTP {status}"),
            };
            match (name, status) {
                (Some(ErrorName::InvalidUriPathException), _) | (None, 404) => Err(fail(
                    format!("{what} for POST {}/health", settings.path),
                    format!(
                        "no route at {}: check the URI path prefix (XksProxyUriPath, path) against the proxy's key store prefix",
                        settings.path
                    ),
                )),
                (
                    Some(
                        ErrorName::AuthenticationFailedException | ErrorName::AccessDeniedException,
                    ),
                    _,
                )
                | (None, 401 | 403) => Err(fail(
                    what,
                    format!(
                        "the proxy refused the signature: check the access key id and secret (and that the key store accepts region {})",
                        settings.region
                    ),
                )),
                // Any other refusal comes after the proxy has checked the signature.
                _ => Ok(accepted()),
            }
        }
        Err(CallError::BadAnswer(_)) => Ok(accepted()),
        Err(CallError::Transport(transport)) => Err(transport_failure(*transport, settings)),
        Err(CallError::Local(reason)) => Err(fail(
            (*reason).to_owned(),
            "the request cannot be signed: check the access key id and secret",
        )),
    }
}

/// A signed call that got no HTTP answer although the TLS step passed.
fn transport_failure(transport: Transport, settings: &ExternalSettings) -> Failure {
    let budget = millis(settings.timeout);
    match transport {
        Transport::Timeout => fail(
            format!("no answer within timeout_ms ({budget})"),
            format!(
                "the proxy did not answer within the instance's budget ({budget}): check the proxy's load and its EKM's latency, or raise timeout_ms"
            ),
        ),
        Transport::Tls => fail(
            "the signed request met a TLS failure",
            "the proxy refused the connection at the TLS layer (client certificate?): check its log",
        ),
        Transport::Unreachable => fail(
            "the signed request found no connection",
            "the proxy went away between steps: run the check again",
        ),
        Transport::Other => fail(
            "the connection broke during the signed request",
            "check the proxy's log; a load balancer in front of it may be cutting connections",
        ),
    }
}

/// The health step: every HSM's verdict.
pub(super) fn health(
    health: Result<HealthResponse, CallError>,
    settings: &ExternalSettings,
) -> Result<String, Failure> {
    let health = match health {
        Ok(health) => health,
        Err(CallError::Refused { status, name }) => {
            let what = name.map_or_else(
                || format!("HTTP {status}"),
                |n| format!("HTTP {status} {n}"),
            );
            let hint = match (name, status) {
                (Some(ErrorName::ThrottlingException), _) | (None, 429) => {
                    "the proxy throttled the check: try again, or look at its rate limits"
                }
                (Some(ErrorName::DependencyTimeoutException), _) | (None, 503) => {
                    "the proxy's key manager did not answer in time: check the EKM"
                }
                _ => "the proxy could not answer GetHealthStatus: check its log and its EKM",
            };
            return Err(fail(what, hint));
        }
        Err(CallError::BadAnswer(reason)) => {
            return Err(fail(
                format!("the answer is not a valid GetHealthStatus: {reason}"),
                "the endpoint is not an XKS v1 proxy, or a different version: check the endpoint and path",
            ));
        }
        Err(CallError::Transport(transport)) => return Err(transport_failure(transport, settings)),
        Err(CallError::Local(reason)) => return Err(fail(reason, "run the check again")),
    };
    let fleet: Vec<String> = health
        .ekm_fleet_details
        .iter()
        .map(|e| format!("{} ({}): {}", e.id, e.model, wire_name(&e.health_status)))
        .collect();
    let overall = if health.all_unavailable() {
        HealthStatus::Unavailable
    } else if health
        .ekm_fleet_details
        .iter()
        .all(|e| e.health_status == HealthStatus::Active)
    {
        HealthStatus::Active
    } else {
        HealthStatus::Degraded
    };
    let detail = format!(
        "{}: {} · proxy {} ({} in the fleet), EKM {}",
        wire_name(&overall),
        fleet.join(", "),
        health.xks_proxy_model,
        health.xks_proxy_fleet_size,
        health.ekm_vendor
    );
    match overall {
        HealthStatus::Unavailable => Err(fail(
            detail,
            "the proxy answers but every key manager (HSM) behind it is UNAVAILABLE: check that the \
             EKM is running, that the proxy reaches it, and the HSM token and PIN",
        )),
        // DEGRADED still serves (the connector stays connected); the detail says so.
        _ => Ok(detail),
    }
}

/// The key metadata step: is the test key usable for a KMS key?
pub(super) fn metadata(
    key: &ExternalKeyId,
    answer: Result<MetadataResponse, CallError>,
    settings: &ExternalSettings,
) -> Result<String, Failure> {
    match answer {
        Ok(metadata) => {
            let usage: Vec<String> = metadata.key_usage.iter().map(wire_name).collect();
            let detail = format!(
                "{}: {}, {}, usage {}",
                key.as_str(),
                wire_name(&metadata.key_status),
                wire_name(&metadata.key_spec),
                usage.join("+")
            );
            match metadata.unusable_reason() {
                None => Ok(detail),
                Some(reason) => Err(fail(
                    detail,
                    format!("{reason}: enable the key in the EKM, or use another external key id"),
                )),
            }
        }
        Err(CallError::Refused {
            name: Some(ErrorName::KeyNotFoundException),
            status,
        }) => Err(fail(
            format!("HTTP {status} KeyNotFoundException"),
            format!(
                "no key {} behind this proxy: check the external key id (ekm keys list)",
                key.as_str()
            ),
        )),
        Err(CallError::Refused { status, name }) => Err(fail(
            name.map_or_else(
                || format!("HTTP {status}"),
                |n| format!("HTTP {status} {n}"),
            ),
            "the proxy refused GetKeyMetadata: check the key store's key list and its authorization rules",
        )),
        Err(CallError::BadAnswer(reason)) => Err(fail(
            format!("the answer is not a valid GetKeyMetadata: {reason}"),
            "the endpoint is not an XKS v1 proxy: check the endpoint and path",
        )),
        Err(CallError::Transport(transport)) => Err(transport_failure(transport, settings)),
        Err(CallError::Local(reason)) => Err(fail(reason, "run the check again")),
    }
}

/// The wire name of a schemas enum (`ACTIVE`, `ENABLED`, `AES_256`).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use schemas::sigv4::{Credential, Secret};
    use schemas::xki::EkmFleetEntry;

    use super::*;

    fn settings() -> ExternalSettings {
        ExternalSettings {
            endpoint: "https://xki.example.com".into(),
            authority: "xki.example.com".into(),
            path: "/tenant/kms/xks/v1".into(),
            credential: Credential::new("AKIAXKIVECTORS2345672ABC", Secret::new("s".to_owned())),
            region: "cn-hangzhou".into(),
            ca_certs: Vec::new(),
            certificate_sha256: Some([0; 32]),
            connectivity: Default::default(),
            client_identity: None,
            health_interval: Duration::from_secs(10),
            timeout: Duration::from_millis(250),
        }
    }

    fn fleet(statuses: &[HealthStatus]) -> HealthResponse {
        HealthResponse {
            xks_proxy_fleet_size: 1,
            xks_proxy_vendor: "v".into(),
            xks_proxy_model: "m".into(),
            ekm_vendor: "e".into(),
            ekm_fleet_details: statuses
                .iter()
                .enumerate()
                .map(|(i, status)| EkmFleetEntry {
                    id: format!("hsm-{i}"),
                    model: "softhsm".into(),
                    health_status: *status,
                })
                .collect(),
        }
    }

    fn refused(status: u16, name: Option<ErrorName>) -> Result<HealthResponse, CallError> {
        Err(CallError::Refused { status, name })
    }

    #[test]
    fn health_verdicts() {
        let s = settings();
        let active = health(Ok(fleet(&[HealthStatus::Active])), &s).unwrap();
        assert!(
            active.starts_with("ACTIVE: hsm-0 (softhsm): ACTIVE"),
            "{active}"
        );
        // DEGRADED still serves: a pass that says so.
        let degraded = health(
            Ok(fleet(&[HealthStatus::Active, HealthStatus::Unavailable])),
            &s,
        )
        .unwrap();
        assert!(degraded.starts_with("DEGRADED"), "{degraded}");
        let down = health(
            Ok(fleet(&[
                HealthStatus::Unavailable,
                HealthStatus::Unavailable,
            ])),
            &s,
        )
        .err()
        .unwrap();
        assert!(down.detail.starts_with("UNAVAILABLE"), "{}", down.detail);
        let throttled = health(refused(429, Some(ErrorName::ThrottlingException)), &s)
            .err()
            .unwrap();
        assert!(throttled.hint.contains("throttled"), "{}", throttled.hint);
    }

    #[test]
    fn sigv4_verdicts() {
        let s = settings();
        for (status, name) in [
            (401, Some(ErrorName::AuthenticationFailedException)),
            (403, Some(ErrorName::AccessDeniedException)),
            (401, None),
        ] {
            let failure = sigv4(&s, &refused(status, name)).err().unwrap();
            assert!(
                failure.hint.contains("check the access key id and secret"),
                "{status}: {}",
                failure.hint
            );
        }
        for (status, name) in [(404, Some(ErrorName::InvalidUriPathException)), (404, None)] {
            let failure = sigv4(&s, &refused(status, name)).err().unwrap();
            assert!(
                failure.hint.starts_with("no route at /tenant/kms/xks/v1"),
                "{}",
                failure.hint
            );
        }
        // Past the signature: the health step decides.
        sigv4(&s, &refused(500, Some(ErrorName::InternalException))).unwrap();
        let timeout = sigv4(&s, &Err(CallError::Transport(Transport::Timeout)))
            .err()
            .unwrap();
        assert!(timeout.hint.contains("250 ms"), "{}", timeout.hint);
    }
}
