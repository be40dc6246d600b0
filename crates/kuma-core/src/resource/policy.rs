//! New-style policies: `targetRef` and `MeshTrafficPermission` (stored and validated here;
//! turned into Envoy RBAC by the control plane).
//!
//! A MeshTrafficPermission document goes through three steps, as in Kuma 2.14
//! (`pkg/core/resources/model/rest/unmarshaller.go`, the policy's `rest.yaml` and
//! `validator.go`):
//! 1. [`check_document_schema`]: the OpenAPI schema of the document (types, enums, required
//!    fields; `spec` in full), with kube-openapi's messages (`spec.rules[0].default.allow[0].spiffeID.value in body is
//!    required`, `... in body should be one of [Exact Prefix]`, `... in body must be of type
//!    string: "number"`). Unknown fields pass (the schema never forbids them). If it reports
//!    anything, the next steps do not run.
//! 2. decoding into [`MeshTrafficPermission`] (unknown fields ignored);
//! 3. [`MeshTrafficPermission::validate`]: Kuma's Go validator, in its order and with its
//!    messages (paths relative to `spec`).
//!
//! [`MeshTrafficPermission::deprecations`] gives the warnings Kuma returns on a successful PUT.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{ValidationError, Violation, Violations};

/// Reference to what a policy selects (proxies, clients or destinations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_types: Option<Vec<String>>,
}

/// Kinds a MeshTrafficPermission's top-level `targetRef` may have.
const TOP_KINDS: [&str; 5] = [
    "Mesh",
    "MeshSubset",
    "MeshService",
    "MeshServiceSubset",
    "Dataplane",
];
/// Kinds a `from[].targetRef` may have.
const FROM_KINDS: [&str; 4] = ["Mesh", "MeshSubset", "MeshService", "MeshServiceSubset"];

impl TargetRef {
    /// Specificity rank of the kind (higher = more specific), as Kuma orders them.
    pub fn specificity(&self) -> u8 {
        match self.kind.as_str() {
            "Mesh" => 1,
            "Dataplane" => 2,
            "MeshSubset" => 3,
            "MeshGateway" => 4,
            "MeshService" => 5,
            "MeshExternalService" => 6,
            "MeshMultiZoneService" => 7,
            "MeshServiceSubset" => 8,
            "MeshHTTPRoute" => 9,
            _ => 0,
        }
    }

    /// Kuma's `ValidateTargetRef` (pkg/core/resources/apis/mesh/validators.go): paths are
    /// relative to `field` (the targetRef itself); a problem with the reference as a whole
    /// (MeshService without name or labels) is reported at `field`.
    fn validate(&self, field: &str, allowed: &[&str], inbound_policy: bool, errs: &mut Violations) {
        let at = |f: &str| format!("{field}.{f}");
        let kind = self.kind.as_str();
        if kind.is_empty() {
            errs.add(at("kind"), "must be defined");
            return;
        }
        if !allowed.contains(&kind) {
            errs.add(at("kind"), format!("value '{kind}' is not supported"));
            return;
        }
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let map_set =
            |v: &Option<BTreeMap<String, String>>| v.as_ref().is_some_and(|m| !m.is_empty());
        let list_set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|l| !l.is_empty());
        let disallow = |name: &str, is_set: bool, errs: &mut Violations| {
            if is_set {
                errs.add(at(name), format!("must not be set with kind {kind}"));
            }
        };
        match kind {
            "Mesh" => {
                if set(&self.name) {
                    errs.add(at("name"), "using name with kind Mesh is not yet supported");
                }
                disallow("mesh", set(&self.mesh), errs);
                disallow("tags", map_set(&self.tags), errs);
                disallow("labels", map_set(&self.labels), errs);
                disallow("namespace", set(&self.namespace), errs);
                disallow("sectionName", set(&self.section_name), errs);
                proxy_types(field, &self.proxy_types, errs);
            }
            "Dataplane" => {
                disallow("tags", map_set(&self.tags), errs);
                disallow("mesh", set(&self.mesh), errs);
                disallow("proxyTypes", list_set(&self.proxy_types), errs);
                if map_set(&self.labels) && (set(&self.name) || set(&self.namespace)) {
                    errs.add(
                        at("labels"),
                        "either labels or name and namespace must be specified",
                    );
                }
                if !inbound_policy && set(&self.section_name) {
                    errs.add(at("sectionName"), "can only be used with inbound policies");
                }
            }
            "MeshSubset" => {
                disallow("name", set(&self.name), errs);
                disallow("mesh", set(&self.mesh), errs);
                tags(field, self.tags.as_ref(), false, errs);
                disallow("labels", map_set(&self.labels), errs);
                disallow("namespace", set(&self.namespace), errs);
                disallow("sectionName", set(&self.section_name), errs);
                proxy_types(field, &self.proxy_types, errs);
            }
            "MeshService" => {
                service_name(field, self.name.as_deref().unwrap_or_default(), errs);
                disallow("mesh", set(&self.mesh), errs);
                disallow("tags", map_set(&self.tags), errs);
                disallow("proxyTypes", list_set(&self.proxy_types), errs);
                if !map_set(&self.labels) && !set(&self.name) {
                    errs.add(field, "name or labels must be set when kind is MeshService");
                }
                if map_set(&self.labels) && (set(&self.name) || set(&self.namespace)) {
                    errs.add(
                        at("labels"),
                        "either labels or name and namespace must be specified",
                    );
                }
            }
            "MeshServiceSubset" => {
                if !set(&self.name) {
                    errs.add(at("name"), "must be set when kind is MeshServiceSubset");
                }
                service_name(field, self.name.as_deref().unwrap_or_default(), errs);
                disallow("mesh", set(&self.mesh), errs);
                disallow("proxyTypes", list_set(&self.proxy_types), errs);
                tags(field, self.tags.as_ref(), true, errs);
                disallow("labels", map_set(&self.labels), errs);
                disallow("namespace", set(&self.namespace), errs);
                disallow("sectionName", set(&self.section_name), errs);
            }
            // Not reachable with the kinds MeshTrafficPermission allows.
            _ => {}
        }
    }
}

