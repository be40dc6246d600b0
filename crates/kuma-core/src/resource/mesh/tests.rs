//! Kuma's Mesh validator cases (the table of `mesh_validator_test.go`, v2.14.3, written
//! again here as our own documents), plus the grammar helpers.

use serde_json::json;

use super::*;

fn mesh(yaml: &str) -> Mesh {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not a Mesh: {e}\n{yaml}"))
}

fn violations(yaml: &str) -> Vec<(String, String)> {
    match mesh(yaml).validate() {
        Ok(()) => Vec::new(),
        Err(e) => e
            .violations
            .into_iter()
            .map(|v| (v.field, v.message))
            .collect(),
    }
}

#[track_caller]
fn rejected(yaml: &str, want: &[(&str, &str)]) {
    let got = violations(yaml);
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want, "\n{yaml}");
}

#[track_caller]
fn accepted(yaml: &str) {
    assert_eq!(violations(yaml), Vec::new(), "\n{yaml}");
}

const FULL: &str = r#"
mtls:
  enabledBackend: builtin-1
  backends:
  - name: builtin-1
    type: builtin
    dpCert:
      rotation:
        expiration: 2y
logging:
  defaultBackend: tcp-1
  backends:
  - {name: file-1, type: file, conf: {path: /var/log/a}}
  - {name: file-2, type: file, format: '%START_TIME% %KUMA_SOURCE_SERVICE%', conf: {path: /var/log/b}}
  - {name: tcp-1, type: tcp, conf: {address: "kibana:1234"}}
  - {name: tcp-2, type: tcp, format: '%START_TIME%', conf: {address: "kibana:1234"}}
tracing:
  defaultBackend: zipkin-us
  backends:
  - name: zipkin-us
    type: zipkin
    sampling: 80.0
    conf: {url: "http://zipkin.local:9411/v2/spans", traceId128bit: true, apiVersion: httpProto, sharedSpanContext: true}
  - name: zipkin-eu
    type: zipkin
    conf: {url: "http://zipkin.eu:9411/v2/spans"}
metrics:
  enabledBackend: prom-1
  backends:
  - name: prom-1
    type: prometheus
    conf:
      port: 5670
      path: /metrics
      envoy: {filterRegex: "^server[0-9]+", usedOnly: true}
      aggregate:
      - {name: application, port: 1234, path: /stats}
      - {name: sidecar, port: 12345, path: /stats/sidecar}
      TLS_PLACEHOLDER
constraints:
  dataplaneProxy:
    requirements:
    - tags: {k8s.kuma.io/namespace: ns-1, kuma.io/zone: east}
    restrictions:
    - tags: {k8s.kuma.io/namespace: ns-1, kuma.io/zone: west}
routing:
  zoneEgress: true
"#;

#[test]
fn accepts_every_section_configured() {
    accepted(&FULL.replace("TLS_PLACEHOLDER", "tls: {mode: providedTLS}"));
    accepted(&FULL.replace("TLS_PLACEHOLDER", "skipMTLS: false"));
}

#[test]
fn mtls_backends() {
    rejected(
        "mtls:\n  enabledBackend: backend-1\n  backends:\n  - {name: backend-1, type: builtin}\n  - {name: backend-1, type: builtin}",
        &[
            ("mtls.backends", "cannot have more than 1 backends"),
            (
                "mtls.backends[1].name",
                "\"backend-1\" name is already used for another backend",
            ),
        ],
    );
    rejected(
        "mtls: {enabledBackend: backend-2, backends: [{name: backend-1, type: builtin}]}",
        &[(
            "mtls.enabledBackend",
            "has to be set to one of the backends in the mesh",
        )],
    );
    rejected(
        "mtls: {enabledBackend: b3, backends: [{name: b3, type: builtin, dpCert: {rotation: {expiration: 2e}}}]}",
        &[(
            "mtls.dpcert.rotation.expiration",
            "has to be a valid format",
        )],
    );
    // Any dpCert is checked, an empty one too; `1d` is fine.
    rejected(
        "mtls: {backends: [{name: b3, type: builtin, dpCert: {}}]}",
        &[(
            "mtls.dpcert.rotation.expiration",
            "has to be a valid format",
        )],
    );
    accepted(
        "mtls: {enabledBackend: b, backends: [{name: b, type: builtin, dpCert: {rotation: {expiration: 1d}}}]}",
    );
    // Not validated by Kuma's Mesh validator: empty names, types, skipValidation, rootChain.
    accepted(
        "mtls: {skipValidation: true, backends: [{type: whatever, rootChain: {requestTimeout: 10s}}]}",
    );
}

