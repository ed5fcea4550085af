//! OpenAPI request parameters: form-style decoding of the query and body, Alibaba's
//! `percentEncode`, and the canonical `k=v&…` string both signatures are built on.

use std::collections::BTreeMap;

use super::AcsSignatureError;
use crate::http::{RequestParts, rfc3986_encode};

/// Alibaba's `percentEncode`: RFC 3986, so space → `%20`, `*` → `%2A`, `~` kept, upper-case hex.
pub fn percent_encode(value: &str) -> String {
    rfc3986_encode(value.as_bytes())
}

/// `k=v&k=v…` in the given order, each side [`percent_encode`]d: a query string or a form body
/// that every Alibaba gateway (and [`api_parameters`]) decodes back to the same pairs.
pub fn encode_parameters<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (key, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(key.as_ref()));
        out.push('=');
        out.push_str(&percent_encode(value.as_ref()));
    }
    out
}

/// The API parameters of a request: the query plus, when the body is not empty, the
/// form-urlencoded body, decoded form-style (`+` is a space). Refuses a repeated name, text that
/// is not UTF-8 after decoding, a broken `%` escape, and a non-empty body of another media type.
pub fn api_parameters(
    request: &RequestParts<'_>,
) -> Result<BTreeMap<String, String>, AcsSignatureError> {
    let mut parameters = BTreeMap::new();
    for (name, value) in request_pairs(request)? {
        if parameters.contains_key(&name) {
            return Err(AcsSignatureError::DuplicateParameter(printable(&name)));
        }
        parameters.insert(name, value);
    }
    Ok(parameters)
}

/// Every decoded parameter pair of the query and the form body, in order, repeats kept.
fn request_pairs(request: &RequestParts<'_>) -> Result<Vec<(String, String)>, AcsSignatureError> {
    let mut pairs = form_pairs(request.query())?;
    if !request.body.is_empty() {
        pairs.extend(form_pairs(form_body(request)?)?);
    }
    Ok(pairs)
}

/// The body as form text; `Content-Type`, if present, must be `application/x-www-form-urlencoded`.
fn form_body<'a>(request: &RequestParts<'a>) -> Result<&'a str, AcsSignatureError> {
    let is_form = |value: &str| {
        let essence = value.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    };
    if !request.header_values("content-type").all(is_form) {
        return Err(AcsSignatureError::MalformedParameters(
            "body is not form-urlencoded",
        ));
    }
    std::str::from_utf8(request.body)
        .map_err(|_| AcsSignatureError::MalformedParameters("body is not UTF-8"))
}

/// Splits `k=v&k=v` and decodes each side form-style; empty segments are skipped, a segment
/// without `=` is a name with an empty value.
pub(crate) fn form_pairs(raw: &str) -> Result<Vec<(String, String)>, AcsSignatureError> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(name)?, form_decode(value)?))
        })
        .collect()
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte, the result UTF-8.
pub(crate) fn form_decode(component: &str) -> Result<String, AcsSignatureError> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
                let mut byte = [0u8; 1];
                if hex.len() != 2 || hex::decode_to_slice(hex, &mut byte).is_err() {
                    return Err(AcsSignatureError::MalformedParameters(
                        "broken percent escape",
                    ));
                }
                out.push(byte[0]);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| AcsSignatureError::MalformedParameters("parameter is not UTF-8"))
}

/// Sorted `k=v` pairs joined with `&`, each side [`percent_encode`]d: the canonical query string
/// of ACS3 and the canonicalized query of the RPC signature.
pub(crate) fn canonical_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (key, value) in &encoded {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// A client-supplied name made safe for an error message: printable ASCII, at most 64 chars.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        target: &'a str,
        headers: &'a [(String, String)],
        body: &'a [u8],
    ) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            target,
            headers,
            body,
        }
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%2Fc").unwrap(), "a b/c");
        assert_eq!(form_decode("%E6%97%A5%2b~*").unwrap(), "日+~*");
        assert_eq!(form_decode("").unwrap(), "");
        for bad in ["%", "%2", "%zz", "%FF", "a%E6%97"] {
            assert!(
                matches!(
                    form_decode(bad),
                    Err(AcsSignatureError::MalformedParameters(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn canonical_query_encodes_rfc3986_and_sorts() {
        let pairs = [("b", "x y"), ("a", "+/*~"), ("A", "日"), ("a", "")];
        assert_eq!(
            canonical_query(pairs),
            "A=%E6%97%A5&a=&a=%2B%2F%2A~&b=x%20y"
        );
    }

    #[test]
    fn parameters_from_query_and_form_body() {
        let form = vec![(
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded; charset=UTF-8".to_owned(),
        )];
        let p = api_parameters(&request("/?A=1&B=x+y&&C", &form, b"D=%2B&E=a%20b")).unwrap();
        let got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("A", "1"),
                ("B", "x y"),
                ("C", ""),
                ("D", "+"),
                ("E", "a b")
            ]
        );
        // No content type: a non-empty body is read as a form too.
        assert_eq!(
            api_parameters(&request("/", &[], b"X=1")).unwrap()["X"],
            "1"
        );
    }

    #[test]
    fn parameters_refuse_ambiguity() {
        assert_eq!(
            api_parameters(&request("/?A=1", &[], b"A=2")),
            Err(AcsSignatureError::DuplicateParameter("A".to_owned()))
        );
        let json = vec![("content-type".to_owned(), "application/json".to_owned())];
        assert!(matches!(
            api_parameters(&request("/?A=1", &json, b"{}")),
            Err(AcsSignatureError::MalformedParameters(_))
        ));
        // An empty body is never parsed, whatever its type.
        assert!(api_parameters(&request("/?A=1", &json, b"")).is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        let pairs = [("Key Name", "a b+c/d*e~f日本=&")];
        let encoded = encode_parameters(pairs);
        assert_eq!(
            encoded,
            "Key%20Name=a%20b%2Bc%2Fd%2Ae~f%E6%97%A5%E6%9C%AC%3D%26"
        );
        assert_eq!(
            form_pairs(&encoded).unwrap(),
            [("Key Name".to_owned(), "a b+c/d*e~f日本=&".to_owned())]
        );
    }

    #[test]
    fn printable_names() {
        assert_eq!(printable("Ab-1"), "Ab-1");
        assert_eq!(printable("a b\n日"), "a?b??");
        assert_eq!(printable(&"x".repeat(100)).len(), 64);
    }
}