/// `proxyTypes: []` is refused (absent or at least one element).
fn proxy_types(field: &str, v: &Option<Vec<String>>, errs: &mut Violations) {
    if v.as_ref().is_some_and(Vec::is_empty) {
        errs.add(
            format!("{field}.proxyTypes"),
            "must be undefined or have at least one element",
        );
    }
}

/// Kuma's `NameCharacterSet`: `^[0-9a-z.\-_]*$` (the empty name passes).
fn service_name(field: &str, name: &str, errs: &mut Violations) {
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        errs.add(
            format!("{field}.name"),
            "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
        );
    }
}

/// Kuma's `ValidateTags` (MeshSubset) and `ValidateSelector` (MeshServiceSubset, `selector`):
/// keys in sorted order, each key and value checked; paths `tags["<key>"]`.
fn tags(
    field: &str,
    tags: Option<&BTreeMap<String, String>>,
    selector: bool,
    errs: &mut Violations,
) {
    let path = format!("{field}.tags");
    for (key, value) in tags.into_iter().flatten() {
        let at = format!("{path}[{}]", go_quote(key));
        if key.is_empty() {
            errs.add(&path, "tag name must be non-empty");
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/'))
        {
            errs.add(
                &at,
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        if value.is_empty() {
            errs.add(&at, "tag value must be non-empty");
        }
        if selector {
            let ok = value == "*"
                || value.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/')
                });
            if !ok {
                errs.add(
                    &at,
                    "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                );
            }
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            errs.add(
                &at,
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            );
        }
    }
}

/// Go's `%q` for the strings that reach it here (printable text): double quotes, with `"`
/// and `\` escaped, control characters as `\n`, `\t` or `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// MeshTrafficPermission spec (new-style: under `spec` on the wire). `from` (legacy,
/// deprecated) and `rules` are mutually exclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshTrafficPermission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<From>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

/// One `from[]` item: which clients, and what to do with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct From {
    #[serde(default)]
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: Conf,
}

/// The conf of a `from[]` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conf {
    /// `Allow`, `Deny` or `AllowWithShadowDeny`; empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
}

/// Actions a `from[]` item may take.
pub const ACTIONS: [&str; 3] = ["Allow", "Deny", "AllowWithShadowDeny"];

/// One `rules[]` item. MeshTrafficPermission rules have no `matches`: the lists inside
/// `default` are the matchers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub default: RuleConf,
}

/// Who is denied, allowed, or allowed while logged as denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<Match>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_with_shadow_deny: Option<Vec<Match>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Match>>,
}

impl RuleConf {
    /// The `deny` matches (empty when absent).
    pub fn deny(&self) -> &[Match] {
        self.deny.as_deref().unwrap_or_default()
    }
    /// The `allow` matches (empty when absent).
    pub fn allow(&self) -> &[Match] {
        self.allow.as_deref().unwrap_or_default()
    }
    /// The `allowWithShadowDeny` matches (empty when absent).
    pub fn allow_with_shadow_deny(&self) -> &[Match] {
        self.allow_with_shadow_deny.as_deref().unwrap_or_default()
    }
}

/// One client matcher: its SPIFFE ID (the client certificate's URI SANs), the SNI it sent,
/// or both (AND). Neither matches nothing and is skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Match {
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeIdMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniMatch>,
}

/// `spiffeID: {type: Exact|Prefix, value}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpiffeIdMatch {
    /// `Exact` or `Prefix` (the schema admits nothing else).
    #[serde(rename = "type", default)]
    pub match_type: String,
    #[serde(default)]
    pub value: String,
}

impl SpiffeIdMatch {
    /// Whether `value` is a prefix (`type: Prefix`) rather than the whole identity.
    pub fn is_prefix(&self) -> bool {
        self.match_type == "Prefix"
    }
}

/// `sni: {type: Exact, value}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SniMatch {
    /// `Exact` (the only type).
    #[serde(rename = "type", default)]
    pub match_type: String,
    #[serde(default)]
    pub value: String,
}

