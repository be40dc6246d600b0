//! Golden files of the generated Envoy configuration: `testdata/generator/<case>.golden.json`,
//! the snapshot of one proxy as proto3 JSON with every nested `Any` expanded (as Envoy's
//! `/config_dump` shows it). Run with `UPDATE_GOLDEN=1` to rewrite them after an intended
//! change; otherwise any drift fails, naming the file.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ca;
use crate::golden::assert_golden;
use crate::xds::view::Mtls;
use kuma_core::resource::{Dataplane, MeshTrafficPermission};
use serde_json::{Value, json};

use super::generate;
use crate::xds::view::MeshView;

pub(super) fn dataplane(spec: Value) -> Dataplane {
    serde_json::from_value(spec).expect("a valid Dataplane spec")
}

/// A proxy serving `service` on 10.0.0.<host>:8080 (workload on port 80).
fn server(host: u8, service: &str, protocol: Option<&str>) -> Dataplane {
    let mut tags = json!({"kuma.io/service": service});
    if let Some(p) = protocol {
        tags["kuma.io/protocol"] = json!(p);
    }
    dataplane(json!({"networking": {
        "address": format!("10.0.0.{host}"),
        "inbound": [{"port": 8080, "servicePort": 80, "tags": tags}]
    }}))
}

/// Generates the snapshot of `proxy` in a mesh made of `proxy` and `others`, and compares
/// its JSON with `testdata/generator/<case>.golden.json`.
fn check(case: &str, proxy: &Dataplane, others: &[Dataplane]) {
    let view = MeshView::build("default", "zone-1", others.iter().chain([proxy]));
    assert_golden(
        &format!("generator/{case}.golden.json"),
        &rendered(&generate(&view, proxy)),
    );
}

#[test]
fn http_inbound_and_outbound_to_two_endpoints() {
    let web = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [{"port": 8080, "servicePort": 80,
                     "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
        "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
    }}));
    let backends = [
        server(2, "backend", Some("http")),
        server(3, "backend", Some("http")),
    ];
    check("http", &web, &backends);
}

#[test]
fn tcp_inbound_and_outbound() {
    let app = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [{"port": 9000, "servicePort": 9001, "serviceAddress": "127.0.0.1",
                     "tags": {"kuma.io/service": "app"}}],
        "outbound": [{"port": 15432, "tags": {"kuma.io/service": "db"}}]
    }}));
    check("tcp", &app, &[server(2, "db", None)]);
}

#[test]
fn outbound_without_endpoints() {
    let client = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "outbound": [{"port": 10002, "tags": {"kuma.io/service": "ghost"}}]
    }}));
    check("no-endpoints", &client, &[]);
}

#[test]
fn http2_and_grpc() {
    let client = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [{"port": 8080, "servicePort": 80,
                     "tags": {"kuma.io/service": "frontend", "kuma.io/protocol": "grpc"}}],
        "outbound": [
            {"port": 10003, "tags": {"kuma.io/service": "api"}},
            {"port": 10004, "tags": {"kuma.io/service": "search"}}
        ]
    }}));
    let others = [
        server(2, "api", Some("http2")),
        server(3, "search", Some("grpc")),
    ];
    check("http2-grpc", &client, &others);
}

/// The mesh of the mTLS cases: `web` (an HTTP and a TCP inbound, an outbound to `backend`),
/// one `backend`, a builtin CA, an allow-all permission and a Deny of `legacy` into `web`.
pub(super) struct MtlsMesh {
    pub(super) proxy: Dataplane,
    others: Vec<Dataplane>,
    mtls: Mtls,
    policies: Vec<(String, MeshTrafficPermission)>,
}

