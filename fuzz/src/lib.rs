//! What the fuzz targets share: a raw HTTP request framing the fuzzer (and the seed corpus)
//! writes requests in, and the *meaning* of a request as a server acts on it, computed here
//! independently of `schemas`, so that a target can check that a signature which verifies for
//! two requests is only ever shared by requests that mean the same.
//!
//! The framing is HTTP/1.1 without the version (it is optional):
//!
//! ```text
//! METHOD SP TARGET [SP HTTP/1.1] LF
//! Name: value LF        (a CR before LF is dropped; one space after ':' is dropped)
//! LF
//! body bytes
//! ```
//!
//! Only what an HTTP server can hand to a handler is accepted: a token method, a target of
//! visible ASCII, token header names, header values without control characters but HTAB.

use schemas::http::RequestParts;

/// A request as a server receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The method, a token.
    pub method: String,
    /// Path and optional `?query`, visible ASCII.
    pub target: String,
    /// Headers in order, names in any case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// RFC 9110 `tchar`.
pub fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A field value an HTTP server delivers: no control character but HTAB.
pub fn is_field_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}

impl RawRequest {
    /// Parses the framing; `None` for anything a server would not deliver.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let split = bytes.windows(2).position(|w| w == b"\n\n");
        let (head, body) = match split {
            Some(at) => (&bytes[..at], &bytes[at + 2..]),
            None => (bytes, &[][..]),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next()?;
        let request_line = request_line
            .strip_suffix(" HTTP/1.1")
            .unwrap_or(request_line);
        let (method, target) = request_line.split_once(' ')?;
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return None;
        }
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let value = value.strip_prefix(' ').unwrap_or(value);
            if name.is_empty() || !name.bytes().all(is_tchar) || !is_field_value(value) {
                return None;
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        Some(Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
            body: body.to_vec(),
        })
    }

    /// The framing of this request (what [`Self::parse`] reads back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {}\n", self.method, self.target).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// The view the verifiers take.
    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            target: &self.target,
            headers: &self.headers,
            body: &self.body,
        }
    }

    /// Removes every header called `name` (any case).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Every value of `name` (any case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes every well-formed `%XX`; anything else (also a `%` without two hex digits) stays as
/// it is. What a server's router does with a raw path.
pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Decodes a form component: `+` is a space, `%XX` a byte; `None` for a broken escape.
pub fn form_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = hex(*bytes.get(i + 1)?)?;
                let l = hex(*bytes.get(i + 2)?)?;
                out.push(h << 4 | l);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    Some(out)
}

/// What a server acts on in a signed request: the method, the decoded path, the decoded query
/// pairs (as a sorted multiset: the order of parameters carries no meaning), the signed headers
/// with their values as HTTP defines them equal, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meaning {
    /// The method.
    pub method: String,
    /// The decoded path; `/` for an empty one.
    pub path: Vec<u8>,
    /// Decoded `(name, value)` pairs, sorted.
    pub query: Vec<(Vec<u8>, Vec<u8>)>,
    /// `(lower-case name, value)` of each signed header, repeated values joined with `,`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// How a header value is compared.
#[derive(Debug, Clone, Copy)]
pub enum ValueRule {
    /// SigV4: trimmed, every inner run of spaces and tabs is one space.
    CollapseSpaces,
    /// ACS3: trimmed of spaces and tabs.
    Trim,
}

fn value_meaning(value: &str, rule: ValueRule) -> String {
    match rule {
        ValueRule::CollapseSpaces => value
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        ValueRule::Trim => value.trim_matches([' ', '\t']).to_owned(),
    }
}

/// How a query is decoded.
#[derive(Debug, Clone, Copy)]
pub enum QueryRule {
    /// SigV4: `%XX` decoded where well-formed, `+` is a plus.
    Percent,
    /// ACS: form decoding (`+` is a space); a broken escape makes the request meaningless.
    Form,
}

impl Meaning {
    /// The meaning of `request` signed over `signed_headers` (lower-case names); `None` when the
    /// server could not decode it (then no signature may verify for it either).
    pub fn of(
        request: &RawRequest,
        signed_headers: &[String],
        value_rule: ValueRule,
        query_rule: QueryRule,
    ) -> Option<Self> {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        let path = if path.is_empty() {
            b"/".to_vec()
        } else {
            percent_decode(path)
        };
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push(match query_rule {
                QueryRule::Percent => (percent_decode(name), percent_decode(value)),
                QueryRule::Form => (form_decode(name)?, form_decode(value)?),
            });
        }
        pairs.sort();
        let headers = signed_headers
            .iter()
            .map(|name| {
                let joined = request
                    .values(name)
                    .map(|v| value_meaning(v, value_rule))
                    .collect::<Vec<_>>()
                    .join(",");
                (name.clone(), joined)
            })
            .collect();
        Some(Self {
            method: request.method.clone(),
            path,
            query: pairs,
            headers,
            body: request.body.clone(),
        })
    }
}

/// Flips `mask` into the byte at `position` (modulo the length) of the framing of `request` and
/// parses the result again: a one-byte change anywhere (method, target, a header, the body).
pub fn flip_byte(request: &RawRequest, position: usize, mask: u8) -> Option<RawRequest> {
    let mut bytes = request.to_bytes();
    if bytes.is_empty() || mask == 0 {
        return None;
    }
    let at = position % bytes.len();
    bytes[at] ^= mask;
    RawRequest::parse(&bytes)
}

/// A fixed little reader over the control bytes that open a fuzz input.
#[derive(Debug)]
pub struct Control<'a>(&'a [u8]);

impl<'a> Control<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    /// The next byte, 0 when none is left.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.byte()) | u16::from(self.byte()) << 8
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: h\nX-A:  two  spaces\n\nbody\n\nmore";
        let request = RawRequest::parse(raw).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/a?b=1");
        assert_eq!(request.headers[1], ("X-A".into(), " two  spaces".into()));
        assert_eq!(request.body, b"body\n\nmore");
        assert_eq!(RawRequest::parse(&request.to_bytes()).unwrap(), request);
        assert!(RawRequest::parse(b"POST /a b\n\n").is_none());
        assert!(RawRequest::parse(b"POST /\nBad Name: x\n\n").is_none());
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%2Fb%zz%4"), b"/a/b%zz%4");
        assert_eq!(form_decode("a+b%2B").unwrap(), b"a b+");
        assert!(form_decode("%4").is_none());
    }
}