impl MeshTrafficPermission {
    /// Whether the policy uses the `rules` form (non-empty `rules`).
    pub fn has_rules(&self) -> bool {
        self.rules.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// Kuma's Go validator, in its order; paths relative to `spec` (the spec itself is `""`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let from = self.from.as_deref().unwrap_or_default();
        let rules = self.rules.as_deref().unwrap_or_default();
        if let Some(t) = &self.target_ref {
            let inbound_policy = !from.is_empty() || !rules.is_empty();
            t.validate("targetRef", &TOP_KINDS, inbound_policy, &mut errs);
        }
        if !from.is_empty() && !rules.is_empty() {
            errs.add("", "field 'from' must be empty when 'rules' is defined");
        }
        if from.is_empty() && rules.is_empty() {
            errs.add("", "at least one of 'from' or 'rules' has to be defined");
        }
        for (i, rule) in rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            let conf = &rule.default;
            if conf.deny().is_empty()
                && conf.allow().is_empty()
                && conf.allow_with_shadow_deny().is_empty()
            {
                errs.add(
                    &path,
                    "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                );
            }
            for (list, matches) in [
                ("allow", conf.allow()),
                ("allowWithShadowDeny", conf.allow_with_shadow_deny()),
                ("deny", conf.deny()),
            ] {
                for (j, m) in matches.iter().enumerate() {
                    m.validate(&format!("{path}.{list}[{j}]"), &mut errs);
                }
            }
        }
        for (i, f) in from.iter().enumerate() {
            let path = format!("from[{i}]");
            f.target_ref
                .validate(&format!("{path}.targetRef"), &FROM_KINDS, false, &mut errs);
            if f.default.action.is_empty() {
                errs.add(format!("{path}.default.action"), "must be defined");
            }
        }
        errs.into_result()
    }

    /// The warnings Kuma returns when this policy is stored (`deprecated.go`), in its order.
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let from = self.from.as_deref().unwrap_or_default();
        if !from.is_empty() {
            out.push(
                "'from' field is deprecated and will be removed in 3.0, use 'rules' with MeshIdentity (spiffeId) instead"
                    .to_string(),
            );
        }
        for f in from {
            if f.target_ref.kind == "MeshService" {
                out.push(
                    "MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead"
                        .to_string(),
                );
            }
        }
        if let Some(t) = &self.target_ref {
            match t.kind.as_str() {
                k @ ("MeshService" | "MeshServiceSubset" | "MeshSubset") => out.push(format!(
                    "{k} value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"
                )),
                "MeshHTTPRoute" => out.push(
                    "MeshHTTPRoute value for 'targetRef.kind' is deprecated, use MeshHTTPRoute in spec.to[].targetRef"
                        .to_string(),
                ),
                _ => {}
            }
        }
        out
    }
}

impl Match {
    /// Kuma's `ValidateMatch`, at `path` (`rules[i].<list>[j]`).
    fn validate(&self, path: &str, errs: &mut Violations) {
        if let Some(id) = &self.spiffe_id
            && let Err(e) = parse_spiffe_id(&id.value)
        {
            errs.add(
                format!("{path}.spiffeID"),
                format!("must be a valid Spiffe ID: {e}"),
            );
        }
        if let Some(sni) = &self.sni {
            match sni.match_type.as_str() {
                "Exact" => {}
                "" => errs.add(format!("{path}.sni.type"), "must be set"),
                t => errs.add(
                    format!("{path}.sni.type"),
                    format!(
                        "unrecognized type {}, supported values are: Exact",
                        go_quote(t)
                    ),
                ),
            }
            if sni.value.is_empty() {
                errs.add(format!("{path}.sni.value"), "must be set");
            } else {
                for problem in dns1123_subdomain_problems(&sni.value) {
                    errs.add(format!("{path}.sni.value"), problem);
                }
            }
        }
    }
}

/// Why `id` is not a SPIFFE ID, with go-spiffe's (`spiffeid.FromString`) reasons; the
/// trust domain is `[a-z0-9._-]+`, path segments `[a-zA-Z0-9._-]+`, no `.`/`..` segment, no
/// empty segment and no trailing slash.
pub fn parse_spiffe_id(id: &str) -> Result<(), &'static str> {
    const SCHEME: &str = "spiffe://";
    if id.is_empty() {
        return Err("cannot be empty");
    }
    let Some(rest) = id.strip_prefix(SCHEME) else {
        return Err("scheme is missing or invalid");
    };
    let td_len = rest.find('/').unwrap_or(rest.len());
    let (td, path) = rest.split_at(td_len);
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
        );
    }
    if td.is_empty() {
        return Err("trust domain is missing");
    }
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/'. Segments are checked as they end; the last one after the loop.
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if i == last {
            break;
        }
        if !seg.bytes().all(path_char) {
            return Err(
                "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
            );
        }
        match *seg {
            "" => return Err("path cannot contain empty segments"),
            "." | ".." => return Err("path cannot contain dot segments"),
            _ => {}
        }
    }
    let seg = segments[last];
    if !seg.bytes().all(path_char) {
        return Err(
            "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
        );
    }
    match seg {
        "" => Err("path cannot have a trailing slash"),
        "." | ".." => Err("path cannot contain dot segments"),
        _ => Ok(()),
    }
}

fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Kubernetes' `IsDNS1123Subdomain` messages for `value` (none when it is one).
pub fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if !value.split('.').all(label_ok) {
        out.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    out
}

/// The JSON schema of a MeshTrafficPermission `spec` (Kuma's `rest.yaml`), as much as
/// validation needs: types, enums, required properties, map value types.
enum Schema {
    /// A string, optionally one of a fixed set.
    Str(Option<&'static [&'static str]>),
    /// An array of items of one schema.
    List(&'static Schema),
    /// An object with known properties (sorted by name), required ones, and optionally a
    /// schema for every other property (maps).
    Obj {
        props: &'static [(&'static str, Schema)],
        required: &'static [&'static str],
        values: Option<&'static Schema>,
    },
}

