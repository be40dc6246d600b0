//! Mesh validation parity with Kuma, end to end: Kuma's documented Universal Mesh examples
//! (written again here) and the cases of Kuma's Mesh validator and Mesh manager tests are fed
//! to the real kuma-cp, through `PUT /meshes/{name}` and through `kumactl apply -f`.
//!
//! - Accepted: 201 with Kuma's warnings (a dotted name's deprecation), and the Mesh read back
//!   with `GET` is exactly the document applied (plus the server's metadata).
//! - Rejected: 400 whose `invalid_parameters` are exactly Kuma's (field path and message, in
//!   Kuma's order), kumactl fails naming the same fields, and what is stored (every Mesh and
//!   Secret, with their times) is unchanged.

use std::path::Path;
use std::process::Command;

use e2e::*;
use serde_json::{Value, json};

/// Expected (field, message) pairs, in order.
type Violations = Vec<(&'static str, &'static str)>;

/// Kuma's deprecation warning for the Mesh name `aa.a`.
const AA_A_WARNING: &str = "Invalid Mesh resource name: 'aa.a'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{text}"))
}

/// Every Mesh and every Secret, as the API lists them (server-set times included).
fn stored(cp: &ControlPlane) -> Value {
    let mut out = serde_json::Map::new();
    for path in ["/meshes", "/secrets"] {
        let (code, v) = cp.get(path);
        assert_eq!(code, 200, "GET {path}: {v}");
        out.insert(path.into(), v);
    }
    Value::Object(out)
}

/// The spec part of a Mesh document: everything but the metadata.
fn spec_of(doc: &Value) -> Value {
    let mut spec = doc.as_object().expect("a document is an object").clone();
    for meta in [
        "type",
        "name",
        "mesh",
        "labels",
        "creationTime",
        "modificationTime",
    ] {
        spec.remove(meta);
    }
    Value::Object(spec)
}

fn with_name(doc: &Value, name: &str) -> Value {
    let mut doc = doc.clone();
    doc["name"] = json!(name);
    doc
}

fn write_doc(dir: &Path, doc: &Value) -> String {
    let path = dir.join(format!("{}.json", doc["name"].as_str().expect("name")));
    std::fs::write(&path, doc.to_string()).expect("write the document");
    path.display().to_string()
}