#[test]
fn logging_backends() {
    rejected(
        "logging:\n  backends:\n  - name:\n    type: tcp\n    conf: {address: 'kibana:1234'}",
        &[("logging.backends[0].name", "cannot be empty")],
    );
    rejected(
        "logging:\n  defaultBackend: backend-1\n  backends:\n  - {name: backend-1, type: tcp, conf: {address: 'kibana:1234'}}\n  - {name: backend-1, type: file, conf: {path: /path/to/file}}",
        &[(
            "logging.backends[1].name",
            "\"backend-1\" name is already used for another backend",
        )],
    );
    rejected(
        "logging:\n  defaultBackend: backend-1\n  backends:\n  - name: backend-1\n    type: tcp\n    conf:\n      address:",
        &[("logging.backends[0].config.address", "cannot be empty")],
    );
    rejected(
        "logging: {defaultBackend: backend-1, backends: [{name: backend-1, type: tcp, conf: {address: 'wrong-format:234:234'}}]}",
        &[(
            "logging.backends[0].config.address",
            "has to be in format of HOST:PORT",
        )],
    );
    rejected(
        "logging:\n  defaultBackend: backend-1\n  backends:\n  - name: backend-1\n    type: file\n    conf:\n      path:",
        &[("logging.backends[0].config.path", "cannot be empty")],
    );
    rejected(
        "logging: {defaultBackend: non-existing-backend, backends: [{name: backend-1, type: file, conf: {path: /x}}]}",
        &[(
            "logging.defaultBackend",
            "has to be set to one of the logging backend in mesh",
        )],
    );
    // A conf of the wrong shape cannot be converted.
    let got = violations("logging: {backends: [{name: a, type: file, conf: {path: [1]}}]}");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "logging.backends[0].config");
    assert!(got[0].1.starts_with("could not parse config: "), "{got:?}");
    accepted("logging: {backends: [{name: a, type: tcp, conf: {address: '[::1]:514'}}]}");
}

#[test]
fn tracing_backends() {
    rejected(
        "tracing:\n  backends:\n  - name:\n    type: zipkin\n    conf: {url: 'http://zipkin.local:9411/v2/spans'}",
        &[("tracing.backends[0].name", "cannot be empty")],
    );
    rejected(
        "tracing:\n  backends:\n  - {name: zipkin-us, type: zipkin, conf: {url: 'http://zipkin.local:9411/v2/spans'}}\n  - {name: zipkin-us, type: zipkin, conf: {url: 'http://zipkin.local:9411/v2/spans'}}",
        &[(
            "tracing.backends[1].name",
            "\"zipkin-us\" name is already used for another backend",
        )],
    );
    rejected(
        "tracing: {backends: [{name: z, type: zipkin, sampling: 100.1, conf: {url: 'http://zipkin.local:9411/v2/spans'}}]}",
        &[(
            "tracing.backends[0].sampling",
            "has to be in [0.0 - 100.0] range",
        )],
    );
    rejected(
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: ''}}]}",
        &[("tracing.backends[0].config.url", "cannot be empty")],
    );
    rejected(
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: invalid-url}}]}",
        &[("tracing.backends[0].config.url", "invalid URL")],
    );
    rejected(
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: 'http://zipkin-us.local/v2/spans'}}]}",
        &[(
            "tracing.backends[0].config.url",
            "port has to be explicitly specified",
        )],
    );
    rejected(
        "tracing: {backends: [{name: z, type: zipkin, conf: {url: 'http://zipkin.local:9411/v2/spans', apiVersion: invalid}}]}",
        &[(
            "tracing.backends[0].config.apiVersion",
            "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto",
        )],
    );
    rejected(
        "tracing: {defaultBackend: non-existent, backends: [{name: z, type: zipkin, conf: {url: 'http://zipkin.local:9411/v2/spans'}}]}",
        &[(
            "tracing.defaultBackend",
            "has to be set to one of the tracing backend in mesh",
        )],
    );
    rejected(
        "tracing: {backends: [{name: dd, type: datadog, conf: {port: 70000}}]}",
        &[
            ("tracing.backends[0].config.address", "cannot be empty"),
            (
                "tracing.backends[0].config.port",
                "port must be in the range [1, 65535]",
            ),
        ],
    );
    accepted(
        "tracing: {backends: [{name: dd, type: datadog, sampling: 0, conf: {address: 127.0.0.1, port: 8126, splitService: true}}]}",
    );
}

