//! Prometheus metrics of data plane proxies: the typed backend configuration (Kuma's
//! `PrometheusMetricsBackendConfig`), the configuration in effect for one Dataplane
//! ([`effective`]: the Mesh's enabled backend merged with the Dataplane's own `metrics`),
//! the metrics hijacker's socket path shared by kuma-cp and kuma-dp
//! ([`hijacker_socket_path`]), and what Prometheus discovers about a proxy ([`Target`]:
//! MADS assignments and HTTP service discovery build on it).
//!
//! Invariants:
//! - [`effective`] is `None` unless the Mesh's `metrics.enabledBackend` names a backend of
//!   type `prometheus`: a Dataplane's `metrics` alone enables nothing (as in Kuma).
//! - The merge follows protobuf's `proto.Merge` of Kuma's `GetPrometheusConfig`: the
//!   Dataplane's non-zero scalars win, maps merge key by key, wrapped booleans can be turned
//!   on but not off, an enum 0 (`activeMTLSBackend`) does not override, and `aggregate`
//!   entries are replaced by name.
//!
//! Main items: [`PrometheusConf`], [`effective`], [`Target`], [`hijacker_socket_path`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::resource::dataplane::{Dataplane, ZONE_TAG};
use crate::resource::mesh::Mesh;
use crate::resource::mesh::null_default as nd;
use crate::resource::mesh::view::uint32;

/// The only metrics backend type (`mesh_proto.MetricsPrometheusType`).
pub const PROMETHEUS: &str = "prometheus";
/// Port of the `kuma:metrics:prometheus` listener when the backend names none.
pub const DEFAULT_PORT: u32 = 5670;
/// Path Prometheus scrapes when the backend names none.
pub const DEFAULT_PATH: &str = "/metrics";

/// Kuma's `PrometheusMetricsBackendConfig` (a Mesh metrics backend's `conf`, a Dataplane's
/// `metrics.conf`): JSON keys as in Kuma, unknown keys ignored, `null` as the zero value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusConf {
    #[serde(default, deserialize_with = "uint32")]
    pub port: u32,
    #[serde(default, deserialize_with = "nd")]
    pub path: String,
    /// Kept for compatibility; Kuma 2.14 reads them nowhere.
    #[serde(default, deserialize_with = "nd")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, rename = "skipMTLS")]
    pub skip_mtls: Option<bool>,
    /// Application endpoints kuma-dp's hijacker merges into the proxy's metrics.
    #[serde(default, deserialize_with = "nd")]
    pub aggregate: Vec<Aggregate>,
    #[serde(default)]
    pub envoy: Option<EnvoyStats>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// One application metrics endpoint (`aggregate[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "uint32")]
    pub port: u32,
    #[serde(default, deserialize_with = "nd")]
    pub path: String,
    /// `None` reads as enabled.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Empty: the Dataplane's `networking.address`.
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
}

/// Which Envoy stats are exported (`envoy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyStats {
    #[serde(default, deserialize_with = "nd")]
    pub filter_regex: String,
    #[serde(default)]
    pub used_only: Option<bool>,
}

/// `tls`: how the Prometheus listener is secured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct Tls {
    #[serde(default, deserialize_with = "nd")]
    pub mode: TlsMode,
}

/// `PrometheusTlsConfig.Mode`, by name or number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Mesh mTLS (when the Mesh has it on): Prometheus presents a mesh identity.
    #[default]
    ActiveMTLSBackend,
    /// A certificate kuma-dp was given (`metricsCertPath` / `metricsKeyPath`).
    ProvidedTLS,
    /// Plaintext.
    Disabled,
}

impl<'de> Deserialize<'de> for TlsMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v
            .as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
        {
            Some(s) => match s.as_str() {
                "activeMTLSBackend" | "0" => Ok(Self::ActiveMTLSBackend),
                "providedTLS" | "1" => Ok(Self::ProvidedTLS),
                "disabled" | "2" => Ok(Self::Disabled),
                other => Err(serde::de::Error::custom(
                    crate::resource::mesh::unknown_enum(
                        other,
                        "kuma.mesh.v1alpha1.PrometheusTlsConfig.Mode",
                    ),
                )),
            },
            None => Err(serde::de::Error::custom(format!(
                "invalid value {v} for enum kuma.mesh.v1alpha1.PrometheusTlsConfig.Mode"
            ))),
        }
    }
}

