//! The `Mesh` resource: the tenancy boundary.
//!
//! mTLS backends are typed (the CA runtime reads them); the other sections (`logging`,
//! `tracing`, `metrics`, `constraints`, `routing`, `networking`, `meshServices`) are stored as
//! the JSON they were given, so what is read back is what was written, and [`Mesh::validate`]
//! reads them through private typed views that mirror Kuma's protobuf messages.
//!
//! Validation follows Kuma 2.14's Mesh validator (same field paths and messages, Kuma's odd
//! ones included: `mtls.dpcert.rotation.expiration`, `logging.backends[i].config`), in Kuma's
//! order (mtls, logging, tracing, metrics, constraints, routing), reporting every problem.
//! Unknown fields are ignored, as Kuma's decoder does; `null` reads as the zero value.
//!
//! Kuma's manager-level checks (CA plugin of each backend, 63-character name on create,
//! CA change on update) need the store or the CA plugins and live in the control plane; the
//! pure pieces they use are here ([`CA_BACKEND_TYPES`], [`builtin_backend_problems`],
//! [`provided_conf_problems`], [`Mesh::ca_change_problem`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::validate::{ValidationError, Violation, Violations};

/// Mesh spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mesh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub skip_creating_initial_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_services: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Value>,
}

/// `mtls` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub enabled_backend: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub skip_validation: bool,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub backends: Vec<CaBackend>,
}

/// One CA backend (`builtin` or `provided`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaBackend {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        rename = "type",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_cert: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_chain: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
}

