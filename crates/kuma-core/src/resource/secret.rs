//! `Secret` (mesh-scoped) and `GlobalSecret`: opaque base64 data.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// Body of `Secret` and `GlobalSecret`: `data` is base64 (protobuf `BytesValue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretData {
    #[serde(default)]
    pub data: String,
}

impl SecretData {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The decoded bytes (validated on input, so this only fails for hand-built values).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .ok()
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.data.is_empty() {
            return Err(ValidationError::single("data", "cannot be empty"));
        }
        if self.bytes().is_none() {
            return Err(ValidationError::single("data", "must be valid base64"));
        }
        Ok(())
    }
}
