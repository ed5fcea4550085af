//! Strict standard Base64 (RFC 4648 §4): padding required, no URL-safe alphabet, no whitespace,
//! no non-canonical trailing bits. Every Base64 field of the XKI protocol goes through here.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard alphabet, padding required on decode, non-zero trailing bits rejected.
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(false),
);

/// Why a Base64 string was refused. The message never repeats the input (it may be secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Base64Error {
    /// Not canonical standard Base64 with padding.
    #[error("not canonical standard Base64 (padding required, no whitespace or URL-safe alphabet)")]
    NotCanonical,
}

/// Encodes bytes as standard, padded Base64.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STRICT.encode(bytes)
}

/// Decodes strict standard Base64; anything that would not re-encode to the same text is refused.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = STRICT.decode(text).map_err(|_| Base64Error::NotCanonical)?;
    // The engine already enforces canonical padding and trailing bits; the round trip is a
    // belt-and-braces check that costs one small encode.
    if STRICT.encode(&bytes) != text {
        return Err(Base64Error::NotCanonical);
    }
    Ok(bytes)
}

/// Length in bytes that `len` Base64 characters can at most decode to.
pub const fn max_decoded_len(encoded_len: usize) -> usize {
    encoded_len / 4 * 3
}

/// Length in characters of the padded Base64 encoding of `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_canonical() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn rejects_non_canonical() {
        for bad in [
            "aGVsbG8",    // missing padding
            "aGVsbG8==",  // too much padding
            "aGVsbG9=",   // non-zero trailing bits
            "aGVs bG8=",  // whitespace
            "aGVsbG8=\n", // trailing newline
            "-_-_",       // URL-safe alphabet
            "a===",       // impossible length
            "=",
        ] {
            assert_eq!(decode(bad), Err(Base64Error::NotCanonical), "{bad:?}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(4300), 5736);
        assert_eq!(encoded_len(8192), 10924);
        assert_eq!(max_decoded_len(5736), 4302);
    }

    proptest! {
        #[test]
        fn decode_after_encode_is_identity(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn accepted_text_is_canonical(text in "[A-Za-z0-9+/=_\\- \n-]{0,40}") {
            // Whatever decode accepts must be exactly what encode would have produced.
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(bytes), text);
            }
        }

        #[test]
        fn non_canonical_variants_rejected(bytes in proptest::collection::vec(any::<u8>(), 1..128)) {
            let good = encode(&bytes);
            // Without padding (when there is any), with whitespace, with URL-safe characters.
            let unpadded = good.trim_end_matches('=');
            if unpadded.len() != good.len() {
                prop_assert!(decode(unpadded).is_err());
            }
            let spaced = format!("{} {}", &good[..2], &good[2..]);
            prop_assert!(decode(&spaced).is_err());
            let url_safe = good.replace('+', "-").replace('/', "_");
            if url_safe != good {
                prop_assert!(decode(&url_safe).is_err());
            }
            // Flip the trailing bits of the last data character when the encoding has slack.
            if good.ends_with('=') {
                let idx = good.trim_end_matches('=').len() - 1;
                let last = good.as_bytes()[idx];
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                let pos = alphabet.iter().position(|c| *c == last).unwrap();
                let tweaked = alphabet[pos ^ 1] as char;
                let mut s = good.clone();
                s.replace_range(idx..=idx, &tweaked.to_string());
                prop_assert!(decode(&s).is_err());
            }
        }
    }
}