/// `doc` is accepted by `PUT` (with exactly `warnings`) and read back unchanged; then the same
/// document under `<name>-cli` through `kumactl apply`.
#[track_caller]
fn assert_accepted(cp: &ControlPlane, dir: &Path, what: &str, doc: &Value, warnings: &[&str]) {
    let name = doc["name"].as_str().expect("name");
    let path = format!("/meshes/{name}");
    let existed = cp.get(&path).0 == 200;
    let (code, body) = cp.put(&path, doc);
    assert_eq!(
        code,
        if existed { 200 } else { 201 },
        "{what}: PUT {path}: {body:#}"
    );
    let got: Vec<&str> = body["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(got, warnings, "{what}: warnings of PUT {path}: {body:#}");
    let (code, stored) = cp.get(&path);
    assert_eq!(code, 200, "{what}: GET {path}: {stored:#}");
    assert_eq!(stored["type"], "Mesh", "{what}: {stored:#}");
    assert_eq!(stored["name"], name, "{what}: {stored:#}");
    assert_eq!(
        spec_of(&stored),
        spec_of(doc),
        "{what}: stored Mesh differs from what was applied"
    );

    let cli_name = format!("{name}-cli");
    let cli_doc = with_name(doc, &cli_name);
    let file = write_doc(dir, &cli_doc);
    let (ok, out, err) = cp.kumactl(&["apply", "-f", &file]);
    assert!(
        ok,
        "{what}: kumactl apply failed\nstdout: {out}\nstderr: {err}"
    );
    for w in warnings {
        let w = w.replace(name, &cli_name);
        assert!(
            err.contains(&w),
            "{what}: kumactl did not print the warning {w:?}\nstderr: {err}"
        );
    }
    let (code, stored) = cp.get(&format!("/meshes/{cli_name}"));
    assert_eq!(code, 200, "{what}: GET after kumactl: {stored:#}");
    assert_eq!(
        spec_of(&stored),
        spec_of(&cli_doc),
        "{what}: Mesh applied by kumactl differs from the document"
    );
}

/// `doc` is refused by `PUT` with exactly `want` (field, message) and by `kumactl apply`
/// naming every field; nothing stored changes.
#[track_caller]
fn assert_rejected(cp: &ControlPlane, dir: &Path, what: &str, doc: &Value, want: &[(&str, &str)]) {
    let name = doc["name"].as_str().expect("name");
    let path = format!("/meshes/{name}");
    let before = stored(cp);
    let (code, body) = cp.put(&path, doc);
    assert_eq!(code, 400, "{what}: PUT {path}: {body:#}");
    let got: Vec<(String, String)> = body["invalid_parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no invalid_parameters in {body:#}"))
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap_or_default().to_string(),
                p["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want, "{what}: violations of PUT {path}: {body:#}");
    assert_eq!(
        stored(cp),
        before,
        "{what}: a refused PUT changed the store"
    );

    let file = write_doc(dir, doc);
    let (ok, out, err) = cp.kumactl(&["apply", "-f", &file]);
    assert!(!ok, "{what}: kumactl apply succeeded\nstdout: {out}");
    for (field, message) in &want {
        assert!(
            err.contains(field.as_str()) && err.contains(message.as_str()),
            "{what}: kumactl did not name {field}: {message}\nstderr: {err}"
        );
    }
    assert_eq!(
        stored(cp),
        before,
        "{what}: a refused kumactl apply changed the store"
    );
}

/// A self-signed certificate and its PKCS#8 key made by openssl; `ca` chooses a CA
/// certificate (Kuma's X509-SVID rules) or a leaf.
fn openssl_pair(dir: &Path, name: &str, ca: bool) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let (bc, ku) = if ca {
        (
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
    } else {
        (
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyAgreement",
        )
    };
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            bc,
            "-addext",
            ku,
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(cert).expect("cert"),
        std::fs::read_to_string(key).expect("key"),
    )
}

fn put_secret(cp: &ControlPlane, mesh: &str, name: &str, data: &str) {
    let body = json!({"type": "Secret", "mesh": mesh, "name": name,
        "data": base64_encode(data.as_bytes())});
    let (code, body) = cp.put(&format!("/meshes/{mesh}/secrets/{name}"), &body);
    assert!(code == 200 || code == 201, "{code} {body}");
}

/// Kuma's documented Universal examples (mTLS, logging, tracing, metrics, constraints,
/// routing, networking, MeshServices) are accepted and stored as written.
#[test]
fn documented_examples_are_accepted_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(&d.join("cp"), &[]);
    let docs = [
        (
            "builtin mTLS",
            r#"
type: Mesh
name: builtin
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
    mode: PERMISSIVE
    dpCert:
      rotation:
        expiration: 1d
      requestTimeout: 10s
    conf:
      caCert:
        RSAbits: 2048
        expiration: 10y
"#,
        ),
        (
            "logging: file and tcp backends",
            r#"
type: Mesh
name: logging
logging:
  defaultBackend: file
  backends:
  - name: logstash
    type: tcp
    format: '{"start_time": "%START_TIME%", "source": "%KUMA_SOURCE_SERVICE%"}'
    conf:
      address: 127.0.0.1:5000
  - name: file
    type: file
    conf:
      path: /tmp/access.log
"#,
        ),
        (
            "tracing: zipkin and datadog",
            r#"
type: Mesh
name: tracing
tracing:
  defaultBackend: jaeger-collector
  backends:
  - name: jaeger-collector
    type: zipkin
    sampling: 100.0
    conf:
      url: http://jaeger-collector:9411/api/v2/spans
      apiVersion: httpJson
  - name: datadog
    type: datadog
    sampling: 60.5
    conf:
      address: 127.0.0.1
      port: 8126
      splitService: true
"#,
        ),
        (
            "metrics: prometheus",
            r#"
type: Mesh
name: metrics
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
    conf:
      port: 5670
      path: /metrics
      tags:
        kuma.io/service: dataplane-metrics
      envoy:
        filterRegex: http2_act.*
        usedOnly: true
      aggregate:
      - name: my-service
        path: /metrics/prometheus
        port: 8888
      tls:
        mode: activeMTLSBackend
"#,
        ),
        (
            "constraints",
            r#"
type: Mesh
name: constraints
constraints:
  dataplaneProxy:
    requirements:
    - tags:
        kuma.io/zone: east
    restrictions:
    - tags:
        kuma.io/service: '*'
        version: v1
"#,
        ),
        (
            "routing with zone egress, networking, MeshServices",
            r#"
type: Mesh
name: routing
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
routing:
  localityAwareLoadBalancing: true
  zoneEgress: true
  defaultForbidMeshExternalServiceAccess: true
networking:
  outbound:
    passthrough: false
meshServices:
  mode: Exclusive
skipCreatingInitialPolicies: ['*']
"#,
        ),
    ];
    for (what, text) in docs {
        assert_accepted(&cp, d, what, &yaml(text), &[]);
    }

    // Kuma's Prometheus defaults are stored.
    let bare = json!({"type": "Mesh", "name": "metrics-defaults", "metrics": {
        "enabledBackend": "prom", "backends": [{"name": "prom", "type": "prometheus"}]}});
    let (code, body) = cp.put("/meshes/metrics-defaults", &bare);
    assert_eq!(code, 201, "{body:#}");
    assert_eq!(
        cp.get("/meshes/metrics-defaults").1["metrics"],
        json!({"enabledBackend": "prom", "backends": [{"name": "prom", "type": "prometheus",
            "conf": {"tls": {}, "port": 5670, "path": "/metrics",
                     "tags": {"kuma.io/service": "dataplane-metrics"}}}]})
    );

    // A name with dots is accepted with Kuma's deprecation warning.
    assert_accepted(
        &cp,
        d,
        "dotted name",
        &json!({"type": "Mesh", "name": "aa.a"}),
        &[AA_A_WARNING],
    );

    // Provided CA, Kuma's way: Secrets in the mesh first, then the backend naming them.
    let (cert, key) = openssl_pair(d, "operator-ca", true);
    assert_accepted(
        &cp,
        d,
        "mesh for a provided CA",
        &json!({"type": "Mesh", "name": "provided"}),
        &[],
    );
    put_secret(&cp, "provided", "ca-cert", &cert);
    put_secret(&cp, "provided", "ca-key", &key);
    let provided = yaml(
        r#"
type: Mesh
name: provided
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: provided
    dpCert:
      rotation:
        expiration: 1d
    conf:
      cert:
        secret: ca-cert
      key:
        secret: ca-key
"#,
    );
    let (code, body) = cp.put("/meshes/provided", &provided);
    assert_eq!(code, 200, "provided CA from secrets: {body:#}");
    assert_eq!(spec_of(&cp.get("/meshes/provided").1), spec_of(&provided));
    // The same CA inline, through the API and kumactl.
    let inline = json!({"type": "Mesh", "name": "provided-inline", "mtls": {
        "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided",
        "conf": {"cert": {"inlineString": cert}, "key": {"inline": base64_encode(key.as_bytes())}}}]}});
    assert_accepted(&cp, d, "provided CA inline", &inline, &[]);
    // Kuma ignores unknown fields (and does not store them).
    let (code, body) = cp.put(
        "/meshes/unknown",
        &json!({"type": "Mesh", "name": "unknown", "mtls": {"foo": 1}, "bar": "x",
            "routing": {"zoneEgres": true, "localityAwareLoadBalancing": true}}),
    );
    assert_eq!(code, 201, "unknown fields: {body:#}");
    assert_eq!(
        spec_of(&cp.get("/meshes/unknown").1),
        json!({"mtls": {}, "routing": {"localityAwareLoadBalancing": true}}),
        "unknown fields are not stored"
    );
}

