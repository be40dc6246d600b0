//! Policy matching: which `MeshTrafficPermission`s select a Dataplane inbound (top-level
//! `targetRef`), and the merged per-client rules ("from rules") they give that inbound.
//!
//! The rules are a partition of the client space into [`Subset`]s (conjunctions of tags,
//! some negated), each with the [`Action`] that wins for the clients in it. A partition rather
//! than an ordered list, because Envoy RBAC has no order between principals: "MeshService `x`
//! Deny over Mesh Allow" must become "allow every client that is *not* `x`".
//!
//! Invariants of [`from_rules`]' output:
//! - two subsets never share a client that has one value per tag key (clients with several
//!   values for a key, e.g. several services, may fall in several subsets);
//! - every client matched by some `from[]` item is in one subset; a client matched by none is in
//!   none (and is therefore denied by the RBAC built from these rules);
//! - the order is deterministic: most positive tags first, then enumeration order.
//!
//! The `rules` form is not partitioned: [`inbound_rules`] lists the entries of the policies
//! selecting an inbound, and the RBAC matcher evaluates them (denies first).
//!
//! Main items: [`selects`], [`from_rules`], [`inbound_rules`], [`Subset`], [`Tag`], [`Action`].

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};

use crate::resource::dataplane::{Inbound, SERVICE_TAG};
use crate::resource::policy::{MeshTrafficPermission, RuleConf, TargetRef};

/// Tag-selector value matching any value of a present tag (top-level `MeshSubset` tags).
const MATCH_ALL: &str = "*";

/// What a `from[]` item does with the clients it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Reject the request (HTTP 403 / TCP reset).
    Deny,
    /// Let the request through but record it as denied in the RBAC shadow rules.
    AllowWithShadowDeny,
}

impl Action {
    /// The wire name (`Allow`, `Deny`, `AllowWithShadowDeny`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Allow" => Some(Self::Allow),
            "Deny" => Some(Self::Deny),
            "AllowWithShadowDeny" => Some(Self::AllowWithShadowDeny),
            _ => None,
        }
    }

    /// Whether requests with this action are let through (enforced).
    pub fn allows(self) -> bool {
        matches!(self, Self::Allow | Self::AllowWithShadowDeny)
    }
}

/// One condition on a client's identity: it has (or, `negated`, has not) tag `key` = `value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub key: String,
    pub value: String,
    pub negated: bool,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>, negated: bool) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            negated,
        }
    }
}

/// A group of clients: those satisfying every tag (AND). Empty = every client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Subset {
    /// Sorted by key, then value; for one key either a single positive tag or only negated ones.
    pub tags: Vec<Tag>,
}

impl Subset {
    /// Whether this is the subset of all clients.
    pub fn is_any(&self) -> bool {
        self.tags.is_empty()
    }

    /// Number of non-negated tags (Kuma orders rules by it, most specific first).
    pub fn num_positive(&self) -> usize {
        self.tags.iter().filter(|t| !t.negated).count()
    }

    /// Whether a client whose identity carries exactly the `(key, value)` pairs `identity`
    /// belongs here (how Envoy evaluates the principal: a client certificate has one SAN per
    /// service and per inbound tag, so a key may come with several values).
    pub fn contains(&self, identity: &BTreeSet<(String, String)>) -> bool {
        self.tags.iter().all(|t| {
            let has = identity.contains(&(t.key.clone(), t.value.clone()));
            has != t.negated
        })
    }
}

