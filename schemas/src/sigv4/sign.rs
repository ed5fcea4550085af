//! The SigV4 signer: what KMS (or curl) does before sending an XKI request.

use time::OffsetDateTime;

use super::canonical::{
    canonical_request, format_amz_date, is_header_name, is_scope_token, signing_key, string_to_sign,
};
use super::{ALGORITHM, SigV4Error};
use crate::http::{Credential, RequestParts, hmac_sha256};

/// The two headers a signed request carries in addition to its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// The value of `x-amz-date`.
    pub x_amz_date: String,
    /// The value of `Authorization`.
    pub authorization: String,
}

/// Signs requests with one credential for one region and service.
#[derive(Debug, Clone)]
pub struct Signer {
    credential: Credential,
    region: String,
    service: String,
}

impl Signer {
    /// A signer; `region` and `service` form the credential scope.
    pub fn new(
        credential: Credential,
        region: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Self {
            credential,
            region: region.into(),
            service: service.into(),
        }
    }

    /// The access key id this signer signs with.
    pub fn access_key_id(&self) -> &str {
        &self.credential.access_key_id
    }

    /// Signs `request` at time `now`, over `host`, `x-amz-date` and `extra_signed_headers`
    /// (e.g. `content-type`; any case). `request.headers` must contain `host` and every extra
    /// header; an `x-amz-date` among them is ignored and replaced by the returned one.
    pub fn sign(
        &self,
        request: &RequestParts<'_>,
        extra_signed_headers: &[&str],
        now: OffsetDateTime,
    ) -> Result<SignatureHeaders, SigV4Error> {
        let access_key_id = &self.credential.access_key_id;
        if access_key_id.is_empty()
            || !access_key_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
        {
            return Err(SigV4Error::InvalidSigningRequest("invalid access key id"));
        }
        if !is_scope_token(&self.region) || !is_scope_token(&self.service) {
            return Err(SigV4Error::InvalidSigningRequest(
                "invalid region or service",
            ));
        }
        let mut signed_headers = vec!["host".to_owned(), "x-amz-date".to_owned()];
        for name in extra_signed_headers {
            let name = name.to_ascii_lowercase();
            if !is_header_name(&name) {
                return Err(SigV4Error::InvalidSigningRequest("invalid header name"));
            }
            signed_headers.push(name);
        }
        signed_headers.sort();
        signed_headers.dedup();

        let x_amz_date = format_amz_date(now)?;
        let scope_date = &x_amz_date[..8];
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("x-amz-date"))
            .cloned()
            .collect();
        headers.push(("x-amz-date".to_owned(), x_amz_date.clone()));
        let dated = RequestParts {
            headers: &headers,
            ..*request
        };

        let canonical = canonical_request(&dated, &signed_headers)?;
        let string_to_sign = string_to_sign(
            &x_amz_date,
            scope_date,
            &self.region,
            &self.service,
            &canonical,
        );
        let key = signing_key(
            self.credential.secret.expose(),
            scope_date,
            &self.region,
            &self.service,
        );
        let signature = hex::encode(hmac_sha256(&*key, string_to_sign.as_bytes()));
        let authorization = format!(
            "{ALGORITHM} Credential={access_key_id}/{scope_date}/{}/{}/aws4_request, SignedHeaders={}, Signature={signature}",
            self.region,
            self.service,
            signed_headers.join(";"),
        );
        Ok(SignatureHeaders {
            x_amz_date,
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::Verifier;
    use time::macros::datetime;

    #[test]
    fn round_trip_and_signed_header_set() {
        let signer = Signer::new(
            Credential::new("AKIDEXAMPLE", "s3cr3t"),
            "us-east-1",
            "kms-xks-proxy",
        );
        let mut headers = vec![
            ("Host".to_owned(), "xks.example.com".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Amz-Date".to_owned(), "19990101T000000Z".to_owned()),
        ];
        let body = br#"{"requestMetadata":{}}"#;
        let now = datetime!(2026-11-23 14:59:00 UTC);
        let request = RequestParts {
            method: "POST",
            target: "/kms/xks/v1/health",
            headers: &headers,
            body,
        };
        let signed = signer.sign(&request, &["Content-Type"], now).unwrap();
        assert_eq!(signed.x_amz_date, "20261123T145900Z");
        assert!(
            signed.authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
            "{}",
            signed.authorization
        );
        headers.retain(|(n, _)| n != "X-Amz-Date");
        headers.push(("X-Amz-Date".to_owned(), signed.x_amz_date));
        headers.push(("Authorization".to_owned(), signed.authorization));
        let request = RequestParts {
            method: "POST",
            target: "/kms/xks/v1/health",
            headers: &headers,
            body,
        };
        let lookup = |ak: &str| (ak == "AKIDEXAMPLE").then(|| "s3cr3t".into());
        let verified = Verifier::new(["us-east-1"])
            .verify(&request, lookup, now)
            .unwrap();
        assert_eq!(
            verified.signed_headers,
            ["content-type", "host", "x-amz-date"]
        );
    }

    #[test]
    fn refuses_unsignable_input() {
        let now = datetime!(2026-11-23 14:59:00 UTC);
        let headers = vec![("Host".to_owned(), "h".to_owned())];
        let request = RequestParts {
            method: "POST",
            target: "/",
            headers: &headers,
            body: b"",
        };
        let signer = Signer::new(Credential::new("AK", "s"), "us east", "kms-xks-proxy");
        assert!(matches!(
            signer.sign(&request, &[], now),
            Err(SigV4Error::InvalidSigningRequest(_))
        ));
        let signer = Signer::new(Credential::new("AK", "s"), "us-east-1", "kms-xks-proxy");
        assert_eq!(
            signer.sign(&request, &["content-type"], now),
            Err(SigV4Error::MissingSignedHeader("content-type".to_owned()))
        );
        assert!(matches!(
            signer.sign(&request, &["bad name"], now),
            Err(SigV4Error::InvalidSigningRequest(_))
        ));
        let no_host = RequestParts {
            headers: &[],
            ..request
        };
        assert_eq!(
            signer.sign(&no_host, &[], now),
            Err(SigV4Error::MissingSignedHeader("host".to_owned()))
        );
    }
}
