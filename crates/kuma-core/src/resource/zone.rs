//! `Zone`: one per zone control plane. Kuma validates nothing in its spec; a name that is not
//! an RFC 1035 label is accepted with Kuma's deprecation warning ([`Zone::warnings`]).
//!
//! `ZoneInsight` (same name as its Zone, global scope, written by the control plane only):
//! Kuma's `kuma.system.v1alpha1.ZoneInsight`, one [`KdsSubscription`] per KDS connection of
//! the zone with per-type counters, plus the time of the zone's last health check. Times are
//! RFC 3339 strings and counters `uint64` decimal strings, as protobuf JSON writes them; zero
//! counters and empty fields are left out, as Kuma's API does. The pure helpers
//! ([`ZoneInsight::is_online`], [`ZoneInsight::update_subscription`], ...) are what the KDS
//! status tracker and the API use.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::format_time;
use super::insight::DiscoveryServiceStats;

/// Zone spec: `enabled` (absent = true).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl Zone {
    /// Whether the zone takes part in cross-zone traffic (`enabled` absent = true, as Kuma's
    /// `IsEnabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// Warnings for a Zone named `display_name` (Kuma's deprecations).
    pub fn warnings(&self, display_name: &str) -> Vec<String> {
        super::mesh::name_deprecation("Zone", display_name)
            .into_iter()
            .collect()
    }
}

/// Kuma's `ZoneInsight` spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneInsight {
    /// One per KDS connection, oldest first; the last one is the current (or latest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<KdsSubscription>,
    /// Global instances holding the zone's Envoy admin streams (Kuma's, kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_admin_streams: Option<serde_json::Value>,
    /// The zone's last health check (`GlobalKDSService/HealthCheck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Global instance and connect time of each KDS stream of the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kds_streams: Option<KdsStreams>,
}

/// One KDS connection of a zone control plane to a global instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdsSubscription {
    /// Unique id of the connection.
    #[serde(default)]
    pub id: String,
    /// The global control plane instance that holds the connection.
    #[serde(default)]
    pub global_instance_id: String,
    /// RFC 3339; absent = never connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// RFC 3339; absent while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_time: Option<String>,
    /// Counters of what was sent to the zone and what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<KdsSubscriptionStatus>,
    /// Version of the zone control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ZoneVersion>,
    /// Bumped on every write of the subscription.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub generation: u32,
    /// The zone control plane's configuration, as JSON text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// Whether the zone presented an `authorization` token on the connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_token_provided: bool,
    /// The zone control plane instance at the other end.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone_instance_id: String,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl KdsSubscription {
    /// Connected and not disconnected.
    pub fn is_online(&self) -> bool {
        self.connect_time.is_some() && self.disconnect_time.is_none()
    }

    /// The `total` counters (zero when there is no status yet).
    pub fn total(&self) -> DiscoveryServiceStats {
        self.status
            .as_ref()
            .map(|s| s.total.clone())
            .unwrap_or_default()
    }
}

/// Counters of one KDS connection: in total and per resource type (`Mesh`, `Dataplane`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdsSubscriptionStatus {
    /// RFC 3339 time of the last change of the counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Kuma's `KDSServiceStats`: responses sent, ACKed, NACKed.
    #[serde(default)]
    pub total: DiscoveryServiceStats,
    /// The same per resource type name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stat: BTreeMap<String, DiscoveryServiceStats>,
}

impl KdsSubscriptionStatus {
    fn bump(&mut self, rtype: &str, now: &DateTime<Utc>, f: impl Fn(&mut DiscoveryServiceStats)) {
        f(&mut self.total);
        f(self.stat.entry(rtype.to_string()).or_default());
        self.last_update_time = Some(format_time(now));
    }

    /// A response of `rtype` was sent.
    pub fn sent(&mut self, rtype: &str, now: &DateTime<Utc>) {
        self.bump(rtype, now, |s| s.responses_sent += 1);
    }

    /// A response of `rtype` was ACKed.
    pub fn acked(&mut self, rtype: &str, now: &DateTime<Utc>) {
        self.bump(rtype, now, |s| s.responses_acknowledged += 1);
    }

    /// A response of `rtype` was NACKed.
    pub fn nacked(&mut self, rtype: &str, now: &DateTime<Utc>) {
        self.bump(rtype, now, |s| s.responses_rejected += 1);
    }
}

/// `version` of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneVersion {
    #[serde(rename = "kumaCp", default)]
    pub kuma_cp: KumaCpVersion,
}

/// Version of a zone control plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KumaCpVersion {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_date: String,
    /// Whether this zone's version can work with the global's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kuma_cp_global_compatible: bool,
}