impl CaBackend {
    /// Names of the Secrets of `mesh` this backend uses (Kuma's `UsedSecrets`): a builtin
    /// backend's root certificate and key, a provided backend's `secret` data sources.
    pub fn used_secrets(&self, mesh: &str) -> Vec<String> {
        match self.backend_type.as_str() {
            "builtin" => vec![
                format!("{mesh}.ca-builtin-cert-{}", self.name),
                format!("{mesh}.ca-builtin-key-{}", self.name),
            ],
            "provided" => typed::<view::ProvidedConf>(self.conf.as_ref())
                .map(|c| {
                    [c.cert, c.key]
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.secret.filter(|s| !s.is_empty()))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// CA backend types the control plane has a plugin for (Kuma OSS: `builtin`, `provided`).
pub const CA_BACKEND_TYPES: [&str; 2] = ["builtin", "provided"];

/// How many mTLS backends a Mesh may list: Kuma's `AllowedMTLSBackends`, 1 unless the
/// control plane raised it at start ([`set_allowed_mtls_backends`]).
static ALLOWED_MTLS_BACKENDS: AtomicUsize = AtomicUsize::new(1);

/// The number of mTLS backends a Mesh may list (Kuma: 1).
pub fn allowed_mtls_backends() -> usize {
    ALLOWED_MTLS_BACKENDS.load(Ordering::Relaxed)
}

/// Raises (or restores) the number of mTLS backends a Mesh may list, process-wide, like
/// Kuma's `AllowedMTLSBackends` variable. Set once at start, before any validation. Above 1,
/// Kuma's CA-change rule ([`Mesh::ca_change_problem`]) is lifted too: listing several
/// backends only makes sense to switch between them.
pub fn set_allowed_mtls_backends(n: usize) {
    ALLOWED_MTLS_BACKENDS.store(n.max(1), Ordering::Relaxed);
}

impl Mesh {
    /// Field paths of the data sources that would make the control plane read a file of its
    /// own host (`{file: <path>}` anywhere in a backend's `conf`), such as
    /// `mtls.backends[0].conf.cert.file`.
    pub fn host_file_sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        let backends = self.mtls.iter().flat_map(|m| m.backends.iter());
        for (i, backend) in backends.enumerate() {
            if let Some(conf) = &backend.conf {
                collect_file_sources(conf, &format!("mtls.backends[{i}].conf"), &mut out);
            }
        }
        out
    }

    /// The enabled mTLS backend, when mTLS is on.
    pub fn enabled_backend(&self) -> Option<&CaBackend> {
        let mtls = self.mtls.as_ref()?;
        if mtls.enabled_backend.is_empty() {
            return None;
        }
        mtls.backends
            .iter()
            .find(|b| b.name == mtls.enabled_backend)
    }

    /// `networking.outbound.passthrough` (default true): transparent proxies forward
    /// traffic to destinations outside the mesh.
    pub fn outbound_passthrough(&self) -> bool {
        self.networking
            .as_ref()
            .and_then(|n| n.pointer("/outbound/passthrough"))
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// Whether mTLS is on (`mtls.enabledBackend` set), as Kuma's `MTLSEnabled`.
    pub fn mtls_enabled(&self) -> bool {
        self.mtls
            .as_ref()
            .is_some_and(|m| !m.enabled_backend.is_empty())
    }

    /// Kuma's update rule: with mTLS on before and after, `enabledBackend` cannot change
    /// (lifted when more than one backend is allowed, see [`set_allowed_mtls_backends`]).
    pub fn ca_change_problem(&self, previous: &Mesh) -> Option<Violation> {
        let changed = previous.mtls_enabled()
            && self.mtls_enabled()
            && previous.mtls.as_ref().map(|m| &m.enabled_backend)
                != self.mtls.as_ref().map(|m| &m.enabled_backend);
        (changed && allowed_mtls_backends() <= 1).then(|| Violation {
            field: "mtls.enabledBackend".into(),
            message: "Changing CA when mTLS is enabled is forbidden. Disable mTLS first and then change the CA".into(),
        })
    }

    /// Warnings for a Mesh named `display_name` (Kuma's deprecations): a name that is not an
    /// RFC 1035 label.
    pub fn warnings(&self, display_name: &str) -> Vec<String> {
        name_deprecation("Mesh", display_name).into_iter().collect()
    }

    /// Kuma's Mesh defaults (its manager applies them on create and update, so they are
    /// stored): each `prometheus` metrics backend gets `port: 5670`, `path: /metrics`, tags
    /// `kuma.io/service: dataplane-metrics` and a `tls` mode from `skipMTLS` (`{}`, i.e.
    /// `activeMTLSBackend`, unless `skipMTLS: true` → `disabled`); with `tls.mode:
    /// providedTLS`, `skipMTLS` is dropped. A conf that does not decode is left for
    /// validation to report.
    pub fn apply_defaults(&mut self) {
        let Some(Value::Object(metrics)) = &mut self.metrics else {
            return;
        };
        let Some(Value::Array(backends)) = metrics.get_mut("backends") else {
            return;
        };
        for backend in backends.iter_mut().filter_map(Value::as_object_mut) {
            if backend.get("type").and_then(Value::as_str) != Some("prometheus") {
                continue;
            }
            let conf = backend
                .entry("conf")
                .or_insert_with(|| Value::Object(Map::new()));
            if conf.is_null() {
                *conf = Value::Object(Map::new());
            }
            let Ok(typed_conf) = typed::<view::Prometheus>(Some(&*conf)) else {
                continue;
            };
            let Value::Object(conf) = conf else {
                continue;
            };
            match (typed_conf.skip_mtls, &typed_conf.tls) {
                (None | Some(false), None) => {
                    conf.insert("tls".into(), Value::Object(Map::new()));
                }
                (Some(true), None) => {
                    conf.insert("tls".into(), serde_json::json!({"mode": "disabled"}));
                }
                (Some(_), Some(tls)) if tls.mode == view::TlsMode::ProvidedTLS => {
                    conf.remove("skipMTLS");
                }
                _ => {}
            }
            if typed_conf.port == 0 {
                conf.insert("port".into(), Value::from(5670));
            }
            if typed_conf.path.is_empty() {
                conf.insert("path".into(), Value::from("/metrics"));
            }
            if typed_conf.tags.is_empty() {
                conf.insert(
                    "tags".into(),
                    serde_json::json!({"kuma.io/service": "dataplane-metrics"}),
                );
            }
        }
    }

    /// Paths of the fields Kuma's decoder does not know (and ignores) inside the sections
    /// kept as JSON (`logging.backends[0].nmae`, `mtls.backends[0].dpCert.rotaion`), for the
    /// PUT response's warnings. Backend `conf` objects are free-form (protobuf `Struct`) and
    /// not looked into; fields of the typed parts (top level, `mtls`, its backends) are not
    /// listed here.
    pub fn unknown_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        let sections = [
            ("logging", &self.logging, &shape::LOGGING),
            ("tracing", &self.tracing, &shape::TRACING),
            ("metrics", &self.metrics, &shape::METRICS),
            ("constraints", &self.constraints, &shape::CONSTRAINTS),
            ("routing", &self.routing, &shape::ROUTING),
            ("networking", &self.networking, &shape::NETWORKING),
            ("meshServices", &self.mesh_services, &shape::MESH_SERVICES),
        ];
        for (path, v, s) in sections {
            if let Some(v) = v {
                shape::unknown(v, s, path, &mut out);
            }
        }
        let backends = self.mtls.iter().flat_map(|m| m.backends.iter());
        for (i, b) in backends.enumerate() {
            let p = format!("mtls.backends[{i}]");
            if let Some(v) = &b.dp_cert {
                shape::unknown(v, &shape::DP_CERT, &format!("{p}.dpCert"), &mut out);
            }
            if let Some(v) = &b.root_chain {
                shape::unknown(v, &shape::ROOT_CHAIN, &format!("{p}.rootChain"), &mut out);
            }
        }
        out
    }

    /// Drops what [`Mesh::unknown_fields`] names, as Kuma does by decoding into protobuf: an
    /// unknown field is not stored.
    pub fn drop_unknown_fields(&mut self) {
        let sections = [
            (&mut self.logging, &shape::LOGGING),
            (&mut self.tracing, &shape::TRACING),
            (&mut self.metrics, &shape::METRICS),
            (&mut self.constraints, &shape::CONSTRAINTS),
            (&mut self.routing, &shape::ROUTING),
            (&mut self.networking, &shape::NETWORKING),
            (&mut self.mesh_services, &shape::MESH_SERVICES),
        ];
        for (v, s) in sections {
            if let Some(v) = v {
                shape::drop_unknown(v, s);
            }
        }
        for b in self.mtls.iter_mut().flat_map(|m| m.backends.iter_mut()) {
            if let Some(v) = &mut b.dp_cert {
                shape::drop_unknown(v, &shape::DP_CERT);
            }
            if let Some(v) = &mut b.root_chain {
                shape::drop_unknown(v, &shape::ROOT_CHAIN);
            }
        }
    }

    /// Kuma's `Mesh.Validate()`: every problem of the spec, in Kuma's order.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        // Kuma decodes the whole document before validating it: a field of the wrong type
        // (or an unknown enum value) is all that is reported.
        let logging = view::<view::Logging>(&self.logging, "logging", &mut errs);
        let tracing = view::<view::Tracing>(&self.tracing, "tracing", &mut errs);
        let metrics = view::<view::Metrics>(&self.metrics, "metrics", &mut errs);
        let constraints = view::<view::Constraints>(&self.constraints, "constraints", &mut errs);
        let routing = view::<view::Routing>(&self.routing, "routing", &mut errs);
        view::<view::Networking>(&self.networking, "networking", &mut errs);
        view::<view::MeshServices>(&self.mesh_services, "meshServices", &mut errs);
        let dp_certs: Vec<Option<view::DpCert>> = self
            .mtls
            .iter()
            .flat_map(|m| m.backends.iter().enumerate())
            .map(|(i, b)| {
                let p = format!("mtls.backends[{i}]");
                if let Some(mode) = &b.mode
                    && !matches!(mode.as_str(), "STRICT" | "PERMISSIVE")
                {
                    errs.add(
                        format!("{p}.mode"),
                        unknown_enum(mode, "kuma.mesh.v1alpha1.CertificateAuthorityBackend.Mode"),
                    );
                }
                if let Some(conf) = &b.conf
                    && !conf.is_object()
                    && !conf.is_null()
                {
                    errs.add(format!("{p}.conf"), "must be an object");
                }
                view::<view::RootChain>(&b.root_chain, &format!("{p}.rootChain"), &mut errs);
                view::<view::DpCert>(&b.dp_cert, &format!("{p}.dpCert"), &mut errs)
            })
            .collect();
        if !errs.is_empty() {
            return errs.into_result();
        }
        if let Some(mtls) = &self.mtls {
            validate_mtls(mtls, &dp_certs, &mut errs);
        }
        if let Some(logging) = logging {
            validate_logging(&logging, &mut errs);
        }
        if let Some(tracing) = tracing {
            validate_tracing(&tracing, &mut errs);
        }
        if let Some(metrics) = metrics {
            validate_metrics(&metrics, &mut errs);
        }
        if let Some(dpp) = constraints.and_then(|c| c.dataplane_proxy) {
            for (i, r) in dpp.requirements.iter().enumerate() {
                selector_problems(
                    &r.tags,
                    &format!("constraints.dataplaneProxy.requirements[{i}].tags"),
                    &mut errs,
                );
            }
            for (i, r) in dpp.restrictions.iter().enumerate() {
                selector_problems(
                    &r.tags,
                    &format!("constraints.dataplaneProxy.restrictions[{i}].tags"),
                    &mut errs,
                );
            }
        }
        if routing.is_some_and(|r| r.zone_egress) && !self.mtls_enabled() {
            errs.add("mtls", "has to be set when zoneEgress enabled");
        }
        errs.into_result()
    }
}

/// Kuma's deprecation warning for a Mesh or Zone (`type_name`) whose name is not an RFC 1035
/// label (Kubernetes `NameIsDNS1035Label`: at most 63 characters, `[a-z]([-a-z0-9]*[a-z0-9])?`).
/// Such names (`aa.a`, `1mesh`) are still accepted.
pub fn name_deprecation(type_name: &str, name: &str) -> Option<String> {
    let mut errs = Vec::new();
    if name.len() > 63 {
        errs.push("must be no more than 63 characters");
    }
    if !is_dns1035_label(name) {
        errs.push(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        );
    }
    (!errs.is_empty()).then(|| {
        format!(
            "Invalid {type_name} resource name: '{name}'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: {}",
            errs.join("; ")
        )
    })
}

/// The pattern `[a-z]([-a-z0-9]*[a-z0-9])?` (no length limit: that is a separate error).
fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Kuma's builtin CA plugin check of backend `backend` in mesh `mesh` (paths relative to
/// the backend's `conf`, as Kuma re-roots them, including its doubled
/// `mtls.backends.name`).
pub fn builtin_backend_problems(mesh: &str, backend: &CaBackend) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(e) = typed::<view::BuiltinConf>(backend.conf.as_ref()) {
        out.push(Violation {
            field: String::new(),
            message: format!("could not convert backend config: {e}"),
        });
    }
    // The name of the Secret holding the root certificate.
    let secret = format!("{mesh}.ca-builtin-cert-{}", backend.name);
    if secret.len() > 255 {
        out.push(Violation {
            field: "mtls.backends.name".into(),
            message: "Backend name is too long. Max length: 255".into(),
        });
    }
    if !is_lower_dns_name(&secret) {
        out.push(Violation {
            field: "mtls.backends.name".into(),
            message: format!("{:?} name must be valid dns name", backend.name),
        });
    }
    out
}

/// The static part of Kuma's provided CA plugin check (paths relative to the backend's
/// `conf`): `cert` and `key` must be data sources with one source chosen. When this returns
/// nothing, the control plane loads the pair and checks the certificates.
pub fn provided_conf_problems(backend: &CaBackend) -> Vec<Violation> {
    let mut out = Vec::new();
    let conf = match typed::<view::ProvidedConf>(backend.conf.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            out.push(Violation {
                field: String::new(),
                message: format!("could not convert backend config: {e}"),
            });
            return out;
        }
    };
    for (field, source) in [("cert", conf.cert), ("key", conf.key)] {
        let Some(source) = source else {
            out.push(Violation {
                field: field.into(),
                message: "has to be defined".into(),
            });
            continue;
        };
        match source.chosen() {
            None => out.push(Violation {
                field: field.into(),
                message: "data source has to be chosen. Available sources: secret, file, inline"
                    .into(),
            }),
            Some((kind, value)) if value.is_empty() && kind != "inlineString" => {
                out.push(Violation {
                    field: format!("{field}.{kind}"),
                    message: "cannot be empty".into(),
                })
            }
            Some(_) => {}
        }
    }
    out
}

