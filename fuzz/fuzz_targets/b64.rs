//! Strict Base64 (`schemas::b64`): whatever `decode` accepts is exactly what `encode` writes
//! (so decode → encode gives the input back), the input's length is a multiple of 4 and the
//! length helpers bound the result; any bytes survive encode → decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::b64;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = b64::decode(text) {
            assert_eq!(b64::encode(&bytes), text, "accepted text is not canonical");
            assert_eq!(text.len() % 4, 0);
            assert!(bytes.len() <= b64::max_decoded_len(text.len()));
            assert_eq!(b64::encoded_len(bytes.len()), text.len());
        } else {
            // A refusal must not be a text that encode could have written.
            let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
            let body = text.trim_end_matches('=');
            let padding = text.len() - body.len();
            let could_be = text.len() % 4 == 0 && padding <= 2 && body.bytes().all(alphabet);
            if could_be {
                // Only non-zero trailing bits (or padding that does not fit) are left to refuse.
                let decoded_len = body.len() * 6 / 8;
                let canonical = b64::encoded_len(decoded_len) == text.len()
                    && b64::encode(vec![0u8; decoded_len]).len() == text.len();
                if canonical && padding == 0 {
                    panic!("refused a full-quantum text of the standard alphabet: {text:?}");
                }
            }
        }
    }
    let encoded = b64::encode(data);
    assert_eq!(encoded.len(), b64::encoded_len(data.len()));
    assert_eq!(b64::decode(&encoded).as_deref(), Ok(data));
});