/// `healthCheck` of a ZoneInsight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// RFC 3339 time of the last health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// `kdsStreams` of a ZoneInsight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdsStreams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dump: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_to_zone: Option<KdsStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_to_global: Option<KdsStream>,
}

/// One KDS stream: which global instance holds it, since when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdsStream {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub global_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
}

impl ZoneInsight {
    /// Kuma's online rule: some subscription is connected and not disconnected (when a new
    /// connection is recorded, [`Self::update_subscription`] closes the earlier ones, so in
    /// practice this is the last subscription).
    pub fn is_online(&self) -> bool {
        self.subscriptions.iter().any(KdsSubscription::is_online)
    }

    /// The current (latest) subscription.
    pub fn last_subscription(&self) -> Option<&KdsSubscription> {
        self.subscriptions.last()
    }

    /// The subscription with `id`.
    pub fn subscription_mut(&mut self, id: &str) -> Option<&mut KdsSubscription> {
        self.subscriptions.iter_mut().find(|s| s.id == id)
    }

    /// Sum of a counter over every subscription (`kumactl inspect zones` TOTAL UPDATES /
    /// TOTAL ERRORS).
    pub fn sum(&self, f: impl Fn(&KdsSubscription) -> u64) -> u64 {
        self.subscriptions.iter().map(f).sum()
    }

    /// Records `sub` as Kuma does: replaces the subscription with the same id; otherwise
    /// marks every earlier subscription without a disconnect time disconnected at `now` (a
    /// global killed ungracefully leaves them open), appends `sub`, and keeps only the last
    /// `limit` subscriptions (`metrics.zone.subscriptionLimit`, 10; 0 = no limit), with the
    /// details (`config`, per-type `stat`) of finished ones dropped to keep the object small.
    pub fn update_subscription(&mut self, sub: KdsSubscription, now: &DateTime<Utc>, limit: usize) {
        if let Some(existing) = self.subscription_mut(&sub.id) {
            *existing = sub;
            return;
        }
        let now = format_time(now);
        for s in &mut self.subscriptions {
            if s.disconnect_time.is_none() {
                s.disconnect_time = Some(now.clone());
            }
        }
        self.subscriptions.push(sub);
        if limit > 0 && self.subscriptions.len() > limit {
            let excess = self.subscriptions.len() - limit;
            self.subscriptions.drain(..excess);
        }
        self.compact_finished();
    }

    /// Marks the subscription `id` disconnected at `now`; false when there is none.
    pub fn disconnect(&mut self, id: &str, now: &DateTime<Utc>) -> bool {
        match self.subscription_mut(id) {
            Some(s) => {
                s.disconnect_time = Some(format_time(now));
                true
            }
            None => false,
        }
    }