#[test]
fn metrics_backends() {
    rejected(
        "metrics:\n  backends:\n  - {name: backend-1, type: prometheus}\n  - {name: backend-1, type: prometheus}",
        &[(
            "metrics.backends[1].name",
            "\"backend-1\" name is already used for another backend",
        )],
    );
    rejected(
        "metrics: {enabledBackend: backend-2, backends: [{name: backend-1, type: prometheus}]}",
        &[(
            "metrics.enabledBackend",
            "has to be set to one of the backends in the mesh",
        )],
    );
    rejected(
        "metrics:\n  backends:\n  - name: backend-1\n    type: prometheus\n    conf:\n      aggregate: [{name: app}, {name: app}, {name: sidecar}, {name: sidecar}]\n  - name: backend-2\n    type: prometheus\n    conf:\n      aggregate: [{name: app}, {name: app}]",
        &[
            (
                "metrics.backends[0].conf.aggregate[1].name",
                "duplicate entry: app, values have to be unique",
            ),
            (
                "metrics.backends[0].conf.aggregate[3].name",
                "duplicate entry: sidecar, values have to be unique",
            ),
            (
                "metrics.backends[1].conf.aggregate[1].name",
                "duplicate entry: app, values have to be unique",
            ),
        ],
    );
    for (skip, mode) in [
        (true, "providedTLS"),
        (false, "providedTLS"),
        (false, "disabled"),
        (true, "activeMTLSBackend"),
    ] {
        rejected(
            &format!(
                "metrics: {{backends: [{{name: b, type: prometheus, conf: {{skipMTLS: {skip}, tls: {{mode: {mode}}}}}}}]}}"
            ),
            &[(
                "metrics.backends[0].conf",
                "skipMTLS and tls configuration cannot be defined together",
            )],
        );
    }
    for (skip, mode) in [(false, "activeMTLSBackend"), (true, "disabled")] {
        accepted(&format!(
            "metrics: {{backends: [{{name: b, type: prometheus, conf: {{skipMTLS: {skip}, tls: {{mode: {mode}}}}}}}]}}"
        ));
    }
    let got = violations(
        "metrics: {backends: [{name: b, type: prometheus, conf: {envoy: {filterRegex: '('}}}]}",
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "metrics.backends[0].conf.envoy.filterRegex");
    assert!(
        got[0].1.starts_with("provided regexp isn't correct: "),
        "{got:?}"
    );
}

#[test]
fn unknown_backend_types_in_logging_tracing_and_metrics() {
    rejected(
        "metrics: {backends: [{name: b, type: xxx}]}\nlogging: {backends: [{name: b, type: xxx}]}\ntracing: {backends: [{name: b, type: xxx}]}",
        &[
            (
                "logging.backends[0].type",
                "unknown backend type. Available backends: \"tcp\", \"file\"",
            ),
            (
                "tracing.backends[0].type",
                "unknown backend type. Available backends: \"zipkin\", \"datadog\"",
            ),
            (
                "metrics.backends[0].type",
                "unknown backend type. Available backends: \"prometheus\"",
            ),
        ],
    );
}

#[test]
fn constraints_tags() {
    let name_msg =
        "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores";
    let value_msg = "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"";
    let mut want = Vec::new();
    for list in ["requirements", "restrictions"] {
        let p = format!("constraints.dataplaneProxy.{list}");
        want.extend([
            (format!("{p}[0].tags"), "must have at least one tag"),
            (format!("{p}[1].tags"), "tag name must be non-empty"),
            (format!("{p}[1].tags[\"\"]"), "tag value must be non-empty"),
            (format!("{p}[2].tags[\"!@#$\"]"), name_msg),
            (format!("{p}[2].tags[\"!@#$\"]"), value_msg),
        ]);
    }
    let want: Vec<(&str, &str)> = want.iter().map(|(f, m)| (f.as_str(), *m)).collect();
    rejected(
        "constraints:\n  dataplaneProxy:\n    requirements:\n    - tags: {}\n    - tags: {'': ''}\n    - tags: {'!@#$': '!@#$'}\n    restrictions:\n    - tags: {}\n    - tags: {'': ''}\n    - tags: {'!@#$': '!@#$'}",
        &want,
    );
    accepted("constraints: {dataplaneProxy: {requirements: [{tags: {kuma.io/service: '*'}}]}}");
}