impl PrometheusConf {
    /// Decodes a `conf` object (`None` or `null`: every field at its zero value).
    pub fn parse(conf: Option<&Value>) -> Result<Self, String> {
        match conf {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string()),
        }
    }

    /// The `tls.mode` in effect (`activeMTLSBackend` when `tls` is absent).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map(|t| t.mode).unwrap_or_default()
    }

    /// Kuma's `secureMetricsWithMeshMtls`: the listener requires a mesh identity when the
    /// Mesh has mTLS on and either `tls.mode` is `activeMTLSBackend`, or `tls` is absent and
    /// `skipMTLS` is not true.
    pub fn mesh_mtls(&self, mesh_mtls_on: bool) -> bool {
        mesh_mtls_on
            && match &self.tls {
                Some(t) => t.mode == TlsMode::ActiveMTLSBackend,
                None => self.skip_mtls != Some(true),
            }
    }

    /// The path the listener's route rewrites to (Kuma's `buildEnvoyMetricsFilter`): `/`
    /// plus `?filter=<regex>`, then `&` if anything so far, then `usedonly` — so a regex
    /// alone gives Kuma's `/?filter=<regex>&`.
    pub fn stats_path(&self) -> String {
        let mut query = String::new();
        if let Some(e) = &self.envoy {
            if !e.filter_regex.is_empty() {
                query.push_str("filter=");
                query.push_str(&e.filter_regex);
            }
            if !query.is_empty() {
                query.push('&');
            }
            if e.used_only == Some(true) {
                query.push_str("usedonly");
            }
        }
        if query.is_empty() {
            "/".into()
        } else {
            format!("/?{query}")
        }
    }

    /// The scheme Prometheus scrapes with: `https` only for `providedTLS` (mesh mTLS needs a
    /// mesh identity Prometheus does not have through service discovery).
    pub fn scheme(&self) -> &'static str {
        if self.tls_mode() == TlsMode::ProvidedTLS {
            "https"
        } else {
            "http"
        }
    }

    /// The `aggregate` entries kuma-dp scrapes (`enabled: false` left out), with their
    /// address defaulted to `address` (the Dataplane's `networking.address`).
    pub fn enabled_aggregates(&self, address: &str) -> Vec<Aggregate> {
        self.aggregate
            .iter()
            .filter(|a| a.enabled != Some(false))
            .map(|a| Aggregate {
                address: if a.address.is_empty() {
                    address.to_string()
                } else {
                    a.address.clone()
                },
                ..a.clone()
            })
            .collect()
    }

    /// `self` (the Mesh's) with `dp` (the Dataplane's) merged over it (see the module doc).
    fn merge(mut self, dp: PrometheusConf) -> Self {
        // `aggregate` first, by name: a Dataplane entry replaces the Mesh's entry entirely.
        // Kuma's order is a Go map's; here Mesh order, then the Dataplane's new names.
        let mut aggregate = std::mem::take(&mut self.aggregate);
        for a in dp.aggregate {
            match aggregate.iter_mut().find(|m| m.name == a.name) {
                Some(m) => *m = a,
                None => aggregate.push(a),
            }
        }
        self.aggregate = aggregate;
        if dp.port != 0 {
            self.port = dp.port;
        }
        if !dp.path.is_empty() {
            self.path = dp.path;
        }
        self.tags.extend(dp.tags);
        self.skip_mtls = merge_bool(self.skip_mtls, dp.skip_mtls);
        if let Some(e) = dp.envoy {
            let mut mine = self.envoy.take().unwrap_or_default();
            if !e.filter_regex.is_empty() {
                mine.filter_regex = e.filter_regex;
            }
            mine.used_only = merge_bool(mine.used_only, e.used_only);
            self.envoy = Some(mine);
        }
        if let Some(t) = dp.tls {
            let mut mine = self.tls.take().unwrap_or_default();
            if t.mode != TlsMode::ActiveMTLSBackend {
                mine.mode = t.mode;
            }
            self.tls = Some(mine);
        }
        self
    }
}

