//! Golden files of the Envoy bootstrap: `testdata/bootstrap/<case>.golden.yaml`, with a fixed
//! CA (`testdata/bootstrap/ca.pem`, a real certificate so `envoy --mode validate` accepts the
//! files). Run with `UPDATE_GOLDEN=1` to rewrite them after an intended change; otherwise any
//! drift fails, naming the file.

use crate::golden::assert_golden;
use chrono::{TimeZone, Utc};
use kuma_core::resource::{Resource, ResourceType};
use serde_json::json;

use super::{Params, Request, envoy_bootstrap};

const CA: &str = include_str!("../../testdata/bootstrap/ca.pem");

fn params(xds_host: &str) -> Params {
    Params {
        admin_address: "127.0.0.1".into(),
        admin_port: 9901,
        xds_host: xds_host.into(),
        xds_port: 5678,
        xds_connect_timeout: "1s".into(),
        ca_pem: CA.into(),
    }
}

/// `web-1` of mesh `default`, with fixed timestamps (they are part of node metadata).
fn dataplane() -> Resource {
    let mut r = Resource::from_wire(
        json!({"type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {
            "address": "10.0.0.1",
            "inbound": [{"port": 8080, "servicePort": 80,
                         "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}}],
            "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
        }}),
        Some(ResourceType::Dataplane),
    )
    .unwrap();
    let t = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
    r.meta.creation_time = t;
    r.meta.modification_time = t;
    r
}

fn request() -> Request {
    Request {
        mesh: "default".into(),
        name: "web-1".into(),
        proxy_type: "dataplane".into(),
        version: json!({"kumaDp": {"version": "2.9.0"}, "envoy": {"version": "1.34.1"}}),
        workdir: "/tmp/kuma-dp".into(),
        readiness_port: 9902,
        ..Default::default()
    }
}

/// The xDS host is an IP: a STATIC cluster, no SNI, IP SAN; a dataplane token; SotW.
#[test]
fn ip_xds_host() {
    let req = Request {
        dataplane_token: "token-123\n".into(),
        ..request()
    };
    let yaml = envoy_bootstrap(&params(""), &req, &dataplane(), "192.168.0.10").unwrap();
    assert_golden("bootstrap/ip.golden.yaml", &yaml);
}

/// The xDS host is a DNS name (configured, overriding the request host): a STRICT_DNS
/// cluster, SNI and DNS SAN; delta xDS and dynamic metadata.
#[test]
fn dns_xds_host() {
    let req = Request {
        features: vec!["feature-delta-grpc".into()],
        dynamic_metadata: json!({"app": "web"}),
        ..request()
    };
    let yaml = envoy_bootstrap(
        &params("kuma-cp.kuma-system"),
        &req,
        &dataplane(),
        "10.0.0.100",
    )
    .unwrap();
    assert_golden("bootstrap/dns.golden.yaml", &yaml);
}

/// `kumaSidecarConfiguration.metrics.aggregate`: the effective entries (Mesh's merged with
/// the Dataplane's by name), `enabled: false` left out, the address defaulted to the
/// Dataplane's; empty without a Mesh backend.
#[test]
fn metrics_aggregate_from_the_effective_config() {
    let mut mesh: kuma_core::resource::Mesh = serde_json::from_value(json!({"metrics": {
        "enabledBackend": "prom",
        "backends": [{"name": "prom", "type": "prometheus", "conf": {"aggregate": [
            {"name": "app", "port": 8000, "path": "/metrics"},
            {"name": "off", "port": 8001, "path": "/x"}
        ]}}]
    }}))
    .unwrap();
    mesh.apply_defaults();
    let dp: kuma_core::resource::Dataplane = serde_json::from_value(json!({
        "networking": {"address": "10.0.0.7"},
        "metrics": {"type": "prometheus", "conf": {"aggregate": [
            {"name": "off", "enabled": false},
            {"name": "side", "port": 9000, "path": "/s", "address": "127.0.0.1"}
        ]}}
    }))
    .unwrap();
    assert_eq!(
        super::aggregate_json(&mesh, &dp),
        vec![
            json!({"name": "app", "address": "10.0.0.7", "port": 8000, "path": "/metrics"}),
            json!({"name": "side", "address": "127.0.0.1", "port": 9000, "path": "/s"}),
        ]
    );
    assert!(super::aggregate_json(&kuma_core::resource::Mesh::default(), &dp).is_empty());
}
