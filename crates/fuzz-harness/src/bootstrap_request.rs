//! `bootstrap_request`: `POST /bootstrap` without the store. The input is the `Host` header
//! up to the first newline, then the body (no newline: the whole input is the body). The
//! body goes through `bootstrap::decode` and `bootstrap::dataplane_from_request`; a request
//! naming its Dataplane by mesh and name gets a stand-in for the stored one; the Envoy
//! bootstrap is rendered by `bootstrap::envoy_bootstrap` for a CP with and without a
//! configured xDS host.
//!
//! Invariants: a refusal is a 4xx; a request that passes always renders; the YAML parses
//! back and carries what the request gave (node id, the Dataplane in the node metadata in the
//! form the ADS registration decodes, version, dynamic metadata, features, work dir, CA,
//! token, xDS host).

use kuma_core::Resource;
use kuma_cp::bootstrap::{self, Params, Request};
use kuma_cp::xds::lifecycle::{METADATA_RESOURCE, parse_node_id};
use serde_json::{Value, json};

use crate::check;

const CA_PEM: &str = include_str!("../../kuma-cp/testdata/bootstrap/ca.pem");

pub fn run(data: &[u8]) {
    let (host_header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("kuma-cp.mesh:5678".to_string(), data),
    };
    let req = match bootstrap::decode(body) {
        Ok(r) => r,
        Err(refusal) => {
            assert!(refusal.status().is_client_error(), "{}", refusal.status());
            return;
        }
    };
    let dataplane = match bootstrap::dataplane_from_request(&req) {
        Ok(Some(dp)) => dp,
        Ok(None) => match stored(&req) {
            Some(dp) => dp,
            // No such Dataplane can be stored: the handler answers 404 or 422.
            None => return,
        },
        Err(refusal) => {
            assert!(refusal.status().is_client_error(), "{}", refusal.status());
            return;
        }
    };
    let host = bootstrap::host_without_port(&host_header);
    for xds_host in ["", "kuma-cp.example"] {
        let params = Params {
            admin_address: "127.0.0.1".into(),
            admin_port: 9901,
            xds_host: xds_host.into(),
            xds_port: 5678,
            xds_connect_timeout: "1s".into(),
            ca_pem: CA_PEM.into(),
        };
        let yaml = bootstrap::envoy_bootstrap(&params, &req, &dataplane, &host)
            .unwrap_or_else(|e| panic!("an accepted request does not render: {e}"));
        let expected_host = if xds_host.is_empty() { &host } else { xds_host };
        check_rendered(&yaml, &req, &dataplane, expected_host);
    }
}

/// The Dataplane a request by mesh and name would find in the store, if such a one can exist.
fn stored(req: &Request) -> Option<Resource> {
    if req.mesh.is_empty() || req.name.is_empty() {
        return None;
    }
    Resource::from_wire(
        json!({"type": "Dataplane", "mesh": req.mesh, "name": req.name,
            "networking": {"address": "10.0.0.1",
                "inbound": [{"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "web"}}]}}),
        None,
    )
    .ok()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn check_rendered(yaml: &str, req: &Request, dataplane: &Resource, xds_host: &str) {
    let v: Value = serde_saphyr::from_str(yaml)
        .unwrap_or_else(|e| panic!("the bootstrap is not YAML: {e}\n{yaml}"));
    let node_id = at(&v, &["node", "id"]).as_str().expect("node.id");
    let (mesh, name) = parse_node_id(node_id).expect("the node id parses");
    assert_eq!(
        (mesh.as_str(), name.as_str()),
        (dataplane.meta.mesh.as_str(), dataplane.meta.name.as_str())
    );
    let metadata = at(&v, &["node", "metadata"]);
    let text = metadata[METADATA_RESOURCE]
        .as_str()
        .expect("the Dataplane is in the node metadata");
    let value: Value = serde_json::from_str(text).expect("the embedded Dataplane is JSON");
    let embedded = Resource::from_wire(value.clone(), Some(dataplane.rtype()))
        .unwrap_or_else(|e| panic!("the embedded Dataplane is refused: {e}\n{text}"));
    check::same_resource(dataplane, &embedded, &value);
    if !req.version.is_null() {
        assert!(
            check::same_json(&metadata["version"], &req.version),
            "version changed: {} vs {}",
            metadata["version"],
            req.version
        );
    }
    if req
        .dynamic_metadata
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        assert!(
            check::same_json(&metadata["dynamicMetadata"], &req.dynamic_metadata),
            "dynamic metadata changed: {} vs {}",
            metadata["dynamicMetadata"],
            req.dynamic_metadata
        );
    }
    assert_eq!(metadata["workdir"], Value::String(req.workdir.clone()));
    assert_eq!(metadata["features"], json!(req.features));
    let secret = &v["static_resources"]["secrets"][0];
    let trusted = secret["validation_context"]["trusted_ca"]["inline_string"].as_str();
    let want_ca = if req.ca_cert.trim().is_empty() {
        CA_PEM
    } else {
        req.ca_cert.as_str()
    };
    assert_eq!(trusted, Some(want_ca), "trusted CA changed");
    let grpc = &v["dynamic_resources"]["ads_config"]["grpc_services"][0];
    if !req.dataplane_token.is_empty() {
        assert_eq!(
            grpc["initial_metadata"][0]["value"].as_str(),
            Some(req.dataplane_token.trim()),
            "token changed"
        );
    }
    let cluster = &v["static_resources"]["clusters"][0];
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["address"];
    assert_eq!(address.as_str(), Some(xds_host), "xDS host changed");
}