/// Whether a policy's top-level `targetRef` selects `inbound` of the Dataplane `dp_name` with
/// labels `dp_labels` (a sidecar: `proxyTypes`, when set, must include `Sidecar`).
///
/// - absent or `Mesh`: every inbound;
/// - `MeshSubset`: the inbound's tags contain the `tags` (value `*` = tag present, any value);
/// - `MeshService`: the inbound's `kuma.io/service` is `name`;
/// - `MeshServiceSubset`: the service as above and the `tags` as for `MeshSubset`;
/// - `Dataplane`: with no `name`, `namespace` or `labels`, every Dataplane; else the Dataplane
///   named `name`, or (either suffices, as in Kuma) the one whose labels contain `labels`; then
///   `sectionName`, when set, keeps only the inbound whose `name` (or, unnamed, port) it is;
/// - any other kind selects nothing.
pub fn selects(
    target_ref: Option<&TargetRef>,
    dp_name: &str,
    dp_labels: &BTreeMap<String, String>,
    inbound: &Inbound,
) -> bool {
    let Some(tr) = target_ref else {
        return true;
    };
    let tags = tr.tags.as_ref();
    match tr.kind.as_str() {
        "Mesh" => sidecar_selected(tr),
        "MeshSubset" => sidecar_selected(tr) && tags.is_none_or(|t| tags_match(t, &inbound.tags)),
        "MeshService" => tr.name.is_some() && inbound.service() == tr.name.as_deref(),
        "MeshServiceSubset" => {
            tr.name.is_some()
                && inbound.service() == tr.name.as_deref()
                && tags.is_none_or(|t| tags_match(t, &inbound.tags))
        }
        "Dataplane" => {
            let name = tr.name.as_deref().filter(|n| !n.is_empty());
            let namespace = tr.namespace.as_deref().filter(|n| !n.is_empty());
            let all = name.is_none() && namespace.is_none() && tr.labels.is_none();
            let by_name = name == Some(dp_name);
            let by_labels = tr.labels.as_ref().is_some_and(|want| {
                want.iter()
                    .all(|(k, v)| dp_labels.get(k).is_some_and(|have| have == v))
            });
            (all || by_name || by_labels)
                && tr
                    .section_name
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .is_none_or(|s| section_name(inbound) == s)
        }
        _ => false,
    }
}

/// The merged "from" rules of one inbound: `(clients, action)` pairs, a partition of the
/// clients matched by any `from[]` item (see the module invariants). `policies` are
/// `(name, spec)` of the mesh's MeshTrafficPermissions; those whose top-level `targetRef` does
/// not [`select`](selects) the inbound are ignored, as is the experimental `rules` form.
///
/// Semantics, as Kuma's `BuildFromRules`/`BuildRules` (pkg/plugins/policies/core/rules/rules.go,
/// docs/madr/decisions/007-mesh-traffic-permission.md) and its policy ordering
/// (`SortByTargetRef` in pkg/plugins/policies/core/matchers/dataplane.go, MADR 054):
///
/// 1. The selecting policies are ordered from least to most specific: top-level kind rank
///    ([`TargetRef::specificity`]; absent = `Mesh`); between two `Dataplane` refs, by labels
///    before by name, and without `sectionName` before with; at equal specificity by name
///    *descending*, so that the lexicographically smallest name comes last and wins ("aaa" is
///    more specific than "bbb").
/// 2. Their `from[]` items are concatenated in that order (each policy's items in declaration
///    order). Each item selects clients by its `targetRef`: `Mesh` = all, `MeshSubset` = the
///    client has all `tags`, `MeshService` = `kuma.io/service` is `name`, `MeshServiceSubset` =
///    both.
/// 3. A client's action is that of the **last** item in this list that selects it (Kuma merges
///    the confs of every matching item in list order, later overriding earlier). The kind of
///    the `from[].targetRef` does not rank items: a later `Mesh: Allow` overrides an earlier
///    `MeshService x: Deny` for `x`, even within one policy.
/// 4. To express this without order, items are grouped into connected components of the
///    "may select a common client" graph (no tag key with two different values); within a
///    component every combination of, per tag key, one of its values or none of them (all
///    negated) is a candidate subset, and the candidates matched by at least one item become
///    rules with that item's winning action. (Kuma 2.14 groups by maximal cliques instead of
///    components by default, a smaller but not always equivalent partition; components are
///    its exact, opt-in algorithm.)
///
/// No selecting policy (or no item) gives no rules, which the RBAC turns into deny-all.
/// The number of candidates is the product over tag keys of (values + 1) per component.
pub fn from_rules(
    policies: &[(&str, &MeshTrafficPermission)],
    dp_name: &str,
    dp_labels: &BTreeMap<String, String>,
    inbound: &Inbound,
) -> Vec<(Subset, Action)> {
    let mut selected: Vec<&(&str, &MeshTrafficPermission)> = policies
        .iter()
        .filter(|(_, p)| selects(p.target_ref.as_ref(), dp_name, dp_labels, inbound))
        .collect();
    selected.sort_by(|a, b| compare_policies(a, b));

    let items: Vec<Item> = selected
        .iter()
        .flat_map(|(_, p)| p.from.iter().flatten())
        .filter_map(|f| {
            Some(Item {
                tags: client_tags(&f.target_ref)?,
                action: Action::parse(&f.default.action)?,
            })
        })
        .collect();

    let mut rules = Vec::new();
    for component in components(&items) {
        rules.extend(component_rules(&items, &component));
    }
    // Stable: enumeration order is kept among subsets with as many positive tags.
    rules.sort_by_key(|(s, _): &(Subset, Action)| Reverse(s.num_positive()));
    rules
}