impl MtlsMesh {
    pub(super) fn new(permissive: bool) -> Self {
        let proxy = dataplane(json!({"networking": {
            "address": "10.0.0.1",
            "inbound": [
                {"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http", "team": "a"}},
                {"port": 9090, "servicePort": 90, "tags": {"kuma.io/service": "web-tcp"}}
            ],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
        }}));
        let (cert, key) = ca::generate_root("default", ca::DEFAULT_ROOT_LIFETIME).unwrap();
        let mtls = Mtls {
            backend: "ca-1".into(),
            permissive,
            outbound: true,
            // Fixed PEM text keeps the golden stable; the generator only places it.
            ca_secret: Arc::new(crate::xds::envoy::ca_secret("default", "CA-PEM")),
            ca: Arc::new(ca::Ca::from_pem("ca-1", &cert, &key).unwrap()),
            lifetime: ca::DEFAULT_DP_CERT_LIFETIME,
        };
        let policies = vec![
            (
                "allow-all".to_string(),
                serde_json::from_value(json!({"targetRef": {"kind": "Mesh"},
                    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}))
                .unwrap(),
            ),
            (
                "deny-legacy".to_string(),
                serde_json::from_value(json!({"targetRef": {"kind": "MeshService", "name": "web"},
                    "from": [{"targetRef": {"kind": "MeshService", "name": "legacy"}, "default": {"action": "Deny"}}]}))
                .unwrap(),
            ),
        ];
        Self {
            proxy,
            others: vec![server(2, "backend", Some("http"))],
            mtls,
            policies,
        }
    }

    /// The view with the first `policies` permissions.
    pub(super) fn view(&self, policies: usize) -> MeshView {
        MeshView::build("default", "zone-1", self.others.iter().chain([&self.proxy]))
            .with_mtls(self.mtls.clone())
            .with_policies(self.policies[..policies].to_vec())
    }

    fn proxy<'a>(&'a self, labels: &'a BTreeMap<String, String>) -> super::Proxy<'a> {
        super::Proxy {
            name: "web-1",
            labels,
            dataplane: &self.proxy,
            identity: Some(Arc::new(crate::xds::envoy::identity_secret(
                "default", "CERT-PEM", "KEY-PEM",
            ))),
            node: &NO_NODE,
        }
    }
}

static NO_NODE: crate::xds::lifecycle::NodeInfo = crate::xds::lifecycle::NodeInfo {
    workdir: String::new(),
    dns_port: 0,
    ipv6: false,
    metrics_cert_path: String::new(),
    metrics_key_path: String::new(),
    admin: crate::xds::lifecycle::AdminNode::NONE,
};

pub(super) fn rendered(snap: &kuma_xds::Snapshot) -> String {
    let json = kuma_xds::json::snapshot_to_json(snap);
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    assert!(!text.contains("@error"), "unrenderable resource:\n{text}");
    text
}

/// mTLS on: SDS secrets, TLS on inbound chains with RBAC (HTTP and TCP), TLS with SNI on
/// outbound clusters; PERMISSIVE adds the plaintext and passthrough chains.
fn check_mtls(case: &str, permissive: bool) {
    let mesh = MtlsMesh::new(permissive);
    let labels = BTreeMap::new();
    let snap = super::generate_proxy(&mesh.view(mesh.policies.len()), &mesh.proxy(&labels));
    assert_golden(&format!("generator/{case}.golden.json"), &rendered(&snap));
}

/// What the runtime does on a permission change: the outbound half generated under the old
/// permissions, assembled with the new view, is exactly the snapshot generated from scratch.
#[test]
fn outbound_half_reused_across_a_permission_change_is_exact() {
    let mesh = MtlsMesh::new(false);
    let labels = BTreeMap::new();
    let proxy = mesh.proxy(&labels);
    let before = mesh.view(1);
    let after = mesh.view(2);
    let outbound = super::outbound_resources(&before, &mesh.proxy, true);
    let reused = rendered(&super::assemble(&after, &proxy, &outbound));
    let fresh = rendered(&super::generate_proxy(&after, &proxy));
    assert_eq!(reused, fresh);
    assert_ne!(
        rendered(&super::generate_proxy(&before, &proxy)),
        fresh,
        "the Deny must change the inbound listener"
    );
}

#[test]
fn mtls_strict_with_permissions() {
    check_mtls("mtls-strict", false);
}

#[test]
fn mtls_permissive_with_permissions() {
    check_mtls("mtls-permissive", true);
}

/// A `rules` policy selecting the HTTP inbound puts it on the RBAC matcher (every deny first,
/// allow then allowWithShadowDeny, shadow matcher) with a TLS inspector for its SNI match;
/// the TCP inbound, selected by no `rules` policy, keeps the `from` principals.
#[test]
fn mtls_rules_matcher_on_the_selected_inbound_only() {
    let mut mesh = MtlsMesh::new(false);
    mesh.policies.push(rules_policy());
    let labels = BTreeMap::new();
    let snap = super::generate_proxy(&mesh.view(mesh.policies.len()), &mesh.proxy(&labels));
    let text = rendered(&snap);
    let http = listener(&text, "inbound:10.0.0.1:8080").to_string();
    assert!(
        http.contains("on_no_match") && http.contains("\"shadow_matcher\""),
        "{http}"
    );
    assert!(
        http.contains("kri_mtp_default_zone-1__web-rules_"),
        "{http}"
    );
    assert!(
        http.contains("envoy.filters.listener.tls_inspector"),
        "{http}"
    );
    assert!(!http.contains("principal_name"), "{http}");
    let tcp = listener(&text, "inbound:10.0.0.1:9090").to_string();
    assert!(!tcp.contains("on_no_match"), "{tcp}");
    assert!(tcp.contains("\"principals\""), "{tcp}");
    assert!(!tcp.contains("tls_inspector"), "{tcp}");
    assert_golden("generator/mtls-rules.golden.json", &text);
}