const STR: Schema = Schema::Str(None);
const STR_MAP: Schema = Schema::Obj {
    props: &[],
    required: &[],
    values: Some(&STR),
};
const KINDS: &[&str] = &[
    "Mesh",
    "MeshSubset",
    "MeshGateway",
    "MeshService",
    "MeshExternalService",
    "MeshMultiZoneService",
    "MeshServiceSubset",
    "MeshHTTPRoute",
    "Dataplane",
];
const TARGET_REF: Schema = Schema::Obj {
    props: &[
        ("kind", Schema::Str(Some(KINDS))),
        ("labels", STR_MAP),
        ("mesh", STR),
        ("name", STR),
        ("namespace", STR),
        (
            "proxyTypes",
            Schema::List(&Schema::Str(Some(&["Sidecar", "Gateway"]))),
        ),
        ("sectionName", STR),
        ("tags", STR_MAP),
    ],
    required: &["kind"],
    values: None,
};
const MATCH: Schema = Schema::Obj {
    props: &[
        (
            "sni",
            Schema::Obj {
                props: &[("type", Schema::Str(Some(&["Exact"]))), ("value", STR)],
                required: &["type", "value"],
                values: None,
            },
        ),
        (
            "spiffeID",
            Schema::Obj {
                props: &[
                    ("type", Schema::Str(Some(&["Exact", "Prefix"]))),
                    ("value", STR),
                ],
                required: &["type", "value"],
                values: None,
            },
        ),
    ],
    required: &[],
    values: None,
};
const SPEC: Schema = Schema::Obj {
    props: &[
        (
            "from",
            Schema::List(&Schema::Obj {
                props: &[
                    (
                        "default",
                        Schema::Obj {
                            props: &[(
                                "action",
                                Schema::Str(Some(&["Allow", "Deny", "AllowWithShadowDeny"])),
                            )],
                            required: &[],
                            values: None,
                        },
                    ),
                    ("targetRef", TARGET_REF),
                ],
                required: &["targetRef"],
                values: None,
            }),
        ),
        (
            "rules",
            Schema::List(&Schema::Obj {
                props: &[(
                    "default",
                    Schema::Obj {
                        props: &[
                            ("allow", Schema::List(&MATCH)),
                            ("allowWithShadowDeny", Schema::List(&MATCH)),
                            ("deny", Schema::List(&MATCH)),
                        ],
                        required: &[],
                        values: None,
                    },
                )],
                required: &["default"],
                values: None,
            }),
        ),
        ("targetRef", TARGET_REF),
    ],
    required: &[],
    values: None,
};

/// The whole document (Kuma's `MeshTrafficPermissionItem`); `mesh` is defaulted before the
/// check (a missing or null `mesh` is mesh `default`), so it is only checked when set.
const DOCUMENT: Schema = Schema::Obj {
    props: &[
        ("creationTime", STR),
        ("kri", STR),
        ("labels", STR_MAP),
        ("mesh", STR),
        ("modificationTime", STR),
        ("name", STR),
        ("spec", SPEC),
        ("type", Schema::Str(Some(&["MeshTrafficPermission"]))),
    ],
    required: &["type", "name", "spec"],
    values: None,
};

/// Checks a whole MeshTrafficPermission document against Kuma's schema (kube-openapi with
/// the document at the root path `""`). Violations carry fields the way Kuma reports
/// schema errors: the message is split at its first space; when the first word starts with
/// `spec.` it is the field and the rest the message (`spec.targetRef.kind`: `in body should
/// be one of [Mesh ...]`), otherwise the field is empty and the message whole (`type in body
/// should be one of [MeshTrafficPermission]`, `spec in body must be of type object:
/// "string"`, and a missing root property `.name in body is required`, with the dot
/// kube-openapi puts after the empty root path). Properties are visited in name order,
/// required ones after them (Kuma's order is Go map order, i.e. random).
pub fn check_document_schema(doc: &serde_json::Map<String, Value>) -> Result<(), ValidationError> {
    let mut doc = doc.clone();
    if doc.get("mesh").is_some_and(Value::is_null) {
        doc.remove("mesh");
    }
    check_at(&DOCUMENT, "", &Value::Object(doc))
}

/// [`check_document_schema`] for a `spec` alone (`None` = absent).
pub fn check_schema(spec: Option<&Value>) -> Result<(), ValidationError> {
    let mut doc = serde_json::Map::new();
    doc.insert("type".into(), Value::String("MeshTrafficPermission".into()));
    doc.insert("name".into(), Value::String("x".into()));
    if let Some(spec) = spec {
        doc.insert("spec".into(), spec.clone());
    }
    check_document_schema(&doc)
}

fn check_at(schema: &Schema, root: &str, v: &Value) -> Result<(), ValidationError> {
    let mut raw = Vec::new();
    check(schema, root, v, &mut raw);
    let violations: Vec<Violation> = raw
        .into_iter()
        .map(|e| match e.split_once(' ') {
            Some((first, rest)) if first.starts_with("spec.") => Violation {
                field: first.to_string(),
                message: rest.to_string(),
            },
            _ => Violation {
                field: String::new(),
                message: e,
            },
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { violations })
    }
}