/// One `rules[]` entry of a policy selecting an inbound: the policy's name and the entry's
/// conf (its deny / allow / allowWithShadowDeny matches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InboundRule<'a> {
    /// Name of the MeshTrafficPermission the entry comes from.
    pub policy: &'a str,
    pub conf: &'a RuleConf,
}

/// The `rules[]` entries of every policy that uses the `rules` form and selects `inbound`
/// ([`selects`]), flattened in Kuma's order (`inbound.BuildRules`): policies from least to
/// most specific, as for [`from_rules`] (kind rank, then Dataplane specificity, then name
/// descending), each policy's entries in declaration order. Nothing is merged: the RBAC
/// matcher puts every deny before every allow, so the order only names the matchers.
///
/// Empty when no `rules` policy selects the inbound: then the legacy `from` form applies
/// (Kuma never mixes the two on one inbound).
pub fn inbound_rules<'a>(
    policies: &[(&'a str, &'a MeshTrafficPermission)],
    dp_name: &str,
    dp_labels: &BTreeMap<String, String>,
    inbound: &Inbound,
) -> Vec<InboundRule<'a>> {
    let mut selected: Vec<&(&'a str, &'a MeshTrafficPermission)> = policies
        .iter()
        .filter(|(_, p)| p.has_rules())
        .filter(|(_, p)| selects(p.target_ref.as_ref(), dp_name, dp_labels, inbound))
        .collect();
    selected.sort_by(|a, b| compare_policies(a, b));
    selected
        .into_iter()
        .flat_map(|&(name, p)| {
            p.rules.iter().flatten().map(move |r| InboundRule {
                policy: name,
                conf: &r.default,
            })
        })
        .collect()
}

/// One `from[]` item: the client tags it requires (all positive) and its action.
struct Item {
    tags: BTreeMap<String, String>,
    action: Action,
}

impl Item {
    /// Whether some client can match both items: no key required with two different values.
    fn intersects(&self, other: &Item) -> bool {
        self.tags
            .iter()
            .all(|(k, v)| other.tags.get(k).is_none_or(|o| o == v))
    }
}

/// The client tags a `from[].targetRef` requires; `None` for a kind that selects no client
/// here (validation admits none, so this only guards stored data from elsewhere).
fn client_tags(tr: &TargetRef) -> Option<BTreeMap<String, String>> {
    let tags = tr.tags.clone().unwrap_or_default();
    match tr.kind.as_str() {
        "Mesh" => Some(BTreeMap::new()),
        "MeshSubset" => Some(tags),
        "MeshService" | "MeshServiceSubset" => {
            let name = tr.name.clone()?;
            let mut tags = if tr.kind == "MeshService" {
                BTreeMap::new()
            } else {
                tags
            };
            // `tags` naming another service as well: a client would need both, which no
            // subset of a partition holds, so the item can never apply.
            if tags.get(SERVICE_TAG).is_some_and(|s| *s != name) {
                return None;
            }
            tags.insert(SERVICE_TAG.to_string(), name);
            Some(tags)
        }
        _ => None,
    }
}