/// PERMISSIVE with an SNI rule: one TLS inspector, the matcher only on the mesh (TLS) chain;
/// the plaintext and passthrough chains stay open, as in Kuma.
#[test]
fn mtls_permissive_rules_one_tls_inspector_and_matcher_on_the_mesh_chain() {
    let mut mesh = MtlsMesh::new(true);
    mesh.policies.push(rules_policy());
    let labels = BTreeMap::new();
    let snap = super::generate_proxy(&mesh.view(mesh.policies.len()), &mesh.proxy(&labels));
    let http = listener(&rendered(&snap), "inbound:10.0.0.1:8080");
    assert_eq!(
        http["listener_filters"].as_array().unwrap().len(),
        1,
        "{http}"
    );
    let chains = http["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3, "{http}");
    let with_matcher: Vec<bool> = chains
        .iter()
        .map(|c| c.to_string().contains("on_no_match"))
        .collect();
    let tls: Vec<bool> = chains
        .iter()
        .map(|c| c.get("transport_socket").is_some())
        .collect();
    assert_eq!(with_matcher, tls, "{http}");
    assert_eq!(tls.iter().filter(|t| **t).count(), 1, "{http}");
}

/// `web-rules`: a `rules` policy on service `web` with a deny, an allow and an
/// allowWithShadowDeny that matches on SNI.
fn rules_policy() -> (String, MeshTrafficPermission) {
    (
        "web-rules".to_string(),
        serde_json::from_value(json!({"targetRef": {"kind": "MeshService", "name": "web"},
            "rules": [{"default": {
                "deny": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/legacy"}}],
                "allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default"}}],
                "allowWithShadowDeny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/web"},
                                         "sni": {"type": "Exact", "value": "web.example.com"}}]}}]}))
        .unwrap(),
    )
}

/// The resource named `name` in a rendered snapshot.
fn listener(text: &str, name: &str) -> Value {
    let json: Value = serde_json::from_str(text).unwrap();
    json.as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_array())
        .flatten()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A ZoneIngress or ZoneEgress spec.
fn zone_proxy<T: serde::de::DeserializeOwned>(spec: Value) -> T {
    serde_json::from_value(spec).expect("a valid zone proxy spec")
}

/// A Mesh with a builtin CA and `routing`.
fn mtls_mesh_spec(routing: Value) -> kuma_core::resource::Mesh {
    serde_json::from_value(json!({
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
        "routing": routing,
    }))
    .unwrap()
}

/// Zone-2's ingresses as zone-1 sees them: one at 192.168.2.1:10001 announcing two
/// `backend` instances and one `api`, a second ingress behind the same address (counted
/// once), one without an advertised address (unusable), zone-3's ingress, and zone-1's own.
fn ingresses() -> Vec<kuma_core::resource::ZoneIngress> {
    let svc = |name: &str, instances: u32, mesh: &str| {
        json!({"tags": {"kuma.io/service": name, "kuma.io/protocol": "http"},
            "instances": instances, "mesh": mesh})
    };
    vec![
        zone_proxy(
            json!({"zone": "zone-2", "networking": {"address": "10.2.0.1", "port": 10001,
            "advertisedAddress": "192.168.2.1", "advertisedPort": 10001},
            "availableServices": [svc("backend", 2, "default"), svc("api", 1, "default"),
                svc("backend", 5, "other")]}),
        ),
        zone_proxy(
            json!({"zone": "zone-2", "networking": {"address": "10.2.0.2", "port": 10001,
            "advertisedAddress": "192.168.2.1", "advertisedPort": 10001},
            "availableServices": [svc("backend", 2, "default")]}),
        ),
        zone_proxy(
            json!({"zone": "zone-2", "networking": {"address": "10.2.0.3", "port": 10001},
            "availableServices": [svc("backend", 9, "default")]}),
        ),
        zone_proxy(
            json!({"zone": "zone-3", "networking": {"address": "10.3.0.1", "port": 10001,
            "advertisedAddress": "192.168.3.1", "advertisedPort": 10001},
            "availableServices": [svc("backend", 1, "default")]}),
        ),
        zone_proxy(json!({"networking": {"address": "10.1.0.1", "port": 10001,
            "advertisedAddress": "192.168.1.1", "advertisedPort": 10001},
            "availableServices": [svc("backend", 1, "default")]})),
    ]
}

