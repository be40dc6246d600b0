//! `DataplaneInsight`: what the control plane knows of a proxy's xDS streams (read-only over
//! the API). Counters are `uint64` and so travel as JSON strings, as in Kuma.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Insight spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneInsight {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<DiscoverySubscription>,
    #[serde(default, rename = "mTLS", skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl DataplaneInsight {
    /// Online = some subscription connected and not disconnected.
    pub fn is_online(&self) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.connect_time.is_some() && s.disconnect_time.is_none())
    }
}

/// One ADS stream of a proxy to one control plane instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySubscription {
    pub id: String,
    pub control_plane_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<String>,
    #[serde(default)]
    pub status: SubscriptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    #[serde(default)]
    pub generation: u32,
}

/// Per-type counters of a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default)]
    pub total: DiscoveryServiceStats,
    #[serde(default)]
    pub cds: DiscoveryServiceStats,
    #[serde(default)]
    pub eds: DiscoveryServiceStats,
    #[serde(default)]
    pub lds: DiscoveryServiceStats,
    #[serde(default)]
    pub rds: DiscoveryServiceStats,
    /// Our addition to Kuma's shape: the last config Envoy rejected, with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<LastNack>,
}

/// The last NACK on a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastNack {
    pub type_url: String,
    pub reason: String,
    pub time: String,
}

/// Responses sent / ACKed / NACKed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryServiceStats {
    #[serde(default, with = "u64_string", skip_serializing_if = "is_zero")]
    pub responses_sent: u64,
    #[serde(default, with = "u64_string", skip_serializing_if = "is_zero")]
    pub responses_acknowledged: u64,
    #[serde(default, with = "u64_string", skip_serializing_if = "is_zero")]
    pub responses_rejected: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Protobuf JSON mapping of uint64: a decimal string (numbers accepted on input).
mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
        }
    }
}
