//! Bad input, end to end, against the real control plane: kumactl apply, REST `PUT`,
//! `POST /bootstrap`, garbage on the DP server's TLS and gRPC, and start-up errors.
//!
//! Every rejection must be a clear error naming the field and the reason (Kuma's error body
//! `{"title","detail","invalid_parameters":[{"field","reason"}]}`, a gRPC status, or kumactl's
//! stderr), and must leave what is stored exactly as it was: the full list responses,
//! `modificationTime` included, are compared before and after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::bytes::{Buf, BufMut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

mod support;
use support::*;

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const TWO_MIB: usize = 2 << 20;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// A valid Dataplane in the wire shape.
fn dataplane(mesh: &str, name: &str) -> Value {
    json!({
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": "127.0.0.1",
            "inbound": [{
                "port": 10001,
                "servicePort": 8080,
                "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"}
            }]
        }
    })
}

/// Invalid Dataplanes: (what, document, expected field, expected words of the reason).
fn bad_dataplanes() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let mut number_tag = dataplane("default", "web-2");
    number_tag["networking"]["inbound"][0]["tags"]["version"] = json!(1);
    let mut no_service = dataplane("default", "web-2");
    no_service["networking"]["inbound"][0]["tags"] = json!({"kuma.io/protocol": "http"});
    let mut bad_address = dataplane("default", "web-2");
    bad_address["networking"]["inbound"]
        .as_array_mut()
        .expect("inbound is a list")
        .push(json!({"port": 10002, "address": "not-an-ip", "tags": {"kuma.io/service": "web"}}));
    vec![
        (
            "tag value that is a number",
            number_tag,
            "networking.inbound[0].tags[\"version\"]",
            "invalid type",
        ),
        (
            "no kuma.io/service tag",
            no_service,
            "networking.inbound[0].tags[\"kuma.io/service\"]",
            "tag has to exist",
        ),
        (
            "inbound address that is not an IP",
            bad_address,
            "networking.inbound[1].address",
            "address has to be valid IP address",
        ),
        (
            "name that is not an RFC 1123 subdomain",
            dataplane("default", "Bad_Name"),
            "name",
            "RFC 1123",
        ),
    ]
}

/// Everything bad input could have touched, as the API lists it (server-set times included).
fn stored(cp: &ControlPlane) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "/meshes",
        "/dataplanes",
        "/meshes/default/dataplanes",
        "/meshes/nope/dataplanes",
    ] {
        let (code, v) = cp.get(path);
        assert_eq!(code, 200, "GET {path}: {v}");
        out.insert(path.into(), v);
    }
    Value::Object(out)
}

fn assert_unchanged(cp: &ControlPlane, before: &Value, what: &str) {
    let after = stored(cp);
    assert_eq!(
        &after, before,
        "{what}: what is stored changed\nbefore: {before:#}\nafter: {after:#}"
    );
}

fn put_ok(cp: &ControlPlane, res: &Value) {
    let path = format!(
        "/meshes/{}/dataplanes/{}",
        res["mesh"].as_str().expect("mesh"),
        res["name"].as_str().expect("name")
    );
    let (code, body) = cp.put(&path, res);
    assert!(code == 200 || code == 201, "PUT {path}: {code} {body}");
}

/// Asserts Kuma's error body, and that `invalid_parameters` holds `field` with a reason
/// containing `reason` (when given).
fn assert_error_body(what: &str, body: &Value, status: u16, field: Option<(&str, &str)>) {
    for key in ["title", "detail"] {
        assert!(
            body[key].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no {key} in {body:#}"
        );
    }
    assert_eq!(body["status"], status, "{what}: {body:#}");
    let params = body["invalid_parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no invalid_parameters in {body:#}"));
    if let Some((field, reason)) = field {
        assert!(
            params
                .iter()
                .any(|p| p["field"] == field
                    && p["reason"].as_str().is_some_and(|r| r.contains(reason))),
            "{what}: no invalid_parameters entry {{field: {field:?}, reason: ~{reason:?}}} in {body:#}"
        );
    }
}