#[test]
fn multiple_errors_are_all_reported_and_unknown_keys_ignored() {
    rejected(
        r#"
mtls:
  enabledBackend: invalid-backend
logging:
  defaultBackend: invalid-backend
  backends:
  - name:
    type: file
    conf: {path: /path}
  - name: tcp-1
    type: file
    conf: {address: "kibana:1234"}
  - name: tcp-1
    type: tcp
    path: /var/logs
"#,
        &[
            (
                "mtls.enabledBackend",
                "has to be set to one of the backends in the mesh",
            ),
            ("logging.backends[0].name", "cannot be empty"),
            ("logging.backends[1].config.path", "cannot be empty"),
            ("logging.backends[2].config.address", "cannot be empty"),
            (
                "logging.backends[2].name",
                "\"tcp-1\" name is already used for another backend",
            ),
            (
                "logging.defaultBackend",
                "has to be set to one of the logging backend in mesh",
            ),
        ],
    );
}

#[test]
fn zone_egress_needs_mtls() {
    rejected(
        "routing: {zoneEgress: true}",
        &[("mtls", "has to be set when zoneEgress enabled")],
    );
    rejected(
        "mtls:\n  enabledBackend: backend-1\n  backends:\n  - {name: backend-1, type: builtin}\n  - {name: backend-1, type: builtin}\nrouting: {zoneEgress: true}",
        &[
            ("mtls.backends", "cannot have more than 1 backends"),
            (
                "mtls.backends[1].name",
                "\"backend-1\" name is already used for another backend",
            ),
        ],
    );
    rejected(
        "mtls: {backends: [{name: backend-1, type: builtin}]}\nrouting: {zoneEgress: true}",
        &[("mtls", "has to be set when zoneEgress enabled")],
    );
}

#[test]
fn sections_without_validation_and_unknown_fields() {
    accepted(
        "meshServices: {mode: Exclusive}\nnetworking: {outbound: {passthrough: false}}\nrouting: {localityAwareLoadBalancing: true, defaultForbidMeshExternalServiceAccess: true}\nskipCreatingInitialPolicies: ['*']",
    );
    accepted("mtls: {foo: 1}\nbar: x\nlogging: {extra: true}");
    rejected(
        "meshServices: {mode: Foo}",
        &[(
            "meshServices.mode",
            "unknown value \"\\\"Foo\\\"\" for enum kuma.mesh.v1alpha1.Mesh.MeshServices.Mode",
        )],
    );
    let got =
        violations("mtls: {backends: [{name: a, type: builtin, dpCert: {requestTimeout: soon}}]}");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "mtls.backends[0].dpCert.requestTimeout");
    assert!(got[0].1.starts_with("bad Duration: "), "{got:?}");
}

#[test]
fn wire_shape_round_trips() {
    let yaml = FULL.replace("TLS_PLACEHOLDER", "tls: {mode: providedTLS}");
    let value: Value = serde_saphyr::from_str(&yaml).unwrap();
    let m: Mesh = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&m).unwrap(), value);
}