/// govalidator's `IsDNSName` and all lower case, as Kuma checks builtin secret names.
fn is_lower_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 || s.to_lowercase() != s {
        return false;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    // `^([a-zA-Z0-9_]{1}[a-zA-Z0-9_-]{0,62}){1}(\.[a-zA-Z0-9_]{1}[a-zA-Z0-9_-]{0,62})*[\._]?$`
    let s = s.strip_suffix('_').unwrap_or(s);
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        })
}

fn validate_mtls(mtls: &Mtls, dp_certs: &[Option<view::DpCert>], errs: &mut Violations) {
    let allowed = allowed_mtls_backends();
    if mtls.backends.len() > allowed {
        errs.add(
            "mtls.backends",
            format!("cannot have more than {allowed} backends"),
        );
    }
    let mut used = std::collections::HashSet::new();
    for (i, b) in mtls.backends.iter().enumerate() {
        if !used.insert(b.name.as_str()) {
            errs.add(
                format!("mtls.backends[{i}].name"),
                format!("{:?} name is already used for another backend", b.name),
            );
        }
        if let Some(Some(dp_cert)) = dp_certs.get(i) {
            let expiration = dp_cert
                .rotation
                .as_ref()
                .map_or("", |r| r.expiration.as_str());
            if parse_kuma_duration(expiration).is_none() {
                // Kuma's path: lower-case `dpcert`, no backend index.
                errs.add(
                    "mtls.dpcert.rotation.expiration",
                    "has to be a valid format",
                );
            }
        }
    }
    if !mtls.enabled_backend.is_empty() && !used.contains(mtls.enabled_backend.as_str()) {
        errs.add(
            "mtls.enabledBackend",
            "has to be set to one of the backends in the mesh",
        );
    }
}