fn egresses() -> Vec<kuma_core::resource::ZoneEgress> {
    vec![zone_proxy(
        json!({"networking": {"address": "10.1.0.9", "port": 10002}}),
    )]
}

fn cross(routing: Value) -> crate::xds::view::CrossZone {
    crate::xds::view::CrossZone::build(
        "default",
        &mtls_mesh_spec(routing),
        "zone-1",
        ingresses().iter(),
        egresses().iter(),
    )
}

/// The cluster `backend` of `web` in zone-1 with one local `backend`: the local endpoint in
/// locality zone-1 weighing the two distinct remote ingresses, zone-2's ingress weighing 2
/// (its instances), zone-3's 1; `api`, served only in zone-2, gets a cluster too.
#[test]
fn cross_zone_endpoints_in_sidecar_clusters() {
    let mesh = MtlsMesh::new(false);
    let cz = cross(json!({}));
    assert_eq!(cz.local_weight, 2);
    assert_eq!(cz.remote["backend"].len(), 2, "{cz:?}");
    assert_eq!(cz.protocols["api"], "http");
    let view = MeshView::rebuild(
        "default",
        "zone-1",
        mesh.others.iter().chain([&mesh.proxy]),
        &cz,
        None,
    )
    .with_mtls(mesh.mtls.clone());
    let cla = kuma_xds::json::snapshot_to_json(&{
        let mut s = kuma_xds::Snapshot::new();
        s.insert(view.endpoints("backend"));
        s.insert(view.endpoints("api"));
        s
    });
    let text = serde_json::to_string_pretty(&cla).unwrap() + "\n";
    assert_golden("generator/cross-zone.golden.json", &text);
    assert_eq!(view.protocol("api"), "http");
    // The sidecar's cluster still sends the SNI the remote ingress routes by.
    let labels = BTreeMap::new();
    let snap = rendered(&super::generate_proxy(&view, &mesh.proxy(&labels)));
    assert!(
        snap.contains("\"sni\": \"backend{mesh=default}\""),
        "{snap}"
    );

    // A new instance behind zone-2's address, not yet reconciled (no services), hides
    // nothing; zone egress on with no egress: no cross-zone endpoint.
    let mut with_new = ingresses();
    with_new.insert(
        0,
        zone_proxy(
            json!({"zone": "zone-2", "networking": {"address": "10.2.0.9", "port": 10001,
            "advertisedAddress": "192.168.2.1", "advertisedPort": 10001}}),
        ),
    );
    let cz2 = crate::xds::view::CrossZone::build(
        "default",
        &mtls_mesh_spec(json!({})),
        "zone-1",
        with_new.iter(),
        egresses().iter(),
    );
    assert_eq!(cz2, cz);
    let no_egress = crate::xds::view::CrossZone::build(
        "default",
        &mtls_mesh_spec(json!({"zoneEgress": true})),
        "zone-1",
        ingresses().iter(),
        std::iter::empty(),
    );
    let view = MeshView::rebuild("default", "zone-1", [&mesh.proxy], &no_egress, None);
    assert!(
        !rendered(&{
            let mut s = kuma_xds::Snapshot::new();
            s.insert(view.endpoints("api"));
            s
        })
        .contains("192.168"),
        "no route around a missing egress"
    );

    // No mTLS: no cross-zone endpoint at all.
    let plain: kuma_core::resource::Mesh = serde_json::from_value(json!({})).unwrap();
    let none = crate::xds::view::CrossZone::build(
        "default",
        &plain,
        "zone-1",
        ingresses().iter(),
        egresses().iter(),
    );
    assert!(none.remote.is_empty() && none.egress.is_none());
}