#[test]
fn name_deprecation_warning() {
    assert_eq!(name_deprecation("Mesh", "default"), None);
    assert_eq!(
        mesh("{}").warnings("aa.a"),
        [
            "Invalid Mesh resource name: 'aa.a'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    assert!(name_deprecation("Zone", "1zone").is_some());
    let long = "a".repeat(64);
    let w = name_deprecation("Mesh", &long).unwrap();
    assert!(
        w.ends_with("Errors: must be no more than 63 characters"),
        "{w}"
    );
}

#[test]
fn ca_plugin_checks() {
    let b = |v: serde_json::Value| -> CaBackend { serde_json::from_value(v).unwrap() };
    let fields = |v: Vec<Violation>| -> Vec<(String, String)> {
        v.into_iter().map(|v| (v.field, v.message)).collect()
    };
    assert_eq!(
        fields(builtin_backend_problems(
            "default",
            &b(json!({"name": "builtinCA", "type": "builtin"}))
        )),
        [(
            "mtls.backends.name".to_string(),
            "\"builtinCA\" name must be valid dns name".to_string()
        )]
    );
    assert!(builtin_backend_problems("default", &b(json!({"name": "ca-1", "type": "builtin", "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}}}))).is_empty());
    assert_eq!(
        fields(provided_conf_problems(&b(
            json!({"name": "ca-1", "type": "provided"})
        ))),
        [
            ("cert".to_string(), "has to be defined".to_string()),
            ("key".to_string(), "has to be defined".to_string())
        ]
    );
    let chosen = "data source has to be chosen. Available sources: secret, file, inline";
    assert_eq!(
        fields(provided_conf_problems(&b(
            json!({"name": "ca-1", "type": "provided", "conf": {"cert": {}, "key": {"secret": null}}})
        ))),
        [
            ("cert".to_string(), chosen.to_string()),
            ("key".to_string(), chosen.to_string())
        ]
    );
    assert_eq!(
        fields(provided_conf_problems(&b(
            json!({"name": "ca-1", "type": "provided", "conf": {"cert": {"secret": ""}, "key": {"file": ""}}})
        ))),
        [
            ("cert.secret".to_string(), "cannot be empty".to_string()),
            ("key.file".to_string(), "cannot be empty".to_string())
        ]
    );
}

#[test]
fn ca_change_rule() {
    let on = |b: &str| {
        mesh(&format!(
            "mtls: {{enabledBackend: {b}, backends: [{{name: {b}, type: builtin}}]}}"
        ))
    };
    let off = mesh("mtls: {backends: [{name: ca-2, type: builtin}]}");
    let v = on("ca-2").ca_change_problem(&on("ca-1")).expect("refused");
    assert_eq!(v.field, "mtls.enabledBackend");
    assert_eq!(
        v.message,
        "Changing CA when mTLS is enabled is forbidden. Disable mTLS first and then change the CA"
    );
    assert!(on("ca-2").ca_change_problem(&off).is_none());
    assert!(off.ca_change_problem(&on("ca-1")).is_none());
    assert!(on("ca-1").ca_change_problem(&on("ca-1")).is_none());
}

#[test]
fn kuma_durations() {
    use std::time::Duration;
    assert_eq!(parse_kuma_duration("0"), Some(Duration::ZERO));
    assert_eq!(
        parse_kuma_duration("2y"),
        Some(Duration::from_secs(2 * 365 * 86400))
    );
    assert_eq!(
        parse_kuma_duration("150ms"),
        Some(Duration::from_millis(150))
    );
    for bad in ["", "2e", "1h30m", "10", "h", "-1h", " 1h"] {
        assert_eq!(parse_kuma_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn go_host_port_and_request_uri() {
    assert_eq!(split_host_port("kibana:1234"), Some(("kibana", "1234")));
    assert_eq!(split_host_port("[::1]:80"), Some(("::1", "80")));
    assert_eq!(split_host_port(":80"), Some(("", "80")));
    for bad in [
        "wrong-format:234:234",
        "kibana",
        "[::1]",
        "[::1]x:80",
        "a]:80",
    ] {
        assert_eq!(split_host_port(bad), None, "{bad:?}");
    }
    assert_eq!(
        request_uri_port("http://zipkin.local:9411/v2").as_deref(),
        Some("9411")
    );
    assert_eq!(
        request_uri_port("http://[::1]:9411/v2").as_deref(),
        Some("9411")
    );
    assert_eq!(
        request_uri_port("http://zipkin.local/v2").as_deref(),
        Some("")
    );
    assert_eq!(request_uri_port("/api/v2/spans").as_deref(), Some(""));
    assert_eq!(request_uri_port("kibana:1234").as_deref(), Some(""));
    for bad in ["invalid-url", "", "://x", "http://a:b/", "http://a b:80/"] {
        assert_eq!(request_uri_port(bad), None, "{bad:?}");
    }
}

#[test]
fn host_file_sources_are_found_in_any_backend_conf() {
    let mesh: Mesh = serde_json::from_value(json!({"mtls": {
    "enabledBackend": "ca-2",
    "backends": [
        {"name": "ca-1", "type": "builtin"},
        {"name": "ca-2", "type": "provided", "conf": {
            "cert": {"file": "/etc/shadow"},
            "key": {"secret": "key"}}},
        {"name": "ca-3", "type": "provided", "conf": {
            "cert": {"inlineString": "x"},
            "key": {"file": "/root/key.pem"}}}
    ]}}))
    .unwrap();
    assert_eq!(
        mesh.host_file_sources(),
        [
            "mtls.backends[1].conf.cert.file",
            "mtls.backends[2].conf.key.file"
        ]
    );
    assert!(Mesh::default().host_file_sources().is_empty());
}

#[test]
fn prometheus_defaults() {
    let mut m = mesh(
        "metrics:\n  backends:\n  - {name: a, type: prometheus}\n  - {name: b, type: prometheus, conf: {skipMTLS: true, port: 1234, path: /m, tags: {team: a}}}\n  - {name: c, type: prometheus, conf: {skipMTLS: false, tls: {mode: providedTLS}}}\n  - {name: d, type: other}",
    );
    m.apply_defaults();
    let want = json!({"backends": [
        {"name": "a", "type": "prometheus", "conf": {"tls": {}, "port": 5670, "path": "/metrics", "tags": {"kuma.io/service": "dataplane-metrics"}}},
        {"name": "b", "type": "prometheus", "conf": {"skipMTLS": true, "port": 1234, "path": "/m", "tags": {"team": "a"}, "tls": {"mode": "disabled"}}},
        {"name": "c", "type": "prometheus", "conf": {"tls": {"mode": "providedTLS"}, "port": 5670, "path": "/metrics", "tags": {"kuma.io/service": "dataplane-metrics"}}},
        {"name": "d", "type": "other"}]});
    assert_eq!(m.metrics, Some(want));
    // Defaults are stable.
    let once = m.clone();
    m.apply_defaults();
    assert_eq!(m, once);
}

#[test]
fn resource_deprecations_use_the_display_name() {
    let wire = |v: serde_json::Value| crate::Resource::from_wire(v, None).expect("valid");
    let dotted = wire(json!({"type": "Mesh", "name": "aa.a"}));
    assert_eq!(dotted.deprecations(), dotted_warning("Mesh", "aa.a"));
    let labelled =
        wire(json!({"type": "Mesh", "name": "aa.a", "labels": {"kuma.io/display-name": "fine"}}));
    assert!(labelled.deprecations().is_empty());
    let zone = wire(json!({"type": "Zone", "name": "zone.1"}));
    assert_eq!(zone.deprecations(), dotted_warning("Zone", "zone.1"));
    assert!(
        wire(json!({"type": "Secret", "mesh": "default", "name": "a.b"}))
            .deprecations()
            .is_empty()
    );
}

fn dotted_warning(kind: &str, name: &str) -> Vec<String> {
    vec![format!(
        "Invalid {kind} resource name: '{name}'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    )]
}

#[test]
fn unknown_fields_of_the_json_sections_are_named() {
    let m = mesh(
        "logging: {backends: [{name: a, tpye: file, conf: {path: /x, whatever: 1}}], extra: 1}\nrouting: {zoneEgres: true}\nmtls: {backends: [{name: b, type: builtin, dpCert: {rotaion: {expiration: 1d}}}]}\nconstraints: {dataplaneProxy: {requirements: [{tags: {a: b}, tag: {}}]}}",
    );
    assert_eq!(
        m.unknown_fields(),
        [
            "logging.backends[0].tpye",
            "logging.extra",
            "constraints.dataplaneProxy.requirements[0].tag",
            "routing.zoneEgres",
            "mtls.backends[0].dpCert.rotaion",
        ]
    );
    let mut dropped = m.clone();
    dropped.drop_unknown_fields();
    assert!(dropped.unknown_fields().is_empty());
    assert_eq!(
        dropped.logging,
        Some(json!({"backends": [{"name": "a", "conf": {"path": "/x", "whatever": 1}}]}))
    );
    assert_eq!(dropped.routing, Some(json!({})));
    let mut full = mesh(&FULL.replace("TLS_PLACEHOLDER", "tls: {mode: providedTLS}"));
    assert!(
        full.unknown_fields().is_empty(),
        "{:?}",
        full.unknown_fields()
    );
    let before = full.clone();
    full.drop_unknown_fields();
    assert_eq!(
        full, before,
        "a Mesh without unknown fields is kept as it is"
    );
}
