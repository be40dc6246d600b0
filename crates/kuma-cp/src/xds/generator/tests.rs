//! Golden files of the generated Envoy configuration: `testdata/generator/<case>.golden.json`,
//! the snapshot of one proxy as proto3 JSON with every nested `Any` expanded (as Envoy's
//! `/config_dump` shows it). Run with `UPDATE_GOLDEN=1` to rewrite them after an intended
//! change; otherwise any drift fails, naming the file.

use crate::golden::assert_golden;
use kuma_core::resource::Dataplane;
use serde_json::{Value, json};

use super::generate;
use crate::xds::view::MeshView;

fn dataplane(spec: Value) -> Dataplane {
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
    let json = kuma_xds::json::snapshot_to_json(&generate(&view, proxy));
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    assert!(!text.contains("@error"), "unrenderable resource:\n{text}");
    assert_golden(&format!("generator/{case}.golden.json"), &text);
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

/// mTLS on: SDS secrets, TLS on inbound chains with RBAC (HTTP and TCP), TLS with SNI on
/// outbound clusters; PERMISSIVE adds the plaintext and passthrough chains.
fn check_mtls(case: &str, permissive: bool) {
    use std::sync::Arc;

    use crate::ca;
    use crate::xds::view::Mtls;

    let proxy = dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [
            {"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http", "team": "a"}},
            {"port": 9090, "servicePort": 90, "tags": {"kuma.io/service": "web-tcp"}}
        ],
        "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
    }}));
    let others = [server(2, "backend", Some("http"))];
    let (cert, key) = ca::generate_root("default", ca::DEFAULT_ROOT_LIFETIME).unwrap();
    let mtls = Mtls {
        backend: "ca-1".into(),
        permissive,
        // Fixed PEM text keeps the golden stable; the generator only places it.
        ca_secret: Arc::new(super::ca_secret("default", "CA-PEM")),
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
    let view = MeshView::build("default", "zone-1", others.iter().chain([&proxy]))
        .with_mtls(mtls)
        .with_policies(policies);
    let labels = Default::default();
    let snap = super::generate_proxy(
        &view,
        &super::Proxy {
            name: "web-1",
            labels: &labels,
            dataplane: &proxy,
            identity: Some(Arc::new(super::identity_secret(
                "default", "CERT-PEM", "KEY-PEM",
            ))),
        },
    );
    let json = kuma_xds::json::snapshot_to_json(&snap);
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    assert!(!text.contains("@error"), "unrenderable resource:\n{text}");
    assert_golden(&format!("generator/{case}.golden.json"), &text);
}

#[test]
fn mtls_strict_with_permissions() {
    check_mtls("mtls-strict", false);
}

#[test]
fn mtls_permissive_with_permissions() {
    check_mtls("mtls-permissive", true);
}