/// One HTTP/1.1 request with a raw body. The body is written from another thread: the server
/// may answer (413) and close without reading all of it.
fn raw_request(method: &str, addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("writing the request head");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response to {method} {path}: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, rest.to_string())
}

/// A 2 MiB JSON Dataplane (a padded label), over every body limit.
fn oversized_dataplane(name: &str) -> Vec<u8> {
    let mut dp = dataplane("default", name);
    dp["labels"] = json!({"pad": "x".repeat(TWO_MIB)});
    dp.to_string().into_bytes()
}

/// Pseudo-random bytes (xorshift; deterministic so failures reproduce).
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. kumactl apply
// ---------------------------------------------------------------------------------------------

/// A Dataplane as YAML; `inbounds` are the list items, already indented.
fn dp_yaml(mesh: &str, name: &str, inbounds: &str) -> String {
    format!(
        "type: Dataplane\nmesh: {mesh}\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n{inbounds}"
    )
}

const INBOUND: &str =
    "  - port: 10002\n    servicePort: 8080\n    tags:\n      kuma.io/service: web\n";

#[test]
fn kumactl_apply_rejects_bad_input_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    put_ok(&cp, &dataplane("default", "web-1"));
    let before = stored(&cp);

    // (file name, content, what stderr must contain)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed.yaml",
            "type: Dataplane\nmesh: default\nname: [web-2\n".into(),
            vec!["malformed.yaml", "cannot parse YAML/JSON"],
        ),
        (
            "malformed.json",
            "{\"type\": \"Dataplane\", \"mesh\": \"default\", \"name\": \"web-2\",\n".into(),
            vec!["malformed.json", "cannot parse YAML/JSON"],
        ),
        (
            // YAML reads an unquoted 1 as a number, and a tag value is a string.
            "number-tag.yaml",
            dp_yaml(
                "default",
                "web-2",
                "  - port: 10002\n    servicePort: 8080\n    tags:\n      kuma.io/service: web\n      version: 1\n",
            ),
            vec![
                "* networking.inbound[0].tags[\"version\"]: ",
                "invalid type",
            ],
        ),
        (
            "no-service.yaml",
            dp_yaml(
                "default",
                "web-2",
                "  - port: 10002\n    servicePort: 8080\n    tags:\n      kuma.io/protocol: http\n",
            ),
            vec![
                "* networking.inbound[0].tags[\"kuma.io/service\"]: ",
                "tag has to exist",
            ],
        ),
        (
            "bad-address.yaml",
            dp_yaml(
                "default",
                "web-2",
                &format!(
                    "{INBOUND}  - port: 10003\n    address: not-an-ip\n    tags:\n      kuma.io/service: web\n"
                ),
            ),
            vec![
                "* networking.inbound[1].address: ",
                "address has to be valid IP address",
            ],
        ),
        (
            "bad-name.yaml",
            dp_yaml("default", "Bad_Name", INBOUND),
            vec!["* name: ", "RFC 1123"],
        ),
        (
            "unknown-mesh.yaml",
            dp_yaml("nope", "web-2", INBOUND),
            vec!["Dataplane \"web-2\"", "Failed to retrieve Mesh (Not found)"],
        ),
        (
            "multi.yaml",
            format!(
                "{}---\n{}",
                dp_yaml("default", "web-3", INBOUND),
                dp_yaml("default", "Bad_Name", INBOUND)
            ),
            vec!["multi.yaml: document 2", "* name: ", "RFC 1123"],
        ),
    ];
    for (file, content, expected) in &cases {
        let path = dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        let (ok, out, err) = cp.kumactl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(!ok, "{file}: kumactl apply succeeded:\n{out}{err}");
        for e in expected {
            assert!(err.contains(e), "{file}: stderr lacks {e:?}:\n{err}");
        }
        assert_unchanged(&cp, &before, file);
    }
    // The valid first document of multi.yaml was not sent either.
    let (code, _) = cp.get("/meshes/default/dataplanes/web-3");
    assert_eq!(code, 404, "web-3 from multi.yaml was stored");

    // Control: the same command applies a valid file.
    let path = dir.path().join("valid.yaml");
    std::fs::write(&path, dp_yaml("default", "web-2", INBOUND)).unwrap();
    let (ok, out, err) = cp.kumactl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(ok, "valid.yaml: {out}{err}");
    assert_eq!(cp.get("/meshes/default/dataplanes/web-2").0, 200);
}

