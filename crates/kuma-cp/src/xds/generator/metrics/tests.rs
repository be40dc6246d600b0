//! The Prometheus endpoint: goldens `testdata/generator/metrics*.golden.json` (only the
//! `kuma:metrics:*` resources of the snapshot) and Kuma's skip rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use kuma_core::metrics::PrometheusConf;
use kuma_core::resource::Dataplane;
use serde_json::{Value, json};

use super::super::tests::{MtlsMesh, dataplane, rendered};
use super::super::{Proxy, generate_proxy};
use crate::golden::assert_golden;
use crate::xds::lifecycle::NodeInfo;
use crate::xds::view::MeshView;

fn node() -> NodeInfo {
    NodeInfo {
        workdir: "/tmp/kuma-dp-1".into(),
        admin: crate::xds::lifecycle::AdminNode {
            port: 9901,
            address: "127.0.0.1".into(),
            readiness_port: 9902,
        },
        ..Default::default()
    }
}

fn web() -> Dataplane {
    dataplane(json!({"networking": {
        "address": "10.0.0.1",
        "inbound": [{"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web"}}],
        "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}}]
    }}))
}

fn conf(v: Value) -> Option<PrometheusConf> {
    Some(PrometheusConf::parse(Some(&v)).unwrap())
}

/// The `kuma:metrics:*` resources of the snapshot of `dp` (`web-1`), as JSON.
fn metrics_of(view: &MeshView, dp: &Dataplane, node: &NodeInfo, identity: bool) -> Value {
    let labels = BTreeMap::new();
    let proxy = Proxy {
        name: "web-1",
        labels: &labels,
        dataplane: dp,
        identity: identity.then(|| {
            Arc::new(crate::xds::envoy::identity_secret(
                &view.mesh, "CERT-PEM", "KEY-PEM",
            ))
        }),
        node,
    };
    let all: Value = serde_json::from_str(&rendered(&generate_proxy(view, &proxy))).unwrap();
    let mut out = serde_json::Map::new();
    for (kind, list) in all.as_object().unwrap() {
        let mine: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kuma:metrics:"))
            })
            .cloned()
            .collect();
        if !mine.is_empty() {
            out.insert(kind.clone(), Value::Array(mine));
        }
    }
    Value::Object(out)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// Plaintext (mTLS off): one chain, route `<path>` → hijacker with the stats query.
#[test]
fn plaintext_endpoint_with_envoy_filter() {
    let view = MeshView::build("default", "zone-1", [&web()]).with_metrics(conf(json!({
        "port": 5670, "path": "/metrics", "tls": {},
        "envoy": {"filterRegex": "http.*", "usedOnly": true}
    })));
    assert_golden(
        "generator/metrics.golden.json",
        &pretty(&metrics_of(&view, &web(), &node(), false)),
    );
}

/// Mesh mTLS on (activeMTLSBackend): plaintext for the proxy's own address, mTLS with a mesh
/// identity for everyone else.
#[test]
fn mesh_mtls_endpoint_has_an_own_address_chain_and_an_mtls_chain() {
    let mesh = MtlsMesh::new(false);
    let view = mesh.view(1).with_metrics(conf(
        json!({"port": 1234, "path": "/non-standard-path", "tls": {}}),
    ));
    assert_golden(
        "generator/metrics-mtls.golden.json",
        &pretty(&metrics_of(&view, &mesh.proxy, &node(), true)),
    );
    // skipMTLS / disabled: plaintext only, even with mTLS on.
    for c in [
        json!({"port": 1234, "skipMTLS": true}),
        json!({"port": 1234, "tls": {"mode": "disabled"}}),
    ] {
        let view = mesh.view(1).with_metrics(conf(c));
        let got = metrics_of(&view, &mesh.proxy, &node(), true);
        let chains = &got["listeners"][0]["filter_chains"];
        assert_eq!(chains.as_array().unwrap().len(), 1, "{got}");
        assert!(chains[0].get("transport_socket").is_none(), "{got}");
    }
}

/// providedTLS: the certificate files from kuma-dp; without them, plaintext.
#[test]
fn provided_tls_uses_kuma_dps_files_or_falls_back_to_plaintext() {
    let view = MeshView::build("default", "zone-1", [&web()])
        .with_metrics(conf(json!({"tls": {"mode": "providedTLS"}})));
    let with_files = NodeInfo {
        metrics_cert_path: "/path/cert".into(),
        metrics_key_path: "/path/key".into(),
        ..node()
    };
    let got = metrics_of(&view, &web(), &with_files, false);
    let chains = got["listeners"][0]["filter_chains"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0]["filter_chain_match"]["transport_protocol"], "tls");
    let certs =
        &chains[1]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0];
    assert_eq!(certs["certificate_chain"]["filename"], "/path/cert");
    assert_eq!(certs["private_key"]["filename"], "/path/key");
    let got = metrics_of(&view, &web(), &node(), false);
    let chains = got["listeners"][0]["filter_chains"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(chains.len(), 1);
    assert!(chains[0].get("transport_socket").is_none());
}

/// Kuma's skip rules: no backend, admin port 0, a port taken by an inbound (proxy or
/// workload port) or an outbound. Removing the backend removes both resources.
#[test]
fn skip_rules() {
    let has = |view: &MeshView, dp: &Dataplane, node: &NodeInfo| {
        let got = metrics_of(view, dp, node, false);
        let n = got
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_array().unwrap().len())
            .sum::<usize>();
        assert!(n == 0 || n == 2, "{got}");
        n == 2
    };
    let with = |port: u32| {
        MeshView::build("default", "zone-1", [&web()]).with_metrics(conf(json!({"port": port})))
    };
    assert!(has(&with(5670), &web(), &node()));
    assert!(!has(
        &MeshView::build("default", "zone-1", [&web()]),
        &web(),
        &node()
    ));
    // A Dataplane override alone enables nothing.
    let own = dataplane(json!({"networking": {"address": "10.0.0.1"},
        "metrics": {"type": "prometheus", "conf": {"port": 5670}}}));
    assert!(!has(
        &MeshView::build("default", "zone-1", [&own]),
        &own,
        &node()
    ));
    assert!(!has(
        &with(5670),
        &web(),
        &NodeInfo {
            admin: crate::xds::lifecycle::AdminNode::NONE,
            ..node()
        }
    ));
    for taken in [8080, 80] {
        assert!(!has(&with(taken), &web(), &node()), "port {taken}");
    }
    // The outbound listens on 127.0.0.1, not the proxy's address: no overlap (as Kuma);
    // an outbound on 0.0.0.0 overlaps every address.
    assert!(has(&with(10001), &web(), &node()));
    let wide = dataplane(json!({"networking": {"address": "10.0.0.1",
        "outbound": [{"port": 10001, "address": "0.0.0.0", "tags": {"kuma.io/service": "backend"}}]}}));
    assert!(!has(&with(10001), &wide, &node()));
    // The Dataplane's port wins over the Mesh's.
    let over = dataplane(json!({"networking": {"address": "10.0.0.1"},
        "metrics": {"type": "prometheus", "conf": {"port": 6000, "path": "/stats"}}}));
    let got = metrics_of(&with(5670), &over, &node(), false);
    let l = &got["listeners"][0];
    assert_eq!(l["address"]["socket_address"]["port_value"], 6000);
    let text = l.to_string();
    assert!(text.contains(r#""prefix":"/stats""#), "{text}");
    let pipe = &got["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["pipe"]["path"];
    assert_eq!(pipe, "/tmp/kuma-dp-1/kuma-mh-web-1-default.sock");
}