/// `proto.Merge` of a `BoolValue`: set when unset; once set, only `true` overrides.
fn merge_bool(mine: Option<bool>, theirs: Option<bool>) -> Option<bool> {
    match (mine, theirs) {
        (m, None) => m,
        (None, t) => t,
        (Some(m), Some(t)) => Some(m || t),
    }
}

/// The Mesh's enabled Prometheus backend configuration, if `metrics.enabledBackend` names a
/// backend of type `prometheus` (Kuma's `HasPrometheusMetricsEnabled`). `Err` when its
/// `conf` does not decode.
pub fn mesh_backend(mesh: &Mesh) -> Option<Result<PrometheusConf, String>> {
    let metrics = mesh.metrics.as_ref()?;
    let enabled = metrics.get("enabledBackend").and_then(Value::as_str)?;
    if enabled.is_empty() {
        return None;
    }
    let backend = metrics
        .get("backends")
        .and_then(Value::as_array)?
        .iter()
        .find(|b| b.get("name").and_then(Value::as_str) == Some(enabled))?;
    if backend.get("type").and_then(Value::as_str) != Some(PROMETHEUS) {
        return None;
    }
    Some(PrometheusConf::parse(backend.get("conf")))
}

/// The Prometheus configuration in effect for `dataplane` (see the module doc), from the
/// Mesh's enabled backend (`mesh_backend(mesh)`); `None` when metrics are off or a `conf`
/// does not decode (validation refuses those on write). A port or path left unset (a Mesh
/// stored without Kuma's defaults) reads as 5670 and `/metrics`.
pub fn effective_from(
    mesh_conf: Option<&PrometheusConf>,
    dataplane: &Dataplane,
) -> Option<PrometheusConf> {
    let mut conf = mesh_conf?.clone();
    if let Some(m) = &dataplane.metrics
        && m.backend_type == PROMETHEUS
    {
        conf = conf.merge(PrometheusConf::parse(m.conf.as_ref()).ok()?);
    }
    if conf.port == 0 {
        conf.port = DEFAULT_PORT;
    }
    if conf.path.is_empty() {
        conf.path = DEFAULT_PATH.into();
    }
    Some(conf)
}

/// [`effective_from`] with the Mesh's backend read from `mesh`.
pub fn effective(mesh: &Mesh, dataplane: &Dataplane) -> Option<PrometheusConf> {
    let base = mesh_backend(mesh)?.ok()?;
    effective_from(Some(&base), dataplane)
}

/// kuma-dp's metrics hijacker socket (Kuma's `MetricsHijackerSocketName`):
/// `<workdir>/kuma-mh-<name>-<mesh>` cut to 98 bytes, then `.sock` (UNIX socket paths are
/// short).
pub fn hijacker_socket_path(workdir: &str, name: &str, mesh: &str) -> String {
    let file = format!("kuma-mh-{name}-{mesh}");
    let dir = workdir.trim_end_matches('/');
    let mut path = if workdir.is_empty() {
        file
    } else if dir.is_empty() {
        format!("/{file}")
    } else {
        format!("{dir}/{file}")
    };
    let mut cut = path.len().min(98);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    path.truncate(cut);
    path.push_str(".sock");
    path
}

/// Prometheus' label name rule: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Kuma's `DataplaneLabels` (tags part): for every tag of the inbounds and gateway (keys
/// sorted, values sorted and de-duplicated), `<key>` = the first value and `<key>s` =
/// `,v1,v2,`, both sanitised; a user tag named like a plural overrides the generated one
/// (keys are visited in order).
pub fn dataplane_labels(dataplane: &Dataplane) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let gateway = dataplane.gateway().map(|g| &g.tags);
    for t in dataplane.inbounds().iter().map(|i| &i.tags).chain(gateway) {
        for (k, v) in t {
            tags.entry(k).or_default().insert(v);
        }
    }
    let mut labels = BTreeMap::new();
    for (key, values) in tags {
        let values: Vec<&str> = values.into_iter().collect();
        labels.insert(
            sanitize_label_name(key),
            values.first().copied().unwrap_or_default().to_string(),
        );
        labels.insert(
            sanitize_label_name(&format!("{key}s")),
            format!(",{},", values.join(",")),
        );
    }
    labels
}