// ---------------------------------------------------------------------------------------------
// 2. REST PUT, bypassing kumactl
// ---------------------------------------------------------------------------------------------

#[test]
fn api_put_rejects_bad_input_and_keeps_stored_resources() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    put_ok(&cp, &dataplane("default", "web-1"));
    let before = stored(&cp);

    for (what, doc, field, reason) in bad_dataplanes() {
        let path = format!(
            "/meshes/{}/dataplanes/{}",
            doc["mesh"].as_str().unwrap(),
            doc["name"].as_str().unwrap()
        );
        let (code, body) = cp.put(&path, &doc);
        assert_eq!(code, 400, "{what}: PUT {path}: {body:#}");
        assert_error_body(what, &body, 400, Some((field, reason)));
        assert_unchanged(&cp, &before, what);
    }

    // A mesh that does not exist is looked up first: Kuma's 404.
    let (code, body) = cp.put("/meshes/nope/dataplanes/web-2", &dataplane("nope", "web-2"));
    assert_eq!(code, 404, "mesh that does not exist: {body:#}");
    assert_eq!(
        (&body["title"], &body["detail"]),
        (&json!("Failed to retrieve Mesh"), &json!("Not found")),
        "{body:#}"
    );
    assert_unchanged(&cp, &before, "mesh that does not exist");

    // The URL and the body disagree.
    let (code, body) = cp.put(
        "/meshes/default/dataplanes/web-9",
        &dataplane("default", "web-2"),
    );
    assert_eq!(code, 400, "name mismatch: {body:#}");
    assert_error_body("name mismatch", &body, 400, Some(("name", "URL")));
    let mut other_mesh = dataplane("default", "web-2");
    other_mesh["mesh"] = json!("other");
    let (code, body) = cp.put("/meshes/default/dataplanes/web-2", &other_mesh);
    assert_eq!(code, 400, "mesh mismatch: {body:#}");
    assert_error_body("mesh mismatch", &body, 400, Some(("mesh", "URL")));
    let (code, body) = cp.put(
        "/meshes/default/dataplanes/web-2",
        &json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "web-2", "spec": {}}),
    );
    assert_eq!(code, 400, "type mismatch: {body:#}");
    assert_error_body("type mismatch", &body, 400, Some(("type", "URL")));
    assert_unchanged(&cp, &before, "URL/body mismatch");

    // Not JSON.
    let (code, body) = raw_request(
        "PUT",
        cp.api,
        "/meshes/default/dataplanes/web-2",
        b"{\"type\": \"Dataplane\", \"name\": ".to_vec(),
    );
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(code, 400, "malformed JSON: {body:#}");
    assert_error_body("malformed JSON", &body, 400, None);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid Dataplane object: "),
        "{body:#}"
    );
    assert_unchanged(&cp, &before, "malformed JSON");

    // Over the body limit.
    let (code, body) = raw_request(
        "PUT",
        cp.api,
        "/meshes/default/dataplanes/web-2",
        oversized_dataplane("web-2"),
    );
    assert_eq!(code, 413, "2 MiB body: {body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_error_body("2 MiB body", &body, 413, None);
    assert_unchanged(&cp, &before, "2 MiB body");

    // An update that would break the stored web-1 leaves it exactly as it was.
    let (code, stored_web1) = cp.get("/meshes/default/dataplanes/web-1");
    assert_eq!(code, 200);
    for (what, mut doc, field, reason) in bad_dataplanes() {
        if doc["mesh"] != "default" || doc["name"] == "Bad_Name" {
            continue;
        }
        doc["name"] = json!("web-1");
        let (code, body) = cp.put("/meshes/default/dataplanes/web-1", &doc);
        assert_eq!(code, 400, "update with {what}: {body:#}");
        assert_error_body(what, &body, 400, Some((field, reason)));
        assert_eq!(
            cp.get("/meshes/default/dataplanes/web-1"),
            (200, stored_web1.clone()),
            "update with {what} changed the stored web-1"
        );
    }
    assert_unchanged(&cp, &before, "breaking updates");
}