/// The JSON type name kube-openapi reports for a decoded value (numbers are always
/// `number`: Go decodes them as float64).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `parent.child` in kube-openapi's way: a property of the root is just its name.
fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn check(schema: &Schema, path: &str, v: &Value, out: &mut Vec<String>) {
    let (want, values) = match schema {
        Schema::Str(values) => ("string", *values),
        Schema::List(_) => ("array", None),
        Schema::Obj { .. } => ("object", None),
    };
    let found = json_type(v);
    if found != want {
        out.push(format!(
            "{path} in body must be of type {want}: \"{found}\""
        ));
    }
    if let Some(values) = values
        && v.as_str().is_none_or(|s| !values.contains(&s))
    {
        out.push(format!(
            "{path} in body should be one of [{}]",
            values.join(" ")
        ));
    }
    match (schema, v) {
        (Schema::List(item), Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                check(item, &format!("{path}[{i}]"), it, out);
            }
        }
        (
            Schema::Obj {
                props,
                required,
                values,
            },
            Value::Object(obj),
        ) => {
            if let Some(vs) = values {
                for (k, val) in obj {
                    if !props.iter().any(|(p, _)| p == k) {
                        check(vs, &child(path, k), val, out);
                    }
                }
            }
            for (name, prop) in props.iter() {
                if let Some(val) = obj.get(*name) {
                    check(prop, &child(path, name), val, out);
                }
            }
            for name in required.iter() {
                if !obj.contains_key(*name) {
                    out.push(format!("{path}.{name} in body is required"));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, ResourceType, Spec};
    use serde_json::json;

    /// The spec in YAML, decoded and checked by the Go validator alone (as Kuma's
    /// `validator_test.go` does); violations with their `spec` paths.
    fn go_validator(yaml: &str) -> Vec<(String, String)> {
        let docs = Resource::parse_documents(yaml).unwrap();
        let m: MeshTrafficPermission = serde_json::from_value(docs[0].clone()).unwrap();
        let mut v = Violations::new();
        if let Err(e) = m.validate() {
            v.extend("spec", e);
        }
        v.into_result()
            .err()
            .map(|e| {
                e.violations
                    .into_iter()
                    .map(|v| (v.field, v.message))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A whole document (`spec` from the YAML) through [`Resource::from_wire`], as the REST
    /// API and kumactl take it: schema, decoding, validator.
    fn from_wire(spec_yaml: &str) -> Result<Resource, Vec<(String, String)>> {
        let spec = Resource::parse_documents(spec_yaml).unwrap().remove(0);
        let doc = json!({"type": "MeshTrafficPermission", "name": "mtp-1", "spec": spec});
        Resource::from_wire(doc, None).map_err(|e| {
            e.violations
                .into_iter()
                .map(|v| (v.field, v.message))
                .collect()
        })
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect()
    }

    const RFC1123: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    /// Kuma's `validator_test.go` "should pass validation" entries: accepted by the
    /// validator and through the whole decoding.
    #[test]
    fn kuma_accepted_table() {
        let accepted = [
            // allow or deny all possible kinds of clients
            "targetRef: {kind: Mesh}\nfrom:\n- targetRef: {kind: Mesh}\n  default: {action: Allow}\n- targetRef: {kind: MeshSubset, tags: {kuma.io/zone: us-east, env: dev}}\n  default: {action: Deny}\n- targetRef: {kind: MeshService, name: backend}\n  default: {action: Allow}\n- targetRef: {kind: MeshServiceSubset, name: backend, tags: {version: v1}}\n  default: {action: Deny}\n",
            // MeshSubset / MeshService / MeshServiceSubset at the top level
            "targetRef: {kind: MeshSubset, tags: {env: prod}}\nfrom:\n- targetRef: {kind: Mesh}\n  default: {action: Deny}\n",
            "targetRef: {kind: MeshService, name: backend}\nfrom:\n- targetRef: {kind: Mesh}\n  default: {action: Deny}\n",
            "targetRef: {kind: MeshServiceSubset, name: backend, tags: {version: v2}}\nfrom:\n- targetRef: {kind: Mesh}\n  default: {action: Deny}\n",
            // full rules example
            "targetRef: {kind: Mesh}\nrules:\n- default:\n    deny:\n    - spiffeID: {type: Exact, value: spiffe://trust.domain/service}\n    allow:\n    - spiffeID: {type: Prefix, value: spiffe://trust.domain}\n    allowWithShadowDeny:\n    - spiffeID: {type: Exact, value: spiffe://trust.domain/service-2}\n",
            // sni-only allow
            "targetRef: {kind: Dataplane, sectionName: ze-port}\nrules:\n- default:\n    allow:\n    - sni: {type: Exact, value: sni.extsvc.default.zone-1.aws-aurora.8443}\n",
            // spiffeID and sni combined in the same match
            "targetRef: {kind: Dataplane, sectionName: ze-port}\nrules:\n- default:\n    allow:\n    - spiffeID: {type: Exact, value: spiffe://default/ns/backend-ns/sa/backend}\n      sni: {type: Exact, value: sni.extsvc.default.zone-1.aws-aurora.8443}\n",
        ];
        for yaml in accepted {
            assert_eq!(go_validator(yaml), vec![], "{yaml}");
            let r = from_wire(yaml).unwrap_or_else(|e| panic!("{yaml}: {e:?}"));
            assert_eq!(
                r.meta.mesh, "default",
                "a policy without mesh is in mesh default"
            );
        }
    }

    /// Kuma's `validator_test.go` rejection entries: exact fields and messages, in order.
    #[test]
    fn kuma_rejected_table() {
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "targetRef: {kind: MeshService, name: backend}\nfrom: []\n",
                vec![(
                    "spec",
                    "at least one of 'from' or 'rules' has to be defined",
                )],
            ),
            (
                "targetRef: {kind: MeshService, name: backend}\nrules: []\n",
                vec![(
                    "spec",
                    "at least one of 'from' or 'rules' has to be defined",
                )],
            ),
            (
                "targetRef: {kind: Dataplane, sectionName: test}\nto: []\n",
                vec![
                    (
                        "spec.targetRef.sectionName",
                        "can only be used with inbound policies",
                    ),
                    (
                        "spec",
                        "at least one of 'from' or 'rules' has to be defined",
                    ),
                ],
            ),
            (
                "targetRef: {kind: MeshService, name: backend}\nfrom:\n- targetRef: {kind: MeshGatewayRoute, name: mgr-1}\n  default: {action: Allow}\n",
                vec![(
                    "spec.from[0].targetRef.kind",
                    "value 'MeshGatewayRoute' is not supported",
                )],
            ),
            (
                "targetRef: {kind: Mesh}\nfrom:\n- targetRef: {kind: Mesh}\n",
                vec![("spec.from[0].default.action", "must be defined")],
            ),
            (
                "targetRef: {kind: Mesh}\nrules:\n- default:\n    deny: []\n",
                vec![(
                    "spec.rules[0]",
                    "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                )],
            ),
            (
                "targetRef: {kind: Dataplane, sectionName: ze-port}\nrules:\n- default:\n    allow:\n    - sni: {type: Exact, value: \"\"}\n    deny:\n    - sni: {type: Exact}\n    allowWithShadowDeny:\n    - sni: {type: Exact, value: not_valid}\n",
                vec![
                    ("spec.rules[0].allow[0].sni.value", "must be set"),
                    ("spec.rules[0].allowWithShadowDeny[0].sni.value", RFC1123),
                    ("spec.rules[0].deny[0].sni.value", "must be set"),
                ],
            ),
            (
                "targetRef: {kind: Mesh}\nrules:\n- default:\n    deny:\n    - spiffeID: {type: Exact, value: some-service}\n    allow:\n    - spiffeID: {type: Prefix, value: wrong}\n    allowWithShadowDeny:\n    - spiffeID: {type: Exact, value: test}\n",
                vec![
                    (
                        "spec.rules[0].allow[0].spiffeID",
                        "must be a valid Spiffe ID: scheme is missing or invalid",
                    ),
                    (
                        "spec.rules[0].allowWithShadowDeny[0].spiffeID",
                        "must be a valid Spiffe ID: scheme is missing or invalid",
                    ),
                    (
                        "spec.rules[0].deny[0].spiffeID",
                        "must be a valid Spiffe ID: scheme is missing or invalid",
                    ),
                ],
            ),
        ];
        for (i, (yaml, want)) in cases.iter().enumerate() {
            assert_eq!(go_validator(yaml), pairs(want), "case {i}: {yaml}");
            // Through the whole decoding the same, except the sni without a value, which
            // the schema refuses first (on its own path, `default` included).
            let got = from_wire(yaml).unwrap_err();
            if i == 3 {
                // MeshGatewayRoute is not even in the schema's enum of kinds.
                assert_eq!(got.len(), 1, "{got:?}");
                assert_eq!(got[0].0, "spec.from[0].targetRef.kind");
                assert!(
                    got[0].1.starts_with("in body should be one of [Mesh "),
                    "{got:?}"
                );
            } else if i == 6 {
                assert_eq!(
                    got,
                    pairs(&[(
                        "spec.rules[0].default.deny[0].sni.value",
                        "in body is required"
                    )]),
                    "{yaml}"
                );
            } else {
                assert_eq!(got, pairs(want), "case {i} through from_wire: {yaml}");
            }
        }
    }

    #[test]
    fn from_and_rules_together() {
        let yaml = "rules:\n- default:\n    allow:\n    - spiffeID: {type: Prefix, value: spiffe://default}\nfrom:\n- targetRef: {kind: Mesh}\n  default: {action: Allow}\n";
        assert_eq!(
            from_wire(yaml).unwrap_err(),
            pairs(&[("spec", "field 'from' must be empty when 'rules' is defined")])
        );
    }

    #[test]
    fn schema_errors_use_kube_openapi_messages() {
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                json!({"targetRef": {"kind": "Mesh", "name": 5}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
                vec![(
                    "spec.targetRef.name",
                    "in body must be of type string: \"number\"",
                )],
            ),
            (
                json!({"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Maybe"}}]}),
                vec![(
                    "spec.from[0].default.action",
                    "in body should be one of [Allow Deny AllowWithShadowDeny]",
                )],
            ),
            (
                json!({"targetRef": {"kind": "Bogus"}, "rules": [{"default": {"allow": [{"spiffeID": {"type": "Suffix", "value": "spiffe://a"}}]}}]}),
                vec![
                    (
                        "spec.rules[0].default.allow[0].spiffeID.type",
                        "in body should be one of [Exact Prefix]",
                    ),
                    (
                        "spec.targetRef.kind",
                        "in body should be one of [Mesh MeshSubset MeshGateway MeshService MeshExternalService MeshMultiZoneService MeshServiceSubset MeshHTTPRoute Dataplane]",
                    ),
                ],
            ),
            (
                json!({"rules": [{"default": {"deny": [{"spiffeID": {"value": "spiffe://a"}, "sni": {"type": "Exact", "value": true}}]}}, {}]}),
                vec![
                    (
                        "spec.rules[0].default.deny[0].sni.value",
                        "in body must be of type string: \"boolean\"",
                    ),
                    (
                        "spec.rules[0].default.deny[0].spiffeID.type",
                        "in body is required",
                    ),
                    ("spec.rules[1].default", "in body is required"),
                ],
            ),
            (
                json!({"from": [{"default": {"action": "Allow"}}], "targetRef": {"kind": null, "tags": {"version": 1}}}),
                vec![
                    ("spec.from[0].targetRef", "in body is required"),
                    (
                        "spec.targetRef.kind",
                        "in body must be of type string: \"null\"",
                    ),
                    (
                        "spec.targetRef.kind",
                        "in body should be one of [Mesh MeshSubset MeshGateway MeshService MeshExternalService MeshMultiZoneService MeshServiceSubset MeshHTTPRoute Dataplane]",
                    ),
                    (
                        "spec.targetRef.tags.version",
                        "in body must be of type string: \"number\"",
                    ),
                ],
            ),
            (
                json!({"rules": {"default": {}}}),
                vec![("spec.rules", "in body must be of type array: \"object\"")],
            ),
            (
                json!("nope"),
                vec![("", "spec in body must be of type object: \"string\"")],
            ),
        ];
        for (spec, want) in cases {
            let got = check_schema(Some(&spec))
                .err()
                .map(|e| {
                    e.violations
                        .into_iter()
                        .map(|v| (v.field, v.message))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            assert_eq!(got, pairs(&want), "{spec}");
            // The document is refused with exactly these, the validator not run.
            let doc = json!({"type": "MeshTrafficPermission", "name": "x", "spec": spec});
            let err = Resource::from_wire(doc, None).unwrap_err();
            let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
            let want_fields: Vec<_> = want.iter().map(|(f, _)| *f).collect();
            assert_eq!(fields, want_fields);
        }
        let missing = json!({"type": "MeshTrafficPermission", "name": "x"});
        let err = Resource::from_wire(missing, None).unwrap_err();
        assert_eq!(err.violations[0].field, "");
        assert_eq!(err.violations[0].message, ".spec in body is required");
        // Unknown fields pass the schema and are ignored by the decoding.
        let r = from_wire("rules:\n- default:\n    allow:\n    - spiffeID: {type: Prefix, value: spiffe://default, extra: 1}\n  extra: {}\nbogus: true\n").unwrap();
        let Spec::MeshTrafficPermission(m) = r.spec else {
            panic!("not an MTP")
        };
        assert_eq!(
            m.rules.unwrap()[0].default.allow()[0]
                .spiffe_id
                .as_ref()
                .unwrap()
                .value,
            "spiffe://default"
        );
    }

    #[test]
    fn document_schema_at_the_root() {
        let spec = json!({"rules": [{"default": {"allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default"}}]}}]});
        let errors = |doc: Value, expected: Option<ResourceType>| -> Vec<(String, String)> {
            Resource::from_wire(doc, expected)
                .err()
                .map(|e| {
                    e.violations
                        .into_iter()
                        .map(|v| (v.field, v.message))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The request's type decides the schema: another type in the body is not in its enum.
        assert_eq!(
            errors(
                json!({"type": "Dataplane", "name": "x", "spec": spec}),
                Some(ResourceType::MeshTrafficPermission)
            ),
            pairs(&[("", "type in body should be one of [MeshTrafficPermission]")])
        );
        assert_eq!(
            errors(json!({"type": "MeshTrafficPermission", "spec": spec}), None),
            pairs(&[("", ".name in body is required")])
        );
        assert_eq!(
            errors(
                json!({"name": 7, "labels": {"team": 1}, "mesh": false}),
                Some(ResourceType::MeshTrafficPermission)
            ),
            pairs(&[
                ("", "labels.team in body must be of type string: \"number\""),
                ("", "mesh in body must be of type string: \"boolean\""),
                ("", "name in body must be of type string: \"number\""),
                ("", ".type in body is required"),
                ("", ".spec in body is required"),
            ])
        );
        // A null mesh is defaulted like a missing one; server-managed fields are accepted.
        let r = Resource::from_wire(
            json!({"type": "MeshTrafficPermission", "name": "x", "mesh": null, "spec": spec,
                   "creationTime": "0001-01-01T00:00:00Z", "kri": "kri_mtp_default_z__x_"}),
            None,
        )
        .unwrap();
        assert_eq!(r.meta.mesh, "default");
    }

    #[test]
    fn spiffe_ids_as_go_spiffe_parses_them() {
        for ok in [
            "spiffe://default",
            "spiffe://default/backend",
            "spiffe://trust.domain/ns/x/sa/y",
            "spiffe://a_b-c.d/Path.With-Caps_1",
        ] {
            assert_eq!(parse_spiffe_id(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "cannot be empty"),
            ("default/backend", "scheme is missing or invalid"),
            ("SPIFFE://default", "scheme is missing or invalid"),
            ("spiffe://", "trust domain is missing"),
            ("spiffe:///backend", "trust domain is missing"),
            (
                "spiffe://Default/x",
                "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
            ),
            ("spiffe://default/", "path cannot have a trailing slash"),
            (
                "spiffe://default/a//b",
                "path cannot contain empty segments",
            ),
            (
                "spiffe://default/a/../b",
                "path cannot contain dot segments",
            ),
            ("spiffe://default/a/.", "path cannot contain dot segments"),
            (
                "spiffe://default/a b",
                "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
            ),
        ] {
            assert_eq!(parse_spiffe_id(bad), Err(why), "{bad:?}");
        }
        // Through validation, a Prefix is checked as a whole identity too.
        assert_eq!(
            from_wire("rules:\n- default:\n    allow:\n    - spiffeID: {type: Prefix, value: \"spiffe://default/\"}\n").unwrap_err(),
            pairs(&[(
                "spec.rules[0].allow[0].spiffeID",
                "must be a valid Spiffe ID: path cannot have a trailing slash"
            )])
        );
    }

    #[test]
    fn sni_rules() {
        assert_eq!(
            dns1123_subdomain_problems("backend.default.svc"),
            Vec::<String>::new()
        );
        assert_eq!(
            dns1123_subdomain_problems("Backend"),
            vec![RFC1123.to_string()]
        );
        assert_eq!(
            dns1123_subdomain_problems("a..b"),
            vec![RFC1123.to_string()]
        );
        let long = "a".repeat(254);
        assert_eq!(
            dns1123_subdomain_problems(&long),
            vec!["must be no more than 253 characters".to_string()]
        );
        // The type is checked by the validator when it gets there (the schema admits only
        // Exact, so this is the validator alone).
        assert_eq!(
            go_validator(
                "rules:\n- default:\n    allow:\n    - sni: {type: Prefix, value: a.b}\n    - sni: {value: a.b}\n"
            ),
            pairs(&[
                (
                    "spec.rules[0].allow[0].sni.type",
                    "unrecognized type \"Prefix\", supported values are: Exact"
                ),
                ("spec.rules[0].allow[1].sni.type", "must be set"),
            ])
        );
    }

    #[test]
    fn target_ref_messages() {
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "targetRef: {kind: Mesh, name: x, mesh: m, proxyTypes: []}\n",
                vec![
                    (
                        "spec.targetRef.name",
                        "using name with kind Mesh is not yet supported",
                    ),
                    ("spec.targetRef.mesh", "must not be set with kind Mesh"),
                    (
                        "spec.targetRef.proxyTypes",
                        "must be undefined or have at least one element",
                    ),
                ],
            ),
            (
                "targetRef: {kind: MeshService}\n",
                vec![(
                    "spec.targetRef",
                    "name or labels must be set when kind is MeshService",
                )],
            ),
            (
                "targetRef: {kind: MeshService, name: Web}\n",
                vec![(
                    "spec.targetRef.name",
                    "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
                )],
            ),
            (
                "targetRef: {kind: MeshServiceSubset, tags: {version: \"a b\"}}\n",
                vec![
                    (
                        "spec.targetRef.name",
                        "must be set when kind is MeshServiceSubset",
                    ),
                    (
                        "spec.targetRef.tags[\"version\"]",
                        "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                    ),
                ],
            ),
            (
                "targetRef: {kind: MeshSubset, tags: {team: \"\"}}\n",
                vec![(
                    "spec.targetRef.tags[\"team\"]",
                    "tag value must be non-empty",
                )],
            ),
            (
                "targetRef: {kind: Dataplane, name: a, labels: {x: z}, mesh: m}\n",
                vec![
                    ("spec.targetRef.mesh", "must not be set with kind Dataplane"),
                    (
                        "spec.targetRef.labels",
                        "either labels or name and namespace must be specified",
                    ),
                ],
            ),
            (
                "targetRef: {kind: MeshGateway, name: gw}\n",
                vec![(
                    "spec.targetRef.kind",
                    "value 'MeshGateway' is not supported",
                )],
            ),
        ];
        for (top, want) in cases {
            let yaml =
                format!("{top}from:\n- targetRef: {{kind: Mesh}}\n  default: {{action: Allow}}\n");
            assert_eq!(from_wire(&yaml).unwrap_err(), pairs(&want), "{yaml}");
        }
    }

    #[test]
    fn deprecation_warnings_in_kumas_order() {
        let r = from_wire("targetRef: {kind: MeshService, name: web}\nfrom:\n- targetRef: {kind: MeshService, name: a}\n  default: {action: Allow}\n- targetRef: {kind: Mesh}\n  default: {action: Deny}\n- targetRef: {kind: MeshService, name: b}\n  default: {action: Deny}\n").unwrap();
        assert_eq!(
            r.spec.deprecations(),
            vec![
                "'from' field is deprecated and will be removed in 3.0, use 'rules' with MeshIdentity (spiffeId) instead",
                "MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead",
                "MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead",
                "MeshService value for 'targetRef.kind' is deprecated, use Dataplane with labels instead",
            ]
        );
        let r = from_wire("targetRef: {kind: Mesh}\nrules:\n- default:\n    deny:\n    - spiffeID: {type: Prefix, value: spiffe://default/client}\n").unwrap();
        assert_eq!(r.spec.deprecations(), Vec::<String>::new());
        let r = from_wire("targetRef: {kind: MeshSubset, tags: {a: b}}\nrules:\n- default:\n    deny:\n    - spiffeID: {type: Prefix, value: spiffe://default/client}\n").unwrap();
        assert_eq!(
            r.spec.deprecations(),
            vec![
                "MeshSubset value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"
            ]
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let r = from_wire("rules:\n- default:\n    allowWithShadowDeny:\n    - spiffeID: {type: Exact, value: spiffe://default/a}\n      sni: {type: Exact, value: a.b}\n").unwrap();
        let wire = r.to_wire();
        assert_eq!(wire["mesh"], "default");
        assert_eq!(
            wire["spec"],
            json!({"rules": [{"default": {"allowWithShadowDeny": [
                {"spiffeID": {"type": "Exact", "value": "spiffe://default/a"}, "sni": {"type": "Exact", "value": "a.b"}}]}}]})
        );
        assert_eq!(Resource::from_wire(wire, None).unwrap().spec, r.spec);
    }
}
