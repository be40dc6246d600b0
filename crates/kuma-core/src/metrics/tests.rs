use serde_json::json;

use super::*;
use crate::resource::dataplane::Dataplane;
use crate::resource::mesh::Mesh;

fn mesh(metrics: Value) -> Mesh {
    let mut m: Mesh = serde_json::from_value(json!({ "metrics": metrics })).unwrap();
    m.apply_defaults();
    m
}

fn prom_mesh(conf: Value) -> Mesh {
    mesh(json!({
        "enabledBackend": "prom",
        "backends": [{"name": "prom", "type": "prometheus", "conf": conf}]
    }))
}

fn dp(v: Value) -> Dataplane {
    serde_json::from_value(v).unwrap()
}

fn plain_dp() -> Dataplane {
    dp(json!({"networking": {"address": "10.0.0.1", "inbound": [
        {"port": 8080, "tags": {"kuma.io/service": "backend"}}
    ]}}))
}

fn dp_with_metrics(conf: Value) -> Dataplane {
    dp(json!({
        "networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "backend"}}
        ]},
        "metrics": {"type": "prometheus", "conf": conf}
    }))
}

#[test]
fn no_enabled_backend_means_no_metrics_even_with_a_dataplane_override() {
    // Kuma's generator test "Dataplane has Prometheus configuration while Mesh doesn't".
    let m = mesh(json!({"backends": [{"name": "prom", "type": "prometheus"}]}));
    assert_eq!(effective(&m, &dp_with_metrics(json!({"port": 1234}))), None);
    assert_eq!(effective(&Mesh::default(), &plain_dp()), None);
}

#[test]
fn mesh_defaults_are_in_effect() {
    let c = effective(&prom_mesh(json!({})), &plain_dp()).unwrap();
    assert_eq!(c.port, 5670);
    assert_eq!(c.path, "/metrics");
    assert_eq!(c.tls_mode(), TlsMode::ActiveMTLSBackend);
    assert!(c.mesh_mtls(true));
    assert!(!c.mesh_mtls(false));
    assert_eq!(c.scheme(), "http");
    assert_eq!(c.stats_path(), "/");
}

#[test]
fn dataplane_scalars_win_and_tags_merge() {
    let m = prom_mesh(json!({"port": 1234, "path": "/m", "tags": {"a": "1", "b": "2"}}));
    let c = effective(
        &m,
        &dp_with_metrics(json!({"path": "/metrics/overridden", "tags": {"b": "3"}})),
    )
    .unwrap();
    assert_eq!(c.port, 1234);
    assert_eq!(c.path, "/metrics/overridden");
    assert_eq!(
        c.tags,
        BTreeMap::from([("a".into(), "1".into()), ("b".into(), "3".into())])
    );
    let c = effective(
        &m,
        &dp_with_metrics(json!({"port": 5555, "path": "/stats"})),
    )
    .unwrap();
    assert_eq!((c.port, c.path.as_str()), (5555, "/stats"));
}

#[test]
fn a_dataplane_of_another_type_is_ignored() {
    let m = prom_mesh(json!({"port": 1234}));
    let d = dp(json!({
        "networking": {"address": "10.0.0.1"},
        "metrics": {"type": "other", "conf": {"port": 9}}
    }));
    assert_eq!(effective(&m, &d).unwrap().port, 1234);
}

#[test]
fn tls_enum_zero_does_not_override_and_skip_mtls_does_not_beat_defaulted_tls() {
    // Mesh `disabled`, Dataplane asks activeMTLSBackend (enum 0): stays disabled.
    let m = prom_mesh(json!({"tls": {"mode": "disabled"}}));
    let c = effective(
        &m,
        &dp_with_metrics(json!({"tls": {"mode": "activeMTLSBackend"}})),
    )
    .unwrap();
    assert_eq!(c.tls_mode(), TlsMode::Disabled);
    assert!(!c.mesh_mtls(true));
    // Mesh defaulted `tls: {}`; Dataplane `skipMTLS: true` does not turn mTLS off (tls wins).
    let m = prom_mesh(json!({}));
    let c = effective(&m, &dp_with_metrics(json!({"skipMTLS": true}))).unwrap();
    assert_eq!(c.skip_mtls, Some(true));
    assert!(c.mesh_mtls(true));
    // Dataplane providedTLS wins over the Mesh's default.
    let c = effective(
        &m,
        &dp_with_metrics(json!({"tls": {"mode": "providedTLS"}})),
    )
    .unwrap();
    assert_eq!(c.tls_mode(), TlsMode::ProvidedTLS);
    assert_eq!(c.scheme(), "https");
    assert!(!c.mesh_mtls(true));
}