/// The rejections of Kuma's Mesh validator (`Mesh.Validate`, also run by kumactl) and Mesh
/// manager (CA plugins, name length, CA change), with Kuma's field paths and messages.
#[test]
fn kuma_rejections_name_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(&d.join("cp"), &[]);
    let cases: Vec<(&str, &str, Violations)> = vec![
        (
            "two mTLS backends of one name",
            "mtls: {enabledBackend: backend-1, backends: [{name: backend-1, type: builtin}, {name: backend-1, type: builtin}]}",
            vec![
                ("mtls.backends", "cannot have more than 1 backends"),
                (
                    "mtls.backends[1].name",
                    "\"backend-1\" name is already used for another backend",
                ),
            ],
        ),
        (
            "enabledBackend names no backend",
            "mtls: {enabledBackend: backend-2, backends: [{name: backend-1, type: builtin}]}",
            vec![(
                "mtls.enabledBackend",
                "has to be set to one of the backends in the mesh",
            )],
        ),
        (
            "dpCert expiration",
            "mtls: {enabledBackend: b, backends: [{name: b, type: builtin, dpCert: {rotation: {expiration: 2e}}}]}",
            vec![(
                "mtls.dpcert.rotation.expiration",
                "has to be a valid format",
            )],
        ),
        (
            "provided CA without conf",
            "mtls: {enabledBackend: ca-1, backends: [{name: ca-1, type: provided}]}",
            vec![
                ("mtls.backends[0].conf.cert", "has to be defined"),
                ("mtls.backends[0].conf.key", "has to be defined"),
            ],
        ),
        (
            "provided CA without a data source",
            "mtls: {enabledBackend: ca-1, backends: [{name: ca-1, type: provided, conf: {cert: {}, key: {secret: null}}}]}",
            vec![
                (
                    "mtls.backends[0].conf.cert",
                    "data source has to be chosen. Available sources: secret, file, inline",
                ),
                (
                    "mtls.backends[0].conf.key",
                    "data source has to be chosen. Available sources: secret, file, inline",
                ),
            ],
        ),
        (
            "CA type without a plugin",
            "mtls: {enabledBackend: ca-1, backends: [{name: ca-1, type: bulitin}]}",
            vec![(
                "mtls.backends[0].type",
                "could not find installed plugin for this type",
            )],
        ),
        (
            "builtin backend name not a DNS name",
            "mtls: {enabledBackend: builtinCA, backends: [{name: builtinCA, type: builtin}]}",
            vec![(
                "mtls.backends[0].conf.mtls.backends.name",
                "\"builtinCA\" name must be valid dns name",
            )],
        ),
        (
            "logging backend without a name",
            "logging: {backends: [{name: null, type: tcp, conf: {address: 'kibana:1234'}}]}",
            vec![("logging.backends[0].name", "cannot be empty")],
        ),
        (
            "tcp logging address",
            "logging: {backends: [{name: b, type: tcp, conf: {address: 'wrong-format:234:234'}}]}",
            vec![(
                "logging.backends[0].config.address",
                "has to be in format of HOST:PORT",
            )],
        ),
        (
            "file logging without a path",
            "logging: {backends: [{name: b, type: file, conf: {path: null}}]}",
            vec![("logging.backends[0].config.path", "cannot be empty")],
        ),
        (
            "logging defaultBackend",
            "logging: {defaultBackend: non-existing-backend, backends: [{name: b, type: file, conf: {path: /x}}]}",
            vec![(
                "logging.defaultBackend",
                "has to be set to one of the logging backend in mesh",
            )],
        ),
        (
            "tracing sampling",
            "tracing: {backends: [{name: z, type: zipkin, sampling: 100.1, conf: {url: 'http://zipkin.local:9411/v2/spans'}}]}",
            vec![(
                "tracing.backends[0].sampling",
                "has to be in [0.0 - 100.0] range",
            )],
        ),
        (
            "zipkin url without a port",
            "tracing: {backends: [{name: z, type: zipkin, conf: {url: 'http://zipkin-us.local/v2/spans'}}]}",
            vec![(
                "tracing.backends[0].config.url",
                "port has to be explicitly specified",
            )],
        ),
        (
            "zipkin url invalid",
            "tracing: {backends: [{name: z, type: zipkin, conf: {url: invalid-url}}]}",
            vec![("tracing.backends[0].config.url", "invalid URL")],
        ),
        (
            "unknown backend types",
            "metrics: {backends: [{name: b, type: xxx}]}\nlogging: {backends: [{name: b, type: xxx}]}\ntracing: {backends: [{name: b, type: xxx}]}",
            vec![
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
        ),
        (
            "skipMTLS with another tls mode",
            "metrics: {backends: [{name: b, type: prometheus, conf: {skipMTLS: true, tls: {mode: providedTLS}}}]}",
            vec![(
                "metrics.backends[0].conf",
                "skipMTLS and tls configuration cannot be defined together",
            )],
        ),
        (
            "metrics enabledBackend",
            "metrics: {enabledBackend: backend-2, backends: [{name: backend-1, type: prometheus}]}",
            vec![(
                "metrics.enabledBackend",
                "has to be set to one of the backends in the mesh",
            )],
        ),
        (
            "constraints without tags",
            "constraints: {dataplaneProxy: {requirements: [{tags: {}}]}}",
            vec![(
                "constraints.dataplaneProxy.requirements[0].tags",
                "must have at least one tag",
            )],
        ),
        (
            "zone egress without mTLS",
            "routing: {zoneEgress: true}",
            vec![("mtls", "has to be set when zoneEgress enabled")],
        ),
    ];
    for (what, spec, want) in &cases {
        let mut doc = yaml(spec);
        doc["type"] = json!("Mesh");
        doc["name"] = json!("m");
        assert_rejected(&cp, d, what, &doc, want);
    }

    // Manager: a name longer than 63 characters on create.
    let long = "a".repeat(64);
    assert_rejected(
        &cp,
        d,
        "64-character name",
        &json!({"type": "Mesh", "name": long}),
        &[("name", "cannot be longer than 63 characters")],
    );

    // Provided CA plugin: a leaf certificate may not sign; a missing Secret cannot be loaded.
    let (leaf, leaf_key) = openssl_pair(d, "leaf", false);
    let leaf_ca = json!({"type": "Mesh", "name": "m", "mtls": {"enabledBackend": "ca-1",
        "backends": [{"name": "ca-1", "type": "provided",
        "conf": {"cert": {"inlineString": leaf}, "key": {"inlineString": leaf_key}}}]}});
    assert_rejected(
        &cp,
        d,
        "provided CA that is a leaf",
        &leaf_ca,
        &[
            (
                "mtls.backends[0].conf.cert[0]",
                "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)",
            ),
            (
                "mtls.backends[0].conf.cert[0]",
                "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)",
            ),
            (
                "mtls.backends[0].conf.cert[0]",
                "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: Appendix A. X.509 Field Reference)",
            ),
        ],
    );
    // skipValidation lets it through, as in Kuma.
    let mut skipped = leaf_ca.clone();
    skipped["name"] = json!("skipped");
    skipped["mtls"]["skipValidation"] = json!(true);
    let (code, body) = cp.put("/meshes/skipped", &skipped);
    assert_eq!(code, 201, "skipValidation: {body:#}");

    // Update: the CA cannot change while mTLS stays on; the stored Mesh is untouched.
    let on = |backend: &str| {
        json!({"type": "Mesh", "name": "ca", "mtls": {"enabledBackend": backend,
            "backends": [{"name": backend, "type": "builtin"}]}})
    };
    let (code, body) = cp.put("/meshes/ca", &on("ca-1"));
    assert_eq!(code, 201, "{body:#}");
    assert_rejected(
        &cp,
        d,
        "CA change while mTLS is on",
        &on("ca-2"),
        &[(
            "mtls.enabledBackend",
            "Changing CA when mTLS is enabled is forbidden. Disable mTLS first and then change the CA",
        )],
    );
    // Kuma's way: mTLS off, then on with the other CA.
    let off = json!({"type": "Mesh", "name": "ca", "mtls": {"backends": [{"name": "ca-1", "type": "builtin"}]}});
    assert_eq!(cp.put("/meshes/ca", &off).0, 200);
    assert_eq!(cp.put("/meshes/ca", &on("ca-2")).0, 200);
}

