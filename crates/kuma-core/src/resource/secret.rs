//! `Secret` (mesh-scoped) and `GlobalSecret`: opaque base64 data.
//!
//! As in Kuma, nothing in the spec is validated beyond its decoding: `data` (a protobuf
//! `BytesValue`) may be absent or empty, and must be base64 when present (standard or
//! URL-safe alphabet, padded or not, as Go's protobuf JSON decoder reads bytes).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// Body of `Secret` and `GlobalSecret`: `data` is base64 (protobuf `BytesValue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretData {
    #[serde(default, deserialize_with = "super::mesh::null_default")]
    pub data: String,
}

impl SecretData {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            data: STANDARD.encode(bytes),
        }
    }

    /// The decoded bytes (validated on input, so this only fails for hand-built values).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        decode(&self.data).ok()
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        decode(&self.data)
            .map(|_| ())
            .map_err(|e| ValidationError::single("data", e))
    }
}

/// Decodes like Go's protobuf JSON decoder: standard alphabet, else URL-safe, padding
/// optional. The error is Go's `illegal base64 data at input byte N`.
fn decode(s: &str) -> Result<Vec<u8>, String> {
    let engine_for = |s: &str| match (s.contains(['-', '_']), s.ends_with('=')) {
        (false, true) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    engine_for(s).decode(s).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(len) => len,
            base64::DecodeError::InvalidPadding => s.find('=').unwrap_or(s.len()),
        };
        format!("illegal base64 data at input byte {at}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(v: serde_json::Value) -> SecretData {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn kuma_conformance_cases() {
        // S1: base64 data.
        let s = secret(json!({"data": "dGVzdAo="}));
        s.validate().unwrap();
        assert_eq!(s.bytes().unwrap(), b"test\n");
        // S3: no data (or null, or empty) is accepted.
        secret(json!({})).validate().unwrap();
        secret(json!({"data": null})).validate().unwrap();
        secret(json!({"data": ""})).validate().unwrap();
        // S2: not base64.
        let e = secret(json!({"data": "not base64!"}))
            .validate()
            .unwrap_err();
        assert_eq!(e.violations[0].field, "data");
        assert_eq!(
            e.violations[0].message,
            "illegal base64 data at input byte 3"
        );
        // Unknown fields are ignored.
        secret(json!({"data": "dGVzdAo=", "foo": 1}))
            .validate()
            .unwrap();
    }

    #[test]
    fn url_safe_and_unpadded_base64() {
        assert_eq!(
            secret(json!({"data": "dGVzdAo"})).bytes().unwrap(),
            b"test\n"
        );
        assert_eq!(
            secret(json!({"data": "_-8="})).bytes().unwrap(),
            [0xff, 0xef]
        );
        assert_eq!(SecretData::from_bytes(b"\xff\xef").data, "/+8=");
    }
}