    /// Drops `config` and per-type `stat` of every subscription but the last (Kuma's
    /// `CompactFinished`).
    pub fn compact_finished(&mut self) {
        let n = self.subscriptions.len();
        for s in self.subscriptions.iter_mut().take(n.saturating_sub(1)) {
            s.config.clear();
            if let Some(status) = &mut s.status {
                status.stat.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_warn_and_unknown_fields_are_ignored() {
        let z: Zone =
            serde_json::from_value(serde_json::json!({"enabled": true, "foo": 1})).unwrap();
        assert_eq!(z.enabled, Some(true));
        assert!(z.warnings("zone-1").is_empty());
        let w = z.warnings("zone.1");
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("Invalid Zone resource name: 'zone.1'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: a DNS-1035 label must consist of"),
            "{w:?}"
        );
        assert!(serde_json::from_value::<Zone>(serde_json::json!({"enabled": "yes"})).is_err());
        assert!(z.is_enabled());
        assert!(Zone::default().is_enabled());
        assert!(
            !Zone {
                enabled: Some(false)
            }
            .is_enabled()
        );
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn connected(id: &str, secs: i64) -> KdsSubscription {
        KdsSubscription {
            id: id.into(),
            global_instance_id: "global-1".into(),
            connect_time: Some(format_time(&at(secs))),
            config: format!("{{\"n\":{secs}}}"),
            status: Some(KdsSubscriptionStatus::default()),
            ..Default::default()
        }
    }

    #[test]
    fn online_follows_the_subscriptions() {
        let mut z = ZoneInsight::default();
        assert!(!z.is_online());
        assert!(z.last_subscription().is_none());
        // A subscription that never connected is not online.
        z.subscriptions.push(KdsSubscription {
            id: "0".into(),
            ..Default::default()
        });
        assert!(!z.is_online());
        z.update_subscription(connected("1", 0), &at(1), 10);
        assert!(z.is_online());
        assert!(z.disconnect("1", &at(5)));
        assert!(!z.is_online());
        assert!(!z.disconnect("nope", &at(5)));
        z.update_subscription(connected("2", 10), &at(10), 10);
        assert!(z.is_online());
        assert_eq!(z.last_subscription().unwrap().id, "2");
    }

    #[test]
    fn a_new_subscription_closes_the_open_ones_and_old_ones_are_trimmed() {
        let mut z = ZoneInsight::default();
        // Global died without recording the disconnect of "1".
        z.update_subscription(connected("1", 0), &at(0), 3);
        z.update_subscription(connected("2", 60), &at(60), 3);
        assert_eq!(
            z.subscriptions[0].disconnect_time.as_deref(),
            Some(format_time(&at(60)).as_str())
        );
        assert!(z.subscriptions[1].is_online());
        // Details of finished subscriptions are dropped, the last one keeps them.
        assert!(z.subscriptions[0].config.is_empty());
        assert_eq!(z.subscriptions[1].config, "{\"n\":60}");
        // Same id: replaced in place.
        let mut again = connected("2", 60);
        again.generation = 7;
        z.update_subscription(again, &at(61), 3);
        assert_eq!(z.subscriptions.len(), 2);
        assert_eq!(z.subscriptions[1].generation, 7);
        z.update_subscription(connected("3", 120), &at(120), 3);
        z.update_subscription(connected("4", 180), &at(180), 3);
        let ids: Vec<&str> = z.subscriptions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["2", "3", "4"]);
        assert_eq!(z.subscriptions.iter().filter(|s| s.is_online()).count(), 1);
    }

    #[test]
    fn counters_and_kumas_wire_shape() {
        let mut sub = connected("1", 0);
        sub.config = String::new();
        let status = sub.status.as_mut().unwrap();
        status.sent("Mesh", &at(1));
        status.sent("Mesh", &at(1));
        status.acked("Mesh", &at(2));
        status.sent("Secret", &at(3));
        status.nacked("Secret", &at(3));
        sub.version = Some(ZoneVersion {
            kuma_cp: KumaCpVersion {
                version: "2.14.3".into(),
                git_tag: "v2.14.3".into(),
                ..Default::default()
            },
        });
        sub.auth_token_provided = true;
        sub.zone_instance_id = "zone-cp-1".into();
        let z = ZoneInsight {
            subscriptions: vec![
                sub,
                KdsSubscription {
                    id: "2".into(),
                    global_instance_id: "global-2".into(),
                    ..Default::default()
                },
            ],
            health_check: Some(HealthCheck {
                time: Some(format_time(&at(4))),
            }),
            ..Default::default()
        };
        assert_eq!(z.sum(|s| s.total().responses_sent), 3);
        assert_eq!(z.sum(|s| s.total().responses_rejected), 1);
        let wire = serde_json::to_value(&z).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({
                "subscriptions": [
                    {
                        "id": "1",
                        "globalInstanceId": "global-1",
                        "connectTime": "2023-11-14T22:13:20Z",
                        "status": {
                            "lastUpdateTime": "2023-11-14T22:13:23Z",
                            "total": {"responsesSent": "3", "responsesAcknowledged": "1", "responsesRejected": "1"},
                            "stat": {
                                "Mesh": {"responsesSent": "2", "responsesAcknowledged": "1"},
                                "Secret": {"responsesSent": "1", "responsesRejected": "1"}
                            }
                        },
                        "version": {"kumaCp": {"version": "2.14.3", "gitTag": "v2.14.3"}},
                        "authTokenProvided": true,
                        "zoneInstanceId": "zone-cp-1"
                    },
                    {"id": "2", "globalInstanceId": "global-2"}
                ],
                "healthCheck": {"time": "2023-11-14T22:13:24Z"}
            })
        );
        // Kuma's JSON decodes back (numbers or strings for counters).
        let back: ZoneInsight = serde_json::from_value(wire).unwrap();
        assert_eq!(back, z);
        let kuma: ZoneInsight = serde_json::from_value(serde_json::json!({
            "subscriptions": [{"id": "1", "globalInstanceId": "g", "status": {"total": {"responsesSent": 22}}, "generation": 3}],
            "kdsStreams": {"globalToZone": {"globalInstanceId": "g", "connectTime": "2023-11-14T22:13:20Z"}}
        }))
        .unwrap();
        assert_eq!(kuma.sum(|s| s.total().responses_sent), 22);
        assert_eq!(kuma.subscriptions[0].generation, 3);
        assert_eq!(
            kuma.kds_streams
                .unwrap()
                .global_to_zone
                .unwrap()
                .global_instance_id,
            "g"
        );
    }
}
