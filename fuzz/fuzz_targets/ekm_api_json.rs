//! The EKM API's JSON (`schemas::ekm`), request and response bodies alike (the proxy parses the
//! EKM's answers too): JSON → type → JSON → type is the identity, and the serialised form is
//! stable (serialising the re-parsed value gives the same bytes). Ids inside are valid
//! `ExternalKeyId`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::ekm::{
    AdoptKeyRequest, CreateKeyRequest, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse, ErrorResponse, HealthResponse, KeyMetadata, ListKeysResponse,
    ScheduleDeletionRequest,
};
use schemas::xki::ExternalKeyId;
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_vec(&value).unwrap();
    let again: T = serde_json::from_slice(&json).expect("our own JSON does not parse");
    assert_eq!(again, value, "JSON round trip changed the value");
    assert_eq!(
        serde_json::to_vec(&again).unwrap(),
        json,
        "serialisation is not stable"
    );
    Some(value)
}

fn valid_id(id: &ExternalKeyId) {
    assert_eq!(ExternalKeyId::parse(id.as_str()).as_ref(), Ok(id));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 11 {
        0 => {
            if let Some(r) = round_trip::<CreateKeyRequest>(body) {
                r.external_key_id.iter().for_each(valid_id);
            }
        }
        1 => drop(round_trip::<AdoptKeyRequest>(body)),
        2 => drop(round_trip::<ScheduleDeletionRequest>(body)),
        3 => {
            if let Some(m) = round_trip::<KeyMetadata>(body) {
                valid_id(&m.external_key_id);
            }
        }
        4 => {
            if let Some(list) = round_trip::<ListKeysResponse>(body) {
                list.keys.iter().for_each(|k| valid_id(&k.external_key_id));
            }
        }
        5 => drop(round_trip::<EncryptRequest>(body)),
        6 => drop(round_trip::<EncryptResponse>(body)),
        7 => drop(round_trip::<DecryptRequest>(body)),
        8 => drop(round_trip::<DecryptResponse>(body)),
        9 => drop(round_trip::<HealthResponse>(body)),
        _ => drop(round_trip::<ErrorResponse>(body)),
    }
});