// ---------------------------------------------------------------------------------------------
// 3. POST /bootstrap
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    put_ok(&cp, &dataplane("default", "web-1"));
    let before = stored(&cp);
    let client = bootstrap_client(&cp);
    // Dataplane authentication is on (the default): every request carries a valid token, so
    // what is refused is the input, not the caller.
    let token = cp.dataplane_token("default", "web-1");
    let with_token = |mut req: Value| {
        req["dataplaneToken"] = json!(token);
        req.to_string().into_bytes()
    };

    // Control: a good request is answered with a bootstrap.
    let (code, body) = post_bootstrap(
        &client,
        &cp,
        with_token(json!({"mesh": "default", "name": "web-1"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"bootstrap\""), "{body}");

    let mut no_service = dataplane("default", "web-2");
    no_service["networking"]["inbound"][0]["tags"] = json!({"app": "web"});
    no_service["name"] = json!("Bad_Name");
    let mut number_tag = dataplane("default", "web-2");
    number_tag["networking"]["inbound"][0]["tags"]["version"] = json!(1);
    // (what, body, status, expected (field, reason) entries)
    let cases = vec![
        (
            "neither dataplaneResource nor mesh/name",
            json!({"proxyType": "dataplane"}),
            422,
            vec![("mesh", "required"), ("name", "required")],
        ),
        (
            "mesh without name",
            json!({"mesh": "default"}),
            422,
            vec![("name", "required")],
        ),
        (
            "invalid dataplaneResource",
            json!({"dataplaneResource": no_service.to_string()}),
            422,
            vec![
                ("dataplaneResource.name", "RFC 1123"),
                (
                    "dataplaneResource.networking.inbound[0].tags[\"kuma.io/service\"]",
                    "tag has to exist",
                ),
            ],
        ),
        (
            "dataplaneResource with a tag value that is a number",
            json!({"dataplaneResource": number_tag.to_string()}),
            422,
            vec![(
                "dataplaneResource.networking.inbound[0].tags[\"version\"]",
                "invalid type",
            )],
        ),
        (
            "dataplaneResource that is not YAML",
            json!({"dataplaneResource": "type: [\n"}),
            422,
            vec![("dataplaneResource", "cannot parse")],
        ),
        (
            // The token is checked first, against the mesh's signing keys: a mesh that does
            // not exist has none, and the answer does not say whether it exists.
            "dataplaneResource in a mesh that does not exist",
            json!({"dataplaneResource": dataplane("nope", "web-2").to_string()}),
            401,
            vec![("dataplaneToken", "signing key of mesh \"nope\"")],
        ),
        (
            "unsupported proxyType",
            json!({"proxyType": "gateway", "mesh": "default", "name": "web-1"}),
            422,
            vec![("proxyType", "must be one of dataplane, ingress, egress")],
        ),
        (
            // A zone proxy needs a zone token of its scope, not a dataplane token.
            "a zone ingress with a dataplane token",
            json!({"proxyType": "ingress", "name": "zi-1"}),
            401,
            vec![(
                "dataplaneToken",
                "the zone token is not valid for this control plane",
            )],
        ),
    ];
    for (what, req, status, fields) in cases {
        let (code, body) = post_bootstrap(&client, &cp, with_token(req)).await;
        assert_eq!(code, status, "{what}: {body}");
        let body: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        for f in fields {
            assert_error_body(what, &body, status, Some(f));
        }
        assert_unchanged(&cp, &before, what);
    }

    // A Dataplane that does not exist (yet), asked for with a token that may register it:
    // 404 with an empty body, which kuma-dp retries.
    let any_name = cp.token("dataplane", &json!({"mesh": "default"}));
    let req = json!({"mesh": "default", "name": "ghost", "dataplaneToken": any_name});
    let (code, body) = post_bootstrap(&client, &cp, req.to_string().into_bytes()).await;
    assert_eq!((code, body.as_str()), (404, ""), "unknown Dataplane");
    // With a token bound to another proxy, the name is refused before it is looked up.
    let (code, body) = post_bootstrap(
        &client,
        &cp,
        with_token(json!({"mesh": "default", "name": "ghost"})),
    )
    .await;
    assert_eq!(code, 403, "a token of web-1 for ghost: {body}");

    let (code, body) = post_bootstrap(&client, &cp, b"this is not JSON".to_vec()).await;
    assert_eq!(code, 400, "non-JSON body: {body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_error_body("non-JSON body", &body, 400, None);

    let (code, body) = post_bootstrap(&client, &cp, oversized_dataplane("web-2")).await;
    assert_eq!(code, 413, "2 MiB body: {body}");

    assert_unchanged(&cp, &before, "bootstrap requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_oversized_body_gets_kuma_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, body) =
        post_bootstrap(&bootstrap_client(&cp), &cp, oversized_dataplane("web-2")).await;
    assert_eq!(code, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_error_body("2 MiB bootstrap body", &body, 413, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_document_errors_have_a_clean_detail() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, body) = cp.put("/meshes/default/dataplanes/web-2", &json!([1]));
    assert_eq!(code, 400, "{body:#}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty() && !detail.starts_with(':'),
        "PUT of a JSON array: detail {detail:?}"
    );
    let token = cp.dataplane_token("default", "web-1");
    let (code, body) = post_bootstrap(
        &bootstrap_client(&cp),
        &cp,
        json!({"dataplaneResource": "type: [\n", "dataplaneToken": token})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty() && !detail.starts_with(':'),
        "bootstrap with an unparsable dataplaneResource: detail {detail:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Garbage on the DP server: TLS, gRPC frames, refused ADS streams
// ---------------------------------------------------------------------------------------------

/// Passes gRPC message bytes through untouched, to send frames that are not protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `frames` as gRPC messages on a StreamAggregatedResources call (request side kept
/// open) and returns how the call ended: the status, or `Ok` with the messages received if
/// the server ended it cleanly.
async fn ads_raw_frames(ch: &Channel, frames: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(frames.len().max(1));
    for f in frames {
        tx.send(f).await.expect("queueing a frame");
    }
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut responses = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                tonic::codegen::http::uri::PathAndQuery::from_static(ADS_PATH),
                RawCodec,
            )
            .await?
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = responses.message().await? {
            got.push(m);
        }
        Ok(got)
    };
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call to end within 10s");
    drop(tx);
    r
}

/// Frames that cannot decode as a DiscoveryRequest.
fn bad_protobuf_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut wire_type_7 = vec![0x0f];
    wire_type_7.extend(garbage(256, 7));
    vec![
        ("an invalid wire type", wire_type_7),
        (
            "an overlong length varint",
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
        ("a truncated node message", vec![0x12, 0x40, 0x0a, 0x01]),
    ]
}

fn assert_decode_error(what: &str, r: Result<Vec<Vec<u8>>, Status>) {
    match r {
        Err(s) => assert!(
            matches!(s.code(), Code::Internal | Code::InvalidArgument),
            "{what}: unexpected status {s:?}"
        ),
        Ok(msgs) => panic!(
            "{what}: the stream ended with status OK after {} response(s) instead of an error status",
            msgs.len()
        ),
    }
}

/// Writes `bytes` on a fresh connection to the DP server (over TLS when `alpn` is given) and
/// returns what came back before the server closed the connection.
async fn write_garbage(cp: &ControlPlane, alpn: Option<&[u8]>, bytes: &[u8]) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], cp.dp_port));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    let exchange = async {
        match alpn {
            Some(alpn) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(cp, &[alpn])));
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
                let _ = tls.write_all(bytes).await;
                let _ = tls.flush().await;
                let _ = tls.read_to_end(&mut got).await;
            }
            None => {
                let mut tcp = tcp;
                let _ = tcp.write_all(bytes).await;
                let _ = tcp.read_to_end(&mut got).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .expect("the DP server to close a connection carrying garbage");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_server_refuses_garbage_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // Dataplane authentication off: the streams below are refused for their content, which
    // is checked here; refusals for missing or wrong tokens are the tokens tests' concern.
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", "none")],
    );
    put_ok(&cp, &dataplane("default", "web-1"));
    let before = stored(&cp);

    // (a) random bytes: on the raw port, and inside TLS with either ALPN.
    for (i, alpn) in [None, Some(&b"http/1.1"[..]), Some(&b"h2"[..])]
        .into_iter()
        .enumerate()
    {
        let got = write_garbage(&cp, alpn, &garbage(4096, 11 + i as u64)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.starts_with("HTTP/1.1 2"),
            "garbage ({alpn:?}) was answered with success: {text}"
        );
    }

    // (c), (d) first requests the CP must refuse, each with its status.
    let ch = ads_channel(&cp).await;
    let mut web_b = dataplane("default", "web-b");
    web_b["networking"]["inbound"][0]["port"] = json!(10005);
    let mut invalid = dataplane("default", "web-c");
    invalid["networking"]["inbound"][0]["port"] = json!(0);
    let cases: Vec<(&str, DiscoveryRequest, Code)> = vec![
        (
            "node id without a dot",
            discovery_request("nodot", None),
            Code::InvalidArgument,
        ),
        (
            "node id in an unknown mesh, no Dataplane in metadata",
            discovery_request("nope.web-x", None),
            Code::NotFound,
        ),
        (
            "node id and Dataplane in an unknown mesh",
            discovery_request("nope.web-x", Some(&dataplane("nope", "web-x").to_string())),
            Code::FailedPrecondition,
        ),
        (
            "Dataplane in metadata named differently from the node id",
            discovery_request("default.web-a", Some(&web_b.to_string())),
            Code::PermissionDenied,
        ),
        (
            "metadata dataplane.resource that is not JSON",
            discovery_request("default.web-c", Some("{not json")),
            Code::InvalidArgument,
        ),
        (
            "metadata dataplane.resource that is invalid",
            discovery_request("default.web-c", Some(&invalid.to_string())),
            Code::InvalidArgument,
        ),
    ];
    for (what, req, code) in cases {
        match ads_first_answer(&ch, req, None).await {
            Err(s) => assert_eq!(s.code(), code, "{what}: {s:?}"),
            Ok(r) => panic!("{what}: the stream was not refused: {r:?}"),
        }
        assert_unchanged(&cp, &before, what);
    }
    // Control: on the same connection, a stream for the existing web-1 is served.
    let first = ads_first_answer(&ch, discovery_request("default.web-1", None), None)
        .await
        .expect("web-1 served")
        .expect("a response");
    assert_eq!(first.type_url, CLUSTER_TYPE);

    // (b) frames that are not a DiscoveryRequest are answered with an error status; here
    // only that the connection survives them (the status is checked by the ignored test
    // `ads_frames_that_are_not_protobuf_end_with_an_error_status`).
    for (what, frame) in bad_protobuf_frames() {
        let ch = ads_channel(&cp).await;
        let _ = ads_raw_frames(&ch, vec![frame]).await;
        assert_unchanged(&cp, &before, what);
    }

    // Afterwards the CP still serves: a real kuma-dp + Envoy gets configured.
    let w = Workload::http("web-live");
    let port = free_port();
    let dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web-live",
            inbounds: vec![(port, w.port, "web-live", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let listener = format!("inbound:127.0.0.1:{port}");
    wait_for(
        "Envoy to receive its inbound listener",
        Duration::from_secs(30),
        || {
            http("GET", dp.admin, "/listeners", None)
                .ok()
                .filter(|(_, b)| b.contains(&listener))
        },
    );
    wait_for("web-live online", Duration::from_secs(10), || {
        cp.is_online("default", "web-live").then_some(())
    });
    let (code, body) = http("GET", cp.diag, "/ready", None).expect("GET /ready");
    assert_eq!(code, 200, "CP /ready: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_frames_that_are_not_protobuf_end_with_an_error_status() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", "none")],
    );
    put_ok(&cp, &dataplane("default", "web-1"));
    let before = stored(&cp);
    let ch = ads_channel(&cp).await;

    // As the first message of a stream.
    for (what, frame) in bad_protobuf_frames() {
        assert_decode_error(what, ads_raw_frames(&ch, vec![frame]).await);
    }
    // After a valid first request (the stream is served, then gets garbage).
    let mut valid = Vec::new();
    prost::Message::encode(&discovery_request("default.web-1", None), &mut valid).unwrap();
    for (what, frame) in bad_protobuf_frames() {
        assert_decode_error(
            &format!("{what} after a valid request"),
            ads_raw_frames(&ch, vec![valid.clone(), frame]).await,
        );
    }
    assert_unchanged(&cp, &before, "frames that are not protobuf");
}