/// Item indices grouped by connectivity of [`Item::intersects`], each group ascending, groups
/// in order of their first item.
fn components(items: &[Item]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..items.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            if items[i].intersects(&items[j]) {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..items.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// The rules of one component: every combination of, per tag key, one value (positive) or
/// none of the values (all negated), kept when at least one item of the component matches it.
fn component_rules(items: &[Item], component: &[usize]) -> Vec<(Subset, Action)> {
    let mut dims: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for &i in component {
        for (k, v) in &items[i].tags {
            dims.entry(k.as_str()).or_default().insert(v.as_str());
        }
    }
    let dims: Vec<(&str, Vec<&str>)> = dims
        .into_iter()
        .map(|(k, vs)| (k, vs.into_iter().collect()))
        .collect();

    let mut rules = Vec::new();
    // Odometer over the choices; choice == values.len() means "none of the values".
    let mut choice = vec![0usize; dims.len()];
    loop {
        let chosen = |key: &str| -> Option<&str> {
            let d = dims.iter().position(|(k, _)| *k == key)?;
            dims[d].1.get(choice[d]).copied()
        };
        let winner = component
            .iter()
            .rev()
            .map(|&i| &items[i])
            .find(|item| item.tags.iter().all(|(k, v)| chosen(k) == Some(v.as_str())));
        if let Some(item) = winner {
            let mut tags = Vec::new();
            for (d, (key, values)) in dims.iter().enumerate() {
                match values.get(choice[d]) {
                    Some(v) => tags.push(Tag::new(*key, *v, false)),
                    None => tags.extend(values.iter().map(|v| Tag::new(*key, *v, true))),
                }
            }
            rules.push((Subset { tags }, item.action));
        }

        let mut d = 0;
        loop {
            if d == dims.len() {
                return rules;
            }
            choice[d] += 1;
            if choice[d] <= dims[d].1.len() {
                break;
            }
            choice[d] = 0;
            d += 1;
        }
    }
}

/// Ascending = least specific first (merged first, overridden by later ones).
fn compare_policies(
    (a_name, a): &(&str, &MeshTrafficPermission),
    (b_name, b): &(&str, &MeshTrafficPermission),
) -> Ordering {
    let mesh = TargetRef {
        kind: "Mesh".into(),
        ..Default::default()
    };
    let (ta, tb) = (
        a.target_ref.as_ref().unwrap_or(&mesh),
        b.target_ref.as_ref().unwrap_or(&mesh),
    );
    ta.specificity()
        .cmp(&tb.specificity())
        .then_with(|| dataplane_rank(ta).cmp(&dataplane_rank(tb)))
        .then_with(|| b_name.cmp(a_name))
}

/// Within kind `Dataplane`: selecting by labels (or all) < by name; without < with section.
fn dataplane_rank(tr: &TargetRef) -> (bool, bool) {
    if tr.kind != "Dataplane" {
        return (false, false);
    }
    (
        tr.name.as_deref().is_some_and(|n| !n.is_empty()),
        tr.section_name.as_deref().is_some_and(|s| !s.is_empty()),
    )
}

fn sidecar_selected(tr: &TargetRef) -> bool {
    tr.proxy_types
        .as_ref()
        .is_none_or(|types| types.is_empty() || types.iter().any(|t| t == "Sidecar"))
}

/// Kuma's tag selector: every wanted tag present, with the value or `*`.
fn tags_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, v)| have.get(k).is_some_and(|h| v == MATCH_ALL || h == v))
}