/// What Prometheus is told about one proxy (one MADS assignment with its single target, one
/// HTTP SD target group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub mesh: String,
    /// The Dataplane's name.
    pub name: String,
    /// Kuma's `IdentifyingName`: the first `kuma.io/service` (sorted), else `unknown`.
    pub service: String,
    /// `http`, or `https` for `providedTLS`.
    pub scheme: String,
    /// `<advertisedAddress or address>:<port>`, IPv6 in brackets.
    pub address: String,
    pub metrics_path: String,
    /// [`dataplane_labels`].
    pub labels: BTreeMap<String, String>,
    /// The Dataplane's `kuma.io/zone` (tag, else label), else the `local_zone` given.
    pub zone: Option<String>,
}

impl Target {
    /// The target of `dataplane` (`mesh`/`name`, resource labels `meta_labels`) scraped
    /// with `conf` (its [`effective`] configuration). `local_zone`: the zone of this
    /// control plane, for Dataplanes that name none.
    pub fn new(
        mesh: &str,
        name: &str,
        meta_labels: &BTreeMap<String, String>,
        dataplane: &Dataplane,
        conf: &PrometheusConf,
        local_zone: &str,
    ) -> Self {
        let net = dataplane.networking();
        let ip = net
            .and_then(|n| n.advertised_address.as_deref())
            .filter(|a| !a.is_empty())
            .or(net.map(|n| n.address.as_str()))
            .unwrap_or_default();
        let address = if ip.contains(':') {
            format!("[{ip}]:{}", conf.port)
        } else {
            format!("{ip}:{}", conf.port)
        };
        let tagged_zone = dataplane
            .inbounds()
            .iter()
            .filter_map(|i| i.tags.get(ZONE_TAG))
            .chain(dataplane.gateway().and_then(|g| g.tags.get(ZONE_TAG)))
            .min()
            .or_else(|| meta_labels.get(ZONE_TAG))
            .filter(|z| !z.is_empty())
            .cloned();
        let zone = tagged_zone.or_else(|| (!local_zone.is_empty()).then(|| local_zone.to_string()));
        Self {
            mesh: mesh.to_string(),
            name: name.to_string(),
            service: dataplane.identifying_service(),
            scheme: conf.scheme().to_string(),
            address,
            metrics_path: conf.path.clone(),
            labels: dataplane_labels(dataplane),
            zone,
        }
    }

    /// Kuma's assignment name: `/meshes/<mesh>/dataplanes/<name>`.
    pub fn assignment_name(&self) -> String {
        format!("/meshes/{}/dataplanes/{}", self.mesh, self.name)
    }

    /// The Prometheus HTTP SD labels of the target group: `__meta_kuma_mesh`,
    /// `__meta_kuma_dataplane`, `__meta_kuma_service`, `__meta_kuma_zone` (when known),
    /// `__meta_kuma_label_<tag>` for every [`dataplane_labels`] entry, `__metrics_path__`,
    /// `__scheme__`.
    pub fn http_sd_labels(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.labels {
            out.insert(format!("__meta_kuma_label_{k}"), v.clone());
        }
        out.insert("__meta_kuma_mesh".into(), self.mesh.clone());
        out.insert("__meta_kuma_dataplane".into(), self.name.clone());
        out.insert("__meta_kuma_service".into(), self.service.clone());
        if let Some(z) = &self.zone {
            out.insert("__meta_kuma_zone".into(), z.clone());
        }
        out.insert("__metrics_path__".into(), self.metrics_path.clone());
        out.insert("__scheme__".into(), self.scheme.clone());
        out
    }
}

#[cfg(test)]
mod tests;