fn validate_logging(logging: &view::Logging, errs: &mut Violations) {
    let mut used = std::collections::HashSet::new();
    for (i, b) in logging.backends.iter().enumerate() {
        let p = format!("logging.backends[{i}]");
        if b.name.is_empty() {
            errs.add(format!("{p}.name"), "cannot be empty");
        }
        match b.backend_type.as_str() {
            "file" => match typed::<view::FileLogging>(b.conf.as_ref()) {
                Err(e) => errs.add(
                    format!("{p}.config"),
                    format!("could not parse config: {e}"),
                ),
                Ok(c) if c.path.is_empty() => {
                    errs.add(format!("{p}.config.path"), "cannot be empty")
                }
                Ok(_) => {}
            },
            "tcp" => match typed::<view::TcpLogging>(b.conf.as_ref()) {
                Err(e) => errs.add(
                    format!("{p}.config"),
                    format!("could not parse config: {e}"),
                ),
                Ok(c) if c.address.is_empty() => {
                    errs.add(format!("{p}.config.address"), "cannot be empty")
                }
                Ok(c) => {
                    if !split_host_port(&c.address)
                        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
                    {
                        errs.add(
                            format!("{p}.config.address"),
                            "has to be in format of HOST:PORT",
                        );
                    }
                }
            },
            _ => errs.add(
                format!("{p}.type"),
                "unknown backend type. Available backends: \"tcp\", \"file\"",
            ),
        }
        if !used.insert(b.name.as_str()) {
            errs.add(
                format!("{p}.name"),
                format!("{:?} name is already used for another backend", b.name),
            );
        }
    }
    if !logging.default_backend.is_empty() && !used.contains(logging.default_backend.as_str()) {
        errs.add(
            "logging.defaultBackend",
            "has to be set to one of the logging backend in mesh",
        );
    }
}