#[test]
fn wrapped_booleans_turn_on_but_not_off() {
    let m = prom_mesh(json!({"skipMTLS": true, "envoy": {"usedOnly": true}}));
    let c = effective(
        &m,
        &dp_with_metrics(
            json!({"skipMTLS": false, "envoy": {"usedOnly": false, "filterRegex": "x.*"}}),
        ),
    )
    .unwrap();
    assert_eq!(c.skip_mtls, Some(true));
    let e = c.envoy.clone().unwrap();
    assert_eq!((e.filter_regex.as_str(), e.used_only), ("x.*", Some(true)));
    assert_eq!(c.stats_path(), "/?filter=x.*&usedonly");
}

#[test]
fn stats_path_follows_kumas_quirks() {
    let with = |envoy: Value| {
        effective(&prom_mesh(json!({"envoy": envoy})), &plain_dp())
            .unwrap()
            .stats_path()
    };
    assert_eq!(with(json!({})), "/");
    assert_eq!(with(json!({"usedOnly": true})), "/?usedonly");
    assert_eq!(with(json!({"filterRegex": "123.*"})), "/?filter=123.*&");
    assert_eq!(
        with(json!({"filterRegex": "123.*", "usedOnly": true})),
        "/?filter=123.*&usedonly"
    );
}

