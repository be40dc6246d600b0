//! `Zone`: one per zone control plane.

use serde::{Deserialize, Serialize};

/// Zone spec: `enabled` (absent = true).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}