fn validate_tracing(tracing: &view::Tracing, errs: &mut Violations) {
    let mut used = std::collections::HashSet::new();
    for (i, b) in tracing.backends.iter().enumerate() {
        let p = format!("tracing.backends[{i}]");
        if b.name.is_empty() {
            errs.add(format!("{p}.name"), "cannot be empty");
        }
        let sampling = b.sampling.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&sampling) {
            errs.add(format!("{p}.sampling"), "has to be in [0.0 - 100.0] range");
        }
        match b.backend_type.as_str() {
            "zipkin" => match typed::<view::Zipkin>(b.conf.as_ref()) {
                Err(e) => errs.add(
                    format!("{p}.config"),
                    format!("could not parse config: {e}"),
                ),
                Ok(c) => zipkin_problems(&c, &format!("{p}.config"), errs),
            },
            "datadog" => match typed::<view::Datadog>(b.conf.as_ref()) {
                Err(e) => errs.add(
                    format!("{p}.config"),
                    format!("could not parse config: {e}"),
                ),
                Ok(c) => {
                    if c.address.is_empty() {
                        errs.add(format!("{p}.config.address"), "cannot be empty");
                    }
                    if c.port == 0 || c.port > 65535 {
                        errs.add(
                            format!("{p}.config.port"),
                            "port must be in the range [1, 65535]",
                        );
                    }
                }
            },
            _ => errs.add(
                format!("{p}.type"),
                "unknown backend type. Available backends: \"zipkin\", \"datadog\"",
            ),
        }
        if !used.insert(b.name.as_str()) {
            errs.add(
                format!("{p}.name"),
                format!("{:?} name is already used for another backend", b.name),
            );
        }
    }
    if !tracing.default_backend.is_empty() && !used.contains(tracing.default_backend.as_str()) {
        errs.add(
            "tracing.defaultBackend",
            "has to be set to one of the tracing backend in mesh",
        );
    }
}

fn zipkin_problems(c: &view::Zipkin, p: &str, errs: &mut Violations) {
    if !c.api_version.is_empty()
        && !matches!(
            c.api_version.as_str(),
            "httpJsonV1" | "httpJson" | "httpProto"
        )
    {
        errs.add(
            format!("{p}.apiVersion"),
            "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto",
        );
    }
    if c.url.is_empty() {
        errs.add(format!("{p}.url"), "cannot be empty");
        return;
    }
    match request_uri_port(&c.url) {
        None => errs.add(format!("{p}.url"), "invalid URL"),
        Some(port) if port.is_empty() => {
            errs.add(format!("{p}.url"), "port has to be explicitly specified")
        }
        Some(_) => {}
    }
}

fn validate_metrics(metrics: &view::Metrics, errs: &mut Violations) {
    let mut used = std::collections::HashSet::new();
    for (i, b) in metrics.backends.iter().enumerate() {
        let p = format!("metrics.backends[{i}]");
        if used.contains(b.name.as_str()) {
            errs.add(
                format!("{p}.name"),
                format!("{:?} name is already used for another backend", b.name),
            );
        }
        if b.backend_type == "prometheus" {
            prometheus_conf_problems(b.conf.as_ref(), &format!("{p}.conf"), errs);
        } else {
            errs.add(
                format!("{p}.type"),
                "unknown backend type. Available backends: \"prometheus\"",
            );
        }
        used.insert(b.name.as_str());
    }
    if !metrics.enabled_backend.is_empty() && !used.contains(metrics.enabled_backend.as_str()) {
        errs.add(
            "metrics.enabledBackend",
            "has to be set to one of the backends in the mesh",
        );
    }
}

/// Kuma's Prometheus backend configuration rules (shared with a Dataplane's `metrics.conf`),
/// under `p`.
pub fn prometheus_conf_problems(conf: Option<&Map<String, Value>>, p: &str, errs: &mut Violations) {
    let c = match typed::<view::Prometheus>(conf) {
        Ok(c) => c,
        Err(e) => {
            errs.add(p, format!("could not parse config: {e}"));
            return;
        }
    };
    if let (Some(skip), Some(tls)) = (c.skip_mtls, &c.tls) {
        let equivalent = (!skip && tls.mode == view::TlsMode::ActiveMTLSBackend)
            || (skip && tls.mode == view::TlsMode::Disabled);
        if !equivalent {
            errs.add(
                p,
                "skipMTLS and tls configuration cannot be defined together",
            );
            return;
        }
    }
    if let Some(re) = c.envoy.as_ref().map(|e| e.filter_regex.as_str())
        && let Err(e) = regex_syntax::Parser::new().parse(re)
    {
        let kind = match &e {
            regex_syntax::Error::Parse(e) => e.kind().to_string(),
            regex_syntax::Error::Translate(e) => e.kind().to_string(),
            other => other.to_string(),
        };
        errs.add(
            format!("{p}.envoy.filterRegex"),
            format!("provided regexp isn't correct: error parsing regexp: {kind}: `{re}`"),
        );
        return;
    }
    let mut used = std::collections::HashSet::new();
    for (k, a) in c.aggregate.iter().enumerate() {
        if !used.insert(a.name.as_str()) {
            errs.add(
                format!("{p}.aggregate[{k}].name"),
                format!("duplicate entry: {}, values have to be unique", a.name),
            );
        }
    }
}