/// Locality awareness puts the remote zones at priority 1; `zoneEgress` replaces them with
/// the local egress (one endpoint per remote zone, weight 1).
#[test]
fn cross_zone_priority_and_egress() {
    let mesh = MtlsMesh::new(false);
    let cla = |cz: &crate::xds::view::CrossZone| -> Value {
        let view = MeshView::rebuild(
            "default",
            "zone-1",
            mesh.others.iter().chain([&mesh.proxy]),
            cz,
            None,
        );
        let mut s = kuma_xds::Snapshot::new();
        s.insert(view.endpoints("backend"));
        let json = kuma_xds::json::snapshot_to_json(&s);
        json.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_array()
            .unwrap()[0]
            .clone()
    };
    let aware = cla(&cross(json!({"localityAwareLoadBalancing": true})));
    let priorities: Vec<(String, u64)> = aware["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["locality"]["zone"].as_str().unwrap().to_string(),
                l["priority"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        priorities,
        [
            ("zone-1".to_string(), 0),
            ("zone-2".to_string(), 1),
            ("zone-3".to_string(), 1)
        ]
    );
    let via_egress = cla(&cross(json!({"zoneEgress": true})));
    let remote: Vec<String> = via_egress["endpoints"].as_array().unwrap()[1..]
        .iter()
        .map(|l| l["lb_endpoints"].to_string())
        .collect();
    assert_eq!(remote.len(), 2, "{via_egress}");
    for eps in remote {
        assert!(
            eps.contains("10.1.0.9") && eps.contains("10002"),
            "{via_egress}"
        );
        assert!(eps.contains("\"load_balancing_weight\":1"), "{eps}");
    }
}

/// The ingress of zone-1 serves only the meshes with mTLS: one SNI chain per service with
/// local endpoints, TLS passed through to cluster `<mesh>:<service>`.
#[test]
fn ingress_sni_chains_per_mtls_service() {
    let mesh = MtlsMesh::new(false);
    let with_mtls = Arc::new(mesh.view(0));
    let without = Arc::new(MeshView::build(
        "plain",
        "zone-1",
        [server(7, "hidden", None)].iter(),
    ));
    let zi = &ingresses()[4];
    let snap = super::ingress::generate(zi, &[without, with_mtls]);
    let text = rendered(&snap);
    assert!(!text.contains("hidden"), "{text}");
    assert_golden("generator/ingress.golden.json", &text);
    // Nothing to serve: no listener (Envoy refuses one without filter chains).
    let empty = super::ingress::generate(zi, &[]);
    assert!(rendered(&empty).trim() == "{}" || !rendered(&empty).contains("inbound:"));
}

/// The egress of zone-1: one SNI chain per service reachable in other zones, its cluster
/// pointing at the remote ingresses.
#[test]
fn egress_sni_chains_to_remote_ingresses() {
    let mesh = MtlsMesh::new(false);
    let view = Arc::new(
        MeshView::rebuild(
            "default",
            "zone-1",
            mesh.others.iter().chain([&mesh.proxy]),
            &cross(json!({"zoneEgress": true})),
            None,
        )
        .with_mtls(mesh.mtls.clone()),
    );
    let snap = super::egress::generate(&egresses()[0], &[view]);
    let text = rendered(&snap);
    assert!(
        text.contains("192.168.2.1") && text.contains("192.168.3.1"),
        "{text}"
    );
    assert_golden("generator/egress.golden.json", &text);
}

/// A transparent proxy (`web`, redirect ports 15006/15001, dual stack) in a mesh with VIPs
/// for `backend` (local replicas on 8080) and `remote_svc` (a name with `_`, no local
/// replica): capture listeners and passthrough clusters, unbound inbound and VIP listeners
/// (`<VIP>:80` and `<VIP>:8080` for backend), the application dialled from 127.0.0.6, and
/// the DNS records on the dynamic-config pipe in the work dir (IPv6 answers too).
#[test]
fn transparent_proxy_with_vips_and_dns() {
    let web = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
        "transparentProxying": {"redirectPortInbound": 15006, "redirectPortOutbound": 15001,
                                "ipFamilyMode": "DualStack"}
    }}));
    let backends = [server(2, "backend", Some("http"))];
    let vips = crate::xds::view::Vips {
        services: BTreeMap::from([
            ("backend".to_string(), "240.0.0.0".parse().unwrap()),
            ("remote_svc".to_string(), "240.0.0.1".parse().unwrap()),
            ("web".to_string(), "240.0.0.2".parse().unwrap()),
        ]),
        domain: "mesh".into(),
        port: 80,
        passthrough: true,
    };
    let view = MeshView::build("default", "zone-1", backends.iter().chain([&web])).with_vips(vips);
    let node = crate::xds::lifecycle::NodeInfo {
        workdir: "/tmp/kuma-dp-1".into(),
        dns_port: 15053,
        ipv6: true,
        ..Default::default()
    };
    let labels = BTreeMap::new();
    let generate = |view: &MeshView| {
        super::generate_proxy(
            view,
            &super::Proxy {
                name: "web-1",
                labels: &labels,
                dataplane: &web,
                identity: None,
                node: &node,
            },
        )
    };
    assert_golden(
        "generator/transparent-proxy.golden.json",
        &rendered(&generate(&view)),
    );
    // The records kuma-dp serves, as it parses them.
    let tp = web.transparent_proxying().unwrap();
    let body: Value = serde_json::from_str(&super::transparent::dns_body(&view, tp, true)).unwrap();
    assert_eq!(
        body,
        json!({"records": [
            {"name": "backend.mesh", "ips": ["240.0.0.0", "::ffff:240.0.0.0"]},
            {"name": "remote.svc.mesh", "ips": ["240.0.0.1", "::ffff:240.0.0.1"]},
            {"name": "remote_svc.mesh", "ips": ["240.0.0.1", "::ffff:240.0.0.1"]},
            {"name": "web.mesh", "ips": ["240.0.0.2", "::ffff:240.0.0.2"]}
        ], "ttl": 30, "domain": "mesh"})
    );
    // Without passthrough the outbound capture keeps its listener but loses its cluster.
    let mut closed = view.vips().clone();
    closed.passthrough = false;
    let snap = generate(
        &MeshView::build("default", "zone-1", backends.iter().chain([&web])).with_vips(closed),
    );
    assert!(
        snap.get(kuma_xds::type_url::LISTENER, "outbound:passthrough:ipv4")
            .is_some()
    );
    assert!(
        snap.get(kuma_xds::type_url::CLUSTER, "outbound:passthrough:ipv4")
            .is_none()
    );
    assert!(
        snap.get(kuma_xds::type_url::CLUSTER, "inbound:passthrough:ipv4")
            .is_some()
    );
}