/// Secret, GlobalSecret and Zone cases of Kuma: no spec validation beyond decoding, a Zone
/// name with dots warns, a Secret in use by the mesh's CA cannot be deleted.
#[test]
fn secrets_and_zones_like_kuma() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let put = |path: &str, doc: Value| cp.put(path, &doc);
    let (code, body) = put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default"}),
    );
    assert!(code == 200 || code == 201, "{body:#}");
    let (code, body) = put(
        "/meshes/default/secrets/sec-1",
        json!({"type": "Secret", "mesh": "default", "name": "sec-1", "data": "dGVzdAo="}),
    );
    assert_eq!(code, 201, "S1: {body:#}");
    let (code, body) = put(
        "/meshes/default/secrets/sec-2",
        json!({"type": "Secret", "mesh": "default", "name": "sec-2"}),
    );
    assert_eq!(code, 201, "S3 (no data): {body:#}");
    let before = stored(&cp);
    let (code, body) = put(
        "/meshes/default/secrets/sec-3",
        json!({"type": "Secret", "mesh": "default", "name": "sec-3", "data": "not base64!"}),
    );
    assert_eq!(code, 400, "S2: {body:#}");
    assert_eq!(
        body["invalid_parameters"],
        json!([{"field": "data", "reason": "illegal base64 data at input byte 3"}]),
        "S2: {body:#}"
    );
    assert_eq!(stored(&cp), before, "S2 changed the store");
    let (code, body) = put(
        "/global-secrets/sec-1",
        json!({"type": "GlobalSecret", "name": "sec-1", "data": "dGVzdAo="}),
    );
    assert_eq!(code, 201, "S7: {body:#}");

    // S6: a Secret the mesh's provided CA uses cannot be deleted; once unused, it can.
    let (cert, key) = openssl_pair(dir.path(), "ca", true);
    put_secret(&cp, "default", "ca-cert", &cert);
    put_secret(&cp, "default", "ca-key", &key);
    let provided = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1",
        "backends": [{"name": "ca-1", "type": "provided",
        "conf": {"cert": {"secret": "ca-cert"}, "key": {"secret": "ca-key"}}}]}});
    let (code, body) = put("/meshes/default", provided);
    assert_eq!(code, 200, "{body:#}");
    let before = stored(&cp);
    let (code, body) = http("DELETE", cp.api, "/meshes/default/secrets/ca-key", None).unwrap();
    assert_eq!(code, 400, "S6: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["invalid_parameters"],
        json!([{"field": "name", "reason": "The secret \"ca-key\" that you are trying to remove is currently in use in Mesh \"default\" in mTLS backend \"ca-1\". Please remove the reference from the \"ca-1\" backend before removing the secret."}]),
        "S6: {body:#}"
    );
    assert_eq!(stored(&cp), before, "S6 changed the store");
    let (code, body) = put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default"}),
    );
    assert_eq!(code, 200, "mTLS off: {body:#}");
    let (code, body) = http("DELETE", cp.api, "/meshes/default/secrets/ca-key", None).unwrap();
    assert_eq!(code, 200, "unused secret: {body}");

    // Zones: Z1 plain, Z2 dotted with Kuma's warning.
    let (code, body) = put(
        "/zones/zone-1",
        json!({"type": "Zone", "name": "zone-1", "enabled": true}),
    );
    assert_eq!(code, 201, "Z1: {body:#}");
    let (code, body) = put("/zones/zone.1", json!({"type": "Zone", "name": "zone.1"}));
    assert_eq!(code, 201, "Z2: {body:#}");
    assert_eq!(
        body["warnings"],
        json!([AA_A_WARNING
            .replace("Mesh", "Zone")
            .replace("aa.a", "zone.1")]),
        "Z2: {body:#}"
    );
}