/// Kuma's selector rules for `tags` at `p` (keys in sorted order; at least one tag).
fn selector_problems(tags: &BTreeMap<String, Option<String>>, p: &str, errs: &mut Violations) {
    if tags.is_empty() {
        errs.add(p, "must have at least one tag");
    }
    let key_ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/'))
    };
    for (k, v) in tags {
        let kp = format!("{p}[{k:?}]");
        if k.is_empty() {
            errs.add(p, "tag name must be non-empty");
        }
        if !key_ok(k) {
            errs.add(
                &kp,
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        let v = v.as_deref().unwrap_or("");
        if v.is_empty() {
            errs.add(&kp, "tag value must be non-empty");
        }
        if !(key_ok(v) || v == "*") {
            errs.add(
                &kp,
                "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
            );
        }
    }
}

/// Kuma's duration syntax (`dpCert.rotation.expiration`, builtin `caCert.expiration`): `0`,
/// or exactly one integer and one unit of `y w d h m s ms`.
pub fn parse_kuma_duration(s: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    if split == 0 {
        return None;
    }
    let n: u64 = s[..split].parse().ok()?;
    let ms: u64 = match &s[split..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

/// Go's `net.SplitHostPort`: `(host, port)`, or `None` where Go returns an error.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let i = s.rfind(':')?;
    let (host, after_host) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')? + 1;
        // After `]` must come the last colon.
        if end + 1 != i {
            return None;
        }
        (&s[1..end], end + 1)
    } else {
        let host = &s[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0)
    };
    let first_bracket_ok = !s[if after_host == 0 { 0 } else { 1 }..].contains('[');
    if !first_bracket_ok || s[after_host..].contains(']') {
        return None;
    }
    Some((host, &s[i + 1..]))
}

/// Go's `url.ParseRequestURI(s)` then `.Port()`: the port (maybe empty), or `None` where Go
/// fails to parse.
fn request_uri_port(s: &str) -> Option<String> {
    if s.is_empty() || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    // Scheme: a letter, then letters, digits, `+ - .`, up to the first `:`.
    let mut scheme_end = None;
    for (i, c) in s.bytes().enumerate() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.') {
            if i == 0 {
                break;
            }
            continue;
        }
        if c == b':' {
            if i == 0 {
                return None; // missing protocol scheme
            }
            scheme_end = Some(i);
        }
        break;
    }
    let rest = match scheme_end {
        None => {
            // No scheme: only an absolute path is a request URI; it has no host.
            return s.starts_with('/').then(String::new);
        }
        Some(i) => &s[i + 1..],
    };
    let rest = rest.split_once('?').map_or(rest, |(a, _)| a);
    let Some(after) = rest.strip_prefix("//") else {
        // Opaque (`mailto:x`) or a path: no host, no port.
        return Some(String::new());
    };
    let authority = after.find('/').map_or(after, |i| &after[..i]);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (hostname, port) = if let Some(inner) = host.strip_prefix('[') {
        let end = inner.find(']')?;
        let tail = &inner[end + 1..];
        match tail.strip_prefix(':') {
            Some(p) => (&inner[..end], p),
            None if tail.is_empty() => (&inner[..end], ""),
            None => return None,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (host, ""),
        }
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None; // invalid port
    }
    let host_char_ok =
        |c: u8| c >= 0x80 || c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"%".contains(&c);
    if !hostname.bytes().all(host_char_ok) {
        return None; // invalid character in host name
    }
    Some(port.to_string())
}

/// Decodes an optional section into its view; a decode problem becomes a violation at
/// `section.<path>` and the section is skipped.
fn view<T: DeserializeOwned>(v: &Option<Value>, section: &str, errs: &mut Violations) -> Option<T> {
    let v = v.as_ref().filter(|v| !v.is_null())?;
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                section.to_string()
            } else {
                format!("{section}.{path}")
            };
            errs.add(field, e.inner().to_string());
            None
        }
    }
}