/// The `kuma:envoy:admin` clusters and listener (Kuma's `admin_proxy_generator` golden):
/// plaintext `/ready` only, mTLS with a `kuma-cp` client certificate for every admin path.
#[test]
fn envoy_admin_listener() {
    use super::admin::{Error, resources};
    use crate::envoy_admin::pki::{CertPair, ServerTls};
    use crate::xds::lifecycle::AdminNode;
    let node = AdminNode {
        port: 9901,
        address: "127.0.0.1".into(),
        readiness_port: 9902,
    };
    let tls = ServerTls {
        cert: CertPair {
            cert_pem: "CERT-PEM".into(),
            key_pem: "KEY-PEM".into(),
        },
        ca_pem: "CA-PEM".into(),
        addresses: vec!["192.168.0.1".into()],
    };
    let mut snap = kuma_xds::Snapshot::new();
    for r in resources(&node, "192.168.0.1", Some(&tls)).unwrap() {
        snap.insert(r);
    }
    assert_golden("generator/envoy-admin.golden.json", &rendered(&snap));
    // A proxy on the admin's own address: the clusters, no listener (it would collide).
    let local = resources(&node, "127.0.0.1", Some(&tls)).unwrap();
    let names: Vec<&str> = local.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["kuma:envoy:admin", "kuma:readiness"]);
    // An admin on a wildcard address: its clusters (to 127.0.0.1), no colliding listener.
    for wildcard in ["0.0.0.0", "::"] {
        let any = AdminNode {
            address: wildcard.into(),
            ..node.clone()
        };
        let names: Vec<String> = resources(&any, "192.168.0.1", Some(&tls))
            .unwrap()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(
            names,
            vec!["kuma:envoy:admin", "kuma:readiness"],
            "{wildcard}"
        );
    }
    // No admin port in the metadata: nothing; Kuma's checks of the other two.
    assert!(
        resources(&AdminNode::NONE, "192.168.0.1", Some(&tls))
            .unwrap()
            .is_empty()
    );
    let bad = AdminNode {
        address: "192.168.0.1".into(),
        ..node.clone()
    };
    assert!(matches!(
        resources(&bad, "192.168.0.1", Some(&tls)),
        Err(Error::AdminAddress(_))
    ));
    let no_readiness = AdminNode {
        readiness_port: 0,
        ..node
    };
    assert_eq!(
        resources(&no_readiness, "192.168.0.1", Some(&tls)).unwrap_err(),
        Error::ReadinessPort
    );
}