/// What `targetRef.sectionName` names in an inbound: its `name`, or its port when unnamed.
fn section_name(inbound: &Inbound) -> String {
    match inbound.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => inbound.port.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mtp(v: serde_json::Value) -> MeshTrafficPermission {
        let m: MeshTrafficPermission = serde_json::from_value(v).unwrap();
        m.validate().unwrap();
        m
    }

    fn unvalidated(v: serde_json::Value) -> MeshTrafficPermission {
        serde_json::from_value(v).unwrap()
    }

    fn inbound(port: u32, tags: &[(&str, &str)]) -> Inbound {
        Inbound {
            port,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn backend() -> Inbound {
        inbound(80, &[("kuma.io/service", "backend"), ("team", "core")])
    }

    fn rules_for(
        policies: &[(&str, &MeshTrafficPermission)],
        ib: &Inbound,
    ) -> Vec<(Subset, Action)> {
        from_rules(policies, "dp-1", &BTreeMap::new(), ib)
    }

    fn id(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The action for a client with one value per key (its unique subset), `None` = no rule.
    fn action(rules: &[(Subset, Action)], pairs: &[(&str, &str)]) -> Option<Action> {
        let matching: Vec<_> = rules
            .iter()
            .filter(|(s, _)| s.contains(&id(pairs)))
            .collect();
        assert!(
            matching.len() <= 1,
            "subsets overlap for {pairs:?}: {matching:?}"
        );
        matching.first().map(|(_, a)| *a)
    }

    fn action_for_service(rules: &[(Subset, Action)], name: &str) -> Option<Action> {
        action(rules, &[("kuma.io/service", name)])
    }

    fn allow_all() -> MeshTrafficPermission {
        mtp(json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}))
    }

    #[test]
    fn inbound_rules_of_rules_policies_in_kumas_order() {
        let rules = |v: serde_json::Value| -> MeshTrafficPermission {
            mtp(json!({"targetRef": v, "rules": [
                {"default": {"deny": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/a"}}]}},
                {"default": {"allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default"}}]}}]}))
        };
        let mesh_b = rules(json!({"kind": "Mesh"}));
        let mesh_a = rules(json!({"kind": "Mesh"}));
        let by_name = rules(json!({"kind": "Dataplane", "name": "dp-1"}));
        let other = rules(json!({"kind": "MeshService", "name": "other"}));
        let legacy = allow_all();
        let policies = [
            ("z-dp", &by_name),
            ("a-mesh", &mesh_a),
            ("legacy", &legacy),
            ("b-mesh", &mesh_b),
            ("other", &other),
        ];
        let got = inbound_rules(&policies, "dp-1", &BTreeMap::new(), &backend());
        let names: Vec<_> = got.iter().map(|r| r.policy).collect();
        // Least specific first; equal kinds by name descending; two entries each; the
        // `from` policy and the one selecting another service left out.
        assert_eq!(
            names,
            vec!["b-mesh", "b-mesh", "a-mesh", "a-mesh", "z-dp", "z-dp"]
        );
        assert_eq!(got[0].conf.deny().len(), 1);
        assert_eq!(got[1].conf.allow().len(), 1);
        // Only `from` policies: no rules, the legacy form applies.
        assert!(
            inbound_rules(&[("legacy", &legacy)], "dp-1", &BTreeMap::new(), &backend()).is_empty()
        );
        // And from_rules ignores the `rules` policies.
        assert!(rules_for(&[("a-mesh", &mesh_a)], &backend()).is_empty());
    }

    #[test]
    fn no_policy_gives_no_rules() {
        assert!(rules_for(&[], &backend()).is_empty());
    }

    #[test]
    fn allow_all_is_one_rule_for_any_client() {
        let p = allow_all();
        assert_eq!(
            rules_for(&[("allow-all", &p)], &backend()),
            vec![(Subset::default(), Action::Allow)]
        );
    }

    #[test]
    fn deny_for_one_service_overrides_mesh_allow() {
        let allow = allow_all();
        let deny = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "web"},
                      "default": {"action": "Deny"}}]}),
        );
        let rules = rules_for(&[("deny-web", &deny), ("allow-all", &allow)], &backend());
        assert_eq!(
            rules,
            vec![
                (
                    Subset {
                        tags: vec![Tag::new("kuma.io/service", "web", false)]
                    },
                    Action::Deny
                ),
                (
                    Subset {
                        tags: vec![Tag::new("kuma.io/service", "web", true)]
                    },
                    Action::Allow
                ),
            ]
        );
        assert_eq!(action_for_service(&rules, "web"), Some(Action::Deny));
        assert_eq!(action_for_service(&rules, "other"), Some(Action::Allow));
    }

    #[test]
    fn later_item_wins_regardless_of_from_kind() {
        // Kuma merges matching items in list order: Mesh Allow declared after MeshService Deny
        // (in the same policy) re-allows the service.
        let p = mtp(json!({"from": [
            {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}},
            {"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}));
        let rules = rules_for(&[("p", &p)], &backend());
        assert_eq!(action_for_service(&rules, "web"), Some(Action::Allow));
        assert_eq!(action_for_service(&rules, "x"), Some(Action::Allow));
    }

    #[test]
    fn mesh_subset_by_custom_tag() {
        let p = mtp(
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"team": "core"}},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"team": "core"}},
                      "default": {"action": "Allow"}}]}),
        );
        let rules = rules_for(&[("team", &p)], &backend());
        assert_eq!(
            rules,
            vec![(
                Subset {
                    tags: vec![Tag::new("team", "core", false)]
                },
                Action::Allow
            )]
        );
        assert_eq!(
            action(&rules, &[("team", "core"), ("kuma.io/service", "a")]),
            Some(Action::Allow)
        );
        assert_eq!(action(&rules, &[("team", "other")]), None);
        // The top-level MeshSubset does not select an inbound of another team.
        let other = inbound(81, &[("kuma.io/service", "backend"), ("team", "edge")]);
        assert!(rules_for(&[("team", &p)], &other).is_empty());
        // `*` selects any value of a present tag (Kuma's validation refuses it in a
        // top-level MeshSubset, but MeshServiceSubset takes it).
        let star = unvalidated(
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"team": "*"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        assert!(selects(
            star.target_ref.as_ref(),
            "dp",
            &BTreeMap::new(),
            &other
        ));
        assert!(!selects(
            star.target_ref.as_ref(),
            "dp",
            &BTreeMap::new(),
            &inbound(82, &[("kuma.io/service", "x")])
        ));
    }

    #[test]
    fn mesh_service_target_selects_only_that_services_inbound() {
        let p = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        let policies = [("backend-only", &p)];
        // One Dataplane, two inbounds of different services: rules per inbound.
        assert_eq!(rules_for(&policies, &backend()).len(), 1);
        assert!(rules_for(&policies, &inbound(81, &[("kuma.io/service", "admin")])).is_empty());

        let subset = mtp(
            json!({"targetRef": {"kind": "MeshServiceSubset", "name": "backend",
                "tags": {"version": "v2"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        let v2 = inbound(82, &[("kuma.io/service", "backend"), ("version", "v2")]);
        assert!(selects(
            subset.target_ref.as_ref(),
            "dp",
            &BTreeMap::new(),
            &v2
        ));
        assert!(!selects(
            subset.target_ref.as_ref(),
            "dp",
            &BTreeMap::new(),
            &backend()
        ));
    }

    #[test]
    fn dataplane_by_name_labels_and_section() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let named = inbound(8080, &[("kuma.io/service", "backend")]);
        let mut with_name = named.clone();
        with_name.name = Some("http".into());
        let tr = |v: serde_json::Value| -> TargetRef { serde_json::from_value(v).unwrap() };

        let by_name = tr(json!({"kind": "Dataplane", "name": "dp-1"}));
        assert!(selects(Some(&by_name), "dp-1", &labels, &named));
        assert!(!selects(Some(&by_name), "dp-2", &labels, &named));

        let by_labels = tr(json!({"kind": "Dataplane", "labels": {"env": "prod"}}));
        assert!(selects(Some(&by_labels), "dp-2", &labels, &named));
        assert!(!selects(Some(&by_labels), "dp-2", &BTreeMap::new(), &named));

        let all = tr(json!({"kind": "Dataplane"}));
        assert!(selects(Some(&all), "any", &BTreeMap::new(), &named));

        let by_port = tr(json!({"kind": "Dataplane", "name": "dp-1", "sectionName": "8080"}));
        assert!(selects(Some(&by_port), "dp-1", &labels, &named));
        assert!(!selects(Some(&by_port), "dp-1", &labels, &with_name));
        let by_section =
            tr(json!({"kind": "Dataplane", "labels": {"env": "prod"}, "sectionName": "http"}));
        assert!(selects(Some(&by_section), "dp-1", &labels, &with_name));
        assert!(!selects(Some(&by_section), "dp-1", &labels, &named));

        // Through from_rules: the by-name policy (more specific than by-labels) wins.
        let deny = mtp(json!({"targetRef": {"kind": "Dataplane", "name": "dp-1"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]}));
        let allow = mtp(
            json!({"targetRef": {"kind": "Dataplane", "labels": {"env": "prod"}},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
        );
        let policies = [("a-deny-by-name", &deny), ("z-allow-by-labels", &allow)];
        let rules = from_rules(&policies, "dp-1", &labels, &named);
        assert_eq!(rules, vec![(Subset::default(), Action::Deny)]);
        let rules = from_rules(&policies, "dp-2", &labels, &named);
        assert_eq!(rules, vec![(Subset::default(), Action::Allow)]);
    }

    #[test]
    fn equal_specificity_ordered_by_name_smallest_wins() {
        // As Kuma's "multiple-policies-lexicog-order" case: "rule-a" overrides "rule-b".
        let b = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [
              {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Allow"}},
              {"targetRef": {"kind": "MeshService", "name": "pay"}, "default": {"action": "Allow"}}]}),
        );
        let a = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "pay"},
                      "default": {"action": "Deny"}}]}),
        );
        for policies in [
            [("rule-b", &b), ("rule-a", &a)],
            [("rule-a", &a), ("rule-b", &b)],
        ] {
            let rules = rules_for(&policies, &backend());
            assert_eq!(action_for_service(&rules, "pay"), Some(Action::Deny));
            assert_eq!(action_for_service(&rules, "web"), Some(Action::Allow));
            assert_eq!(action_for_service(&rules, "other"), None);
        }
        // A more specific top-level targetRef beats the name order.
        let mesh_level = mtp(json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "MeshService", "name": "pay"},
                      "default": {"action": "Allow"}}]}));
        let rules = rules_for(&[("rule-a", &a), ("aaa", &mesh_level)], &backend());
        assert_eq!(action_for_service(&rules, "pay"), Some(Action::Deny));
    }

    #[test]
    fn partition_of_the_madr_example() {
        // MADR 007: Mesh Deny; zone=us-east Deny; env=dev Allow; web AllowWithShadowDeny.
        let global = mtp(json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]}));
        let global2 = mtp(json!({"targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/zone": "us-east"}},
                      "default": {"action": "Deny"}}]}));
        let be = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"},
            "from": [
              {"targetRef": {"kind": "MeshSubset", "tags": {"env": "dev"}}, "default": {"action": "Allow"}},
              {"targetRef": {"kind": "MeshService", "name": "web"},
               "default": {"action": "AllowWithShadowDeny"}}]}),
        );
        let rules = rules_for(
            &[
                ("global", &global),
                ("global-2", &global2),
                ("backend", &be),
            ],
            &backend(),
        );
        assert_eq!(rules.len(), 8);
        let z = ("kuma.io/zone", "us-east");
        let dev = ("env", "dev");
        let web = ("kuma.io/service", "web");
        assert_eq!(action(&rules, &[z, dev]), Some(Action::Allow));
        assert_eq!(action(&rules, &[dev]), Some(Action::Allow));
        assert_eq!(action(&rules, &[z]), Some(Action::Deny));
        assert_eq!(action(&rules, &[]), Some(Action::Deny));
        assert_eq!(action(&rules, &[z, web]), Some(Action::AllowWithShadowDeny));
        assert_eq!(
            action(&rules, &[web, ("env", "prod")]),
            Some(Action::AllowWithShadowDeny)
        );
        // Most positive tags first.
        let counts: Vec<_> = rules.iter().map(|(s, _)| s.num_positive()).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    }

    #[test]
    fn disjoint_items_form_separate_components() {
        let p = mtp(json!({"from": [
            {"targetRef": {"kind": "MeshService", "name": "a"}, "default": {"action": "Allow"}},
            {"targetRef": {"kind": "MeshServiceSubset", "name": "b", "tags": {"version": "v1"}},
             "default": {"action": "Allow"}},
            {"targetRef": {"kind": "MeshSubset", "tags": {"version": "v1"}}, "default": {"action": "Deny"}}]}));
        let rules = rules_for(&[("p", &p)], &backend());
        assert_eq!(action_for_service(&rules, "a"), Some(Action::Allow));
        assert_eq!(
            action(&rules, &[("kuma.io/service", "a"), ("version", "v1")]),
            Some(Action::Deny)
        );
        assert_eq!(
            action(&rules, &[("kuma.io/service", "b"), ("version", "v1")]),
            Some(Action::Deny)
        );
        assert_eq!(action(&rules, &[("kuma.io/service", "b")]), None);
        assert_eq!(action(&rules, &[("version", "v1")]), Some(Action::Deny));
    }

    /// Brute force over a small client universe: the partition gives every single-valued
    /// client the action of the last item selecting it.
    #[test]
    fn partition_agrees_with_last_match_on_all_clients() {
        let p1 = mtp(json!({"targetRef": {"kind": "Mesh"}, "from": [
            {"targetRef": {"kind": "MeshSubset", "tags": {"x": "1"}}, "default": {"action": "Allow"}},
            {"targetRef": {"kind": "MeshSubset", "tags": {"y": "1"}}, "default": {"action": "Deny"}},
            {"targetRef": {"kind": "MeshSubset", "tags": {"y": "2"}}, "default": {"action": "AllowWithShadowDeny"}}]}));
        let p2 = mtp(
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "from": [
            {"targetRef": {"kind": "MeshServiceSubset", "name": "s", "tags": {"x": "2"}},
             "default": {"action": "Deny"}},
            {"targetRef": {"kind": "MeshService", "name": "t"}, "default": {"action": "Allow"}}]}),
        );
        let rules = rules_for(&[("p2", &p2), ("p1", &p1)], &backend());
        let items: Vec<(BTreeMap<&str, &str>, Action)> = vec![
            ([("x", "1")].into(), Action::Allow),
            ([("y", "1")].into(), Action::Deny),
            ([("y", "2")].into(), Action::AllowWithShadowDeny),
            ([("kuma.io/service", "s"), ("x", "2")].into(), Action::Deny),
            ([("kuma.io/service", "t")].into(), Action::Allow),
        ];
        for x in [None, Some("1"), Some("2"), Some("3")] {
            for y in [None, Some("1"), Some("2")] {
                for s in [None, Some("s"), Some("t"), Some("u")] {
                    let mut client = Vec::new();
                    for (k, v) in [("x", x), ("y", y), ("kuma.io/service", s)] {
                        if let Some(v) = v {
                            client.push((k, v));
                        }
                    }
                    let expected = items
                        .iter()
                        .rev()
                        .find(|(tags, _)| tags.iter().all(|(k, v)| client.contains(&(*k, *v))))
                        .map(|(_, a)| *a);
                    assert_eq!(action(&rules, &client), expected, "client {client:?}");
                }
            }
        }
    }
}