/// Kuma's `ToTyped` of a backend `conf` (a protobuf `Struct`): absent is the zero value,
/// unknown fields are ignored.
fn typed<T: DeserializeOwned + Default>(
    conf: Option<&(impl Serialize + ?Sized)>,
) -> Result<T, String> {
    let Some(conf) = conf else {
        return Ok(T::default());
    };
    let v = serde_json::to_value(conf).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// jsonpb's message for a string that names no value of an enum.
pub(crate) fn unknown_enum(value: &str, enum_name: &str) -> String {
    format!(
        "unknown value {:?} for enum {enum_name}",
        format!("{value:?}")
    )
}

/// `null` reads as the zero value (protobuf JSON).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn collect_file_sources(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (k, v) in fields {
                let path = format!("{path}.{k}");
                if k == "file" && v.is_string() {
                    out.push(path);
                } else {
                    collect_file_sources(v, &path, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_file_sources(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The field names of the sections kept as JSON (Kuma's protobuf messages), to name the
/// unknown ones.
mod shape {
    use serde_json::Value;

    /// What a JSON value may hold.
    pub enum Shape {
        /// A scalar, a map of scalars or a free-form object: nothing to look into.
        Leaf,
        /// A list of one shape.
        List(&'static Shape),
        /// An object with these fields.
        Obj(&'static [(&'static str, Shape)]),
    }

    use Shape::{Leaf, List, Obj};

    const BACKEND: Shape = Obj(&[("name", Leaf), ("type", Leaf), ("conf", Leaf)]);
    pub const LOGGING: Shape = Obj(&[
        ("defaultBackend", Leaf),
        (
            "backends",
            List(&Obj(&[
                ("name", Leaf),
                ("format", Leaf),
                ("type", Leaf),
                ("conf", Leaf),
            ])),
        ),
    ]);
    pub const TRACING: Shape = Obj(&[
        ("defaultBackend", Leaf),
        (
            "backends",
            List(&Obj(&[
                ("name", Leaf),
                ("sampling", Leaf),
                ("type", Leaf),
                ("conf", Leaf),
            ])),
        ),
    ]);
    pub const METRICS: Shape = Obj(&[("enabledBackend", Leaf), ("backends", List(&BACKEND))]);
    const RULES: Shape = List(&Obj(&[("tags", Leaf)]));
    pub const CONSTRAINTS: Shape = Obj(&[(
        "dataplaneProxy",
        Obj(&[("requirements", RULES), ("restrictions", RULES)]),
    )]);
    pub const ROUTING: Shape = Obj(&[
        ("localityAwareLoadBalancing", Leaf),
        ("zoneEgress", Leaf),
        ("defaultForbidMeshExternalServiceAccess", Leaf),
    ]);
    pub const NETWORKING: Shape = Obj(&[("outbound", Obj(&[("passthrough", Leaf)]))]);
    pub const MESH_SERVICES: Shape = Obj(&[("mode", Leaf)]);
    pub const DP_CERT: Shape = Obj(&[
        ("rotation", Obj(&[("expiration", Leaf)])),
        ("requestTimeout", Leaf),
    ]);
    pub const ROOT_CHAIN: Shape = Obj(&[("requestTimeout", Leaf)]);

    /// Removes every field of `v` that `shape` does not have.
    pub fn drop_unknown(v: &mut Value, shape: &Shape) {
        match (shape, v) {
            (Obj(fields), Value::Object(m)) => {
                m.retain(|k, v| match fields.iter().find(|(name, _)| name == k) {
                    Some((_, s)) => {
                        drop_unknown(v, s);
                        true
                    }
                    None => false,
                });
            }
            (List(s), Value::Array(items)) => {
                for v in items {
                    drop_unknown(v, s);
                }
            }
            _ => {}
        }
    }

    /// Pushes the path of every field of `v` (at `path`) that `shape` does not have.
    pub fn unknown(v: &Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
        match (shape, v) {
            (Obj(fields), Value::Object(m)) => {
                for (k, v) in m {
                    let p = format!("{path}.{k}");
                    match fields.iter().find(|(name, _)| name == k) {
                        Some((_, s)) => unknown(v, s, &p, out),
                        None => out.push(p),
                    }
                }
            }
            (List(s), Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    unknown(v, s, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
}

/// Typed views of the sections kept as JSON, mirroring Kuma's protobuf messages: field
/// names as in Kuma's protobuf (camelCase there), unknown fields ignored,
/// `null` as the zero value.
pub(crate) mod view {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};
    use serde_json::{Map, Value};

    use super::null_default as nd;

    /// A protobuf `uint32` as Go's decoder reads it: a JSON number or a quoted one, `null`
    /// as 0.
    pub fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Null => return Ok(0),
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.parse::<u64>().ok(),
            _ => None,
        };
        n.and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("invalid value for uint32: {v}")))
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Logging {
        #[serde(default, deserialize_with = "nd")]
        pub default_backend: String,
        #[serde(default, deserialize_with = "nd")]
        pub backends: Vec<LoggingBackend>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct LoggingBackend {
        #[serde(default, deserialize_with = "nd")]
        pub name: String,
        #[serde(default, deserialize_with = "nd")]
        #[allow(dead_code)] // decoded for its type; Kuma does not validate it
        pub format: String,
        #[serde(rename = "type", default, deserialize_with = "nd")]
        pub backend_type: String,
        #[serde(default)]
        pub conf: Option<Map<String, Value>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct FileLogging {
        #[serde(default, deserialize_with = "nd")]
        pub path: String,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct TcpLogging {
        #[serde(default, deserialize_with = "nd")]
        pub address: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Tracing {
        #[serde(default, deserialize_with = "nd")]
        pub default_backend: String,
        #[serde(default, deserialize_with = "nd")]
        pub backends: Vec<TracingBackend>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct TracingBackend {
        #[serde(default, deserialize_with = "nd")]
        pub name: String,
        #[serde(default)]
        pub sampling: Option<f64>,
        #[serde(rename = "type", default, deserialize_with = "nd")]
        pub backend_type: String,
        #[serde(default)]
        pub conf: Option<Map<String, Value>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Zipkin {
        #[serde(default, deserialize_with = "nd")]
        pub url: String,
        #[serde(default, deserialize_with = "nd")]
        #[allow(dead_code)] // decoded for its type only
        pub trace_id128bit: bool,
        #[serde(default, deserialize_with = "nd")]
        pub api_version: String,
        #[serde(default)]
        #[allow(dead_code)] // decoded for its type only
        pub shared_span_context: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Datadog {
        #[serde(default, deserialize_with = "nd")]
        pub address: String,
        #[serde(default, deserialize_with = "uint32")]
        pub port: u32,
        #[serde(default, deserialize_with = "nd")]
        #[allow(dead_code)] // decoded for its type only
        pub split_service: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Metrics {
        #[serde(default, deserialize_with = "nd")]
        pub enabled_backend: String,
        #[serde(default, deserialize_with = "nd")]
        pub backends: Vec<MetricsBackend>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct MetricsBackend {
        #[serde(default, deserialize_with = "nd")]
        pub name: String,
        #[serde(rename = "type", default, deserialize_with = "nd")]
        pub backend_type: String,
        #[serde(default)]
        pub conf: Option<Map<String, Value>>,
    }

    // The Prometheus backend `conf` is typed once, in `crate::metrics`.
    pub use crate::metrics::{PrometheusConf as Prometheus, TlsMode};

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Constraints {
        #[serde(default)]
        pub dataplane_proxy: Option<DppConstraints>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct DppConstraints {
        #[serde(default, deserialize_with = "nd")]
        pub requirements: Vec<Rules>,
        #[serde(default, deserialize_with = "nd")]
        pub restrictions: Vec<Rules>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Rules {
        #[serde(default, deserialize_with = "nd")]
        pub tags: BTreeMap<String, Option<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)] // only zoneEgress is validated
    pub struct Routing {
        #[serde(default, deserialize_with = "nd")]
        pub locality_aware_load_balancing: bool,
        #[serde(default, deserialize_with = "nd")]
        pub zone_egress: bool,
        #[serde(default, deserialize_with = "nd")]
        pub default_forbid_mesh_external_service_access: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[allow(dead_code)] // decoded for its type only
    pub struct Networking {
        #[serde(default)]
        pub outbound: Option<NetworkingOutbound>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[allow(dead_code)] // decoded for its type only
    pub struct NetworkingOutbound {
        #[serde(default)]
        pub passthrough: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[allow(dead_code)] // decoded for its type only
    pub struct MeshServices {
        #[serde(default)]
        pub mode: Option<MeshServicesMode>,
    }

    /// `Mesh.MeshServices.Mode`, by name or number.
    #[derive(Debug)]
    pub struct MeshServicesMode;

    impl<'de> Deserialize<'de> for MeshServicesMode {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = Value::deserialize(d)?;
            let ok = match &v {
                Value::String(s) => {
                    matches!(
                        s.as_str(),
                        "Disabled" | "Everywhere" | "ReachableBackends" | "Exclusive"
                    )
                }
                Value::Number(n) => n.as_u64().is_some_and(|n| n <= 3),
                Value::Null => true,
                _ => false,
            };
            if ok {
                return Ok(Self);
            }
            let name = "kuma.mesh.v1alpha1.Mesh.MeshServices.Mode";
            Err(serde::de::Error::custom(match v.as_str() {
                Some(s) => super::unknown_enum(s, name),
                None => format!("invalid value {v} for enum {name}"),
            }))
        }
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct DpCert {
        #[serde(default)]
        pub rotation: Option<Rotation>,
        #[serde(default)]
        #[serde(rename = "requestTimeout")]
        #[allow(dead_code)] // decoded for its syntax only
        pub request_timeout: Option<GoDuration>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Rotation {
        #[serde(default, deserialize_with = "nd")]
        pub expiration: String,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RootChain {
        #[serde(default)]
        #[serde(rename = "requestTimeout")]
        #[allow(dead_code)] // decoded for its syntax only
        pub request_timeout: Option<GoDuration>,
    }

    /// A `google.protobuf.Duration` as Kuma's decoder reads it: Go duration syntax.
    #[derive(Debug, Default)]
    pub struct GoDuration;

    impl<'de> Deserialize<'de> for GoDuration {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            crate::duration::parse(&s)
                .map(|_| GoDuration)
                .map_err(|e| serde::de::Error::custom(format!("bad Duration: {e}")))
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)] // decoded for its type only
    pub struct BuiltinConf {
        #[serde(default)]
        pub ca_cert: Option<CaCert>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[allow(dead_code)] // decoded for its type only
    pub struct CaCert {
        #[serde(default, deserialize_with = "uint32", rename = "RSAbits")]
        pub rsa_bits: u32,
        #[serde(default, deserialize_with = "nd")]
        pub expiration: String,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct ProvidedConf {
        #[serde(default)]
        pub cert: Option<DataSource>,
        #[serde(default)]
        pub key: Option<DataSource>,
    }

    /// A `DataSource` (a oneof): `secret`, `file`, `inline` (base64) or `inlineString`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DataSource {
        #[serde(default)]
        pub secret: Option<String>,
        #[serde(default)]
        pub file: Option<String>,
        #[serde(default)]
        pub inline: Option<String>,
        #[serde(default)]
        pub inline_string: Option<String>,
    }

    impl DataSource {
        /// The chosen source and its value (`null` chooses nothing).
        pub fn chosen(&self) -> Option<(&'static str, &str)> {
            [
                ("secret", &self.secret),
                ("file", &self.file),
                ("inline", &self.inline),
                ("inlineString", &self.inline_string),
            ]
            .into_iter()
            .find_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        }
    }
}

#[cfg(test)]
mod tests;