// ---------------------------------------------------------------------------------------------
// 5. kuma-cp start-up errors
// ---------------------------------------------------------------------------------------------

/// Runs `kuma-cp run` with free ports except `env` overrides; returns its exit status and
/// stderr once it exits, failing if it is still running after 10 s.
fn kuma_cp_failing_start(
    work_dir: &Path,
    env: &[(&str, String)],
    args: &[&str],
) -> (ExitStatus, String) {
    std::fs::create_dir_all(work_dir).unwrap();
    let stderr_path = work_dir.join("stderr.log");
    let mut cmd = Command::new(binary("kuma-cp"));
    cmd.arg("run")
        .args(args)
        .env("KUMA_GENERAL_WORK_DIR", work_dir)
        .env("KUMA_API_SERVER_HTTP_INTERFACE", "127.0.0.1")
        .env("KUMA_API_SERVER_HTTP_PORT", free_port().to_string())
        .env("KUMA_API_SERVER_HTTPS_INTERFACE", "127.0.0.1")
        .env("KUMA_API_SERVER_HTTPS_PORT", free_port().to_string())
        .env("KUMA_DP_SERVER_INTERFACE", "127.0.0.1")
        .env("KUMA_DP_SERVER_PORT", free_port().to_string())
        .env("KUMA_DIAGNOSTICS_INTERFACE", "127.0.0.1")
        .env("KUMA_DIAGNOSTICS_SERVER_PORT", free_port().to_string())
        .env("KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE", "127.0.0.1")
        .env(
            "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT",
            free_port().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting kuma-cp");
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for kuma-cp") {
            break st;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kuma-cp still running after 10s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

#[test]
fn kuma_cp_exits_naming_a_taken_port_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, var) in [
        ("apiServer.http.port", "KUMA_API_SERVER_HTTP_PORT"),
        ("apiServer.https.port", "KUMA_API_SERVER_HTTPS_PORT"),
        ("dpServer.port", "KUMA_DP_SERVER_PORT"),
        ("diagnostics.serverPort", "KUMA_DIAGNOSTICS_SERVER_PORT"),
        (
            "monitoringAssignmentServer.port",
            "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT",
        ),
    ] {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let (status, stderr) =
            kuma_cp_failing_start(&dir.path().join(var), &[(var, port.to_string())], &[]);
        assert!(!status.success(), "{key}: kuma-cp exited {status:?}");
        assert!(
            stderr.contains(key) && stderr.contains(&port.to_string()),
            "{key}: stderr does not name the key and port {port}:\n{stderr}"
        );
    }
}

#[test]
fn kuma_cp_exits_naming_an_unknown_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kuma-cp.yaml");
    std::fs::write(&file, "apiServer:\n  http:\n    prot: 5681\n").unwrap();
    let (status, stderr) = kuma_cp_failing_start(
        &dir.path().join("cp"),
        &[],
        &["--config-file", file.to_str().unwrap()],
    );
    assert!(!status.success(), "kuma-cp exited {status:?}");
    assert!(
        stderr.contains("prot") && stderr.contains("apiServer.http"),
        "stderr does not name the unknown key apiServer.http.prot:\n{stderr}"
    );
}