#[test]
fn aggregate_entries_are_replaced_by_name() {
    let m = prom_mesh(json!({"aggregate": [
        {"name": "a", "port": 1, "path": "/a"},
        {"name": "b", "port": 2, "path": "/b", "address": "10.9.9.9"}
    ]}));
    let c = effective(
        &m,
        &dp_with_metrics(json!({"aggregate": [
            {"name": "a", "enabled": false},
            {"name": "c", "port": 3, "path": "/c"}
        ]})),
    )
    .unwrap();
    let names: Vec<_> = c.aggregate.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    // The replaced `a` is the Dataplane's whole entry (no port inherited).
    assert_eq!(c.aggregate[0].port, 0);
    let enabled = c.enabled_aggregates("10.0.0.1");
    let got: Vec<_> = enabled
        .iter()
        .map(|a| (a.name.as_str(), a.address.as_str(), a.port, a.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [("b", "10.9.9.9", 2, "/b"), ("c", "10.0.0.1", 3, "/c")]
    );
}

#[test]
fn an_undecodable_dataplane_conf_gives_nothing() {
    let m = prom_mesh(json!({}));
    assert_eq!(effective(&m, &dp_with_metrics(json!({"port": "x"}))), None);
}

#[test]
fn quoted_numbers_and_nulls_decode_as_kuma_does() {
    let c = PrometheusConf::parse(Some(
        &json!({"port": "1234", "path": null, "tls": {"mode": 2}}),
    ))
    .unwrap();
    assert_eq!(
        (c.port, c.path.as_str(), c.tls_mode()),
        (1234, "", TlsMode::Disabled)
    );
}

#[test]
fn hijacker_socket_path_is_kumas() {
    assert_eq!(
        hijacker_socket_path("/tmp", "backend-01", "demo"),
        "/tmp/kuma-mh-backend-01-demo.sock"
    );
    assert_eq!(
        hijacker_socket_path("/tmp/", "backend-01", "demo"),
        "/tmp/kuma-mh-backend-01-demo.sock"
    );
    let long = "x".repeat(120);
    let p = hijacker_socket_path("/work", &long, "default");
    assert_eq!(p.len(), 98 + ".sock".len());
    assert!(p.starts_with("/work/kuma-mh-xxx") && p.ends_with("x.sock"));
}

#[test]
fn labels_have_singular_and_plural_forms() {
    let d = dp(json!({"networking": {"address": "10.0.0.1", "inbound": [
        {"port": 1, "tags": {"kuma.io/service": "web", "version": "v2", "kuma.io/zone": "z1"}},
        {"port": 2, "tags": {"kuma.io/service": "api", "version": "v1"}}
    ]}}));
    let l = dataplane_labels(&d);
    let want: BTreeMap<String, String> = [
        ("kuma_io_service", "api"),
        ("kuma_io_services", ",api,web,"),
        ("kuma_io_zone", "z1"),
        ("kuma_io_zones", ",z1,"),
        ("version", "v1"),
        ("versions", ",v1,v2,"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(l, want);
    assert_eq!(sanitize_label_name("a.b/c-d_e9"), "a_b_c_d_e9");
}

#[test]
fn target_uses_the_advertised_address_brackets_ipv6_and_names_the_zone() {
    let conf = effective(&prom_mesh(json!({"port": 1234})), &plain_dp()).unwrap();
    let d = dp(
        json!({"networking": {"address": "10.0.0.1", "advertisedAddress": "192.168.1.1",
        "inbound": [{"port": 1, "tags": {"kuma.io/service": "web", "kuma.io/zone": "east"}}]}}),
    );
    let t = Target::new("m", "dp-1", &BTreeMap::new(), &d, &conf, "default");
    assert_eq!(t.address, "192.168.1.1:1234");
    assert_eq!(t.zone.as_deref(), Some("east"));
    assert_eq!(t.assignment_name(), "/meshes/m/dataplanes/dp-1");
    let d6 = dp(json!({"networking": {"address": "fd00::1",
        "inbound": [{"port": 1, "tags": {"kuma.io/service": "web"}}]}}));
    let t = Target::new("m", "dp-2", &BTreeMap::new(), &d6, &conf, "");
    assert_eq!(t.address, "[fd00::1]:1234");
    assert_eq!(t.zone, None);
    let labels = BTreeMap::from([("kuma.io/zone".to_string(), "west".to_string())]);
    let t = Target::new("m", "dp-2", &labels, &d6, &conf, "default");
    assert_eq!(t.zone.as_deref(), Some("west"));
    let t = Target::new("m", "dp-2", &BTreeMap::new(), &d6, &conf, "default");
    assert_eq!(t.zone.as_deref(), Some("default"));
    let sd = t.http_sd_labels();
    let keys: Vec<_> = sd.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "__meta_kuma_dataplane",
            "__meta_kuma_label_kuma_io_service",
            "__meta_kuma_label_kuma_io_services",
            "__meta_kuma_mesh",
            "__meta_kuma_service",
            "__meta_kuma_zone",
            "__metrics_path__",
            "__scheme__"
        ]
    );
    assert_eq!(sd["__meta_kuma_service"], "web");
    assert_eq!(sd["__metrics_path__"], "/metrics");
    assert_eq!(sd["__scheme__"], "http");
}

#[test]
fn a_gateway_without_inbounds_is_identified_by_its_tags() {
    let conf = effective(&prom_mesh(json!({})), &plain_dp()).unwrap();
    let d = dp(json!({"networking": {"address": "10.0.0.2",
        "gateway": {"tags": {"kuma.io/service": "edge"}}}}));
    let t = Target::new("m", "gw", &BTreeMap::new(), &d, &conf, "");
    assert_eq!(t.service, "edge");
    assert_eq!(t.labels["kuma_io_services"], ",edge,");
    let none = dp(json!({"networking": {"address": "10.0.0.3"}}));
    assert_eq!(
        Target::new("m", "x", &BTreeMap::new(), &none, &conf, "").service,
        "unknown"
    );
}
