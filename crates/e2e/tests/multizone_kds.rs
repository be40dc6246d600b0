//! A global control plane and federated zone control planes over KDS, on loopback (the data
//! path across zones is in `multizone.rs`, in network namespaces): what flows where, with
//! Kuma's names and labels; who may write what on each side; resync after a restart or a
//! disconnect, deletions made while apart included; zone authentication by zone token.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::*;
use serde_json::{Value, json};

fn dataplane(name: &str, service: &str) -> Value {
    json!({
        "type": "Dataplane", "mesh": "default", "name": name,
        "networking": {"address": "127.0.0.1", "inbound": [
            {"port": 9000, "servicePort": 9001, "tags": {"kuma.io/service": service}}
        ]}
    })
}

fn mtp(name: &str, labels: Value) -> Value {
    json!({
        "type": "MeshTrafficPermission", "mesh": "default", "name": name, "labels": labels,
        "spec": {"targetRef": {"kind": "Mesh"},
                 "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}
    })
}

/// The items of a list endpoint by their `kuma.io/display-name` label.
fn by_display_name(cp: &ControlPlane, path: &str) -> std::collections::BTreeMap<String, Value> {
    let (code, v) = cp.get(path);
    assert_eq!(code, 200, "GET {path}: {v}");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let d = i["labels"]["kuma.io/display-name"].as_str()?;
            Some((d.to_string(), i.clone()))
        })
        .collect()
}

fn display_names(cp: &ControlPlane, path: &str) -> BTreeSet<String> {
    by_display_name(cp, path).into_keys().collect()
}

/// A name Kuma's hash suffix made from `display`: `<display>-<16 safe characters>`.
fn is_hashed(name: &str, display: &str) -> bool {
    name.strip_prefix(display)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| {
            h.len() == 16
                && h.bytes()
                    .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c))
        })
}

#[test]
fn resources_flow_both_ways_with_kumas_names_labels_and_write_rules() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    let zone =
        ControlPlane::start_zone(&global, "zone-1", Some(&token), &dir.path().join("z1"), &[]);

    // Global -> zone: the Mesh (its name kept), a policy (hashed, labelled, origin global).
    wait_for(
        "the default Mesh on zone-1",
        Duration::from_secs(15),
        || {
            zone.names("/meshes")
                .contains(&"default".to_string())
                .then_some(())
        },
    );
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/allow-all",
        &mtp("allow-all", json!({})),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    let synced = wait_for("allow-all on zone-1", Duration::from_secs(10), || {
        by_display_name(&zone, "/meshes/default/meshtrafficpermissions").remove("allow-all")
    });
    let name = synced["name"].as_str().unwrap().to_string();
    assert!(is_hashed(&name, "allow-all"), "{synced}");
    assert_eq!(synced["labels"]["kuma.io/origin"], "global", "{synced}");
    assert!(synced["labels"].get("kuma.io/zone").is_none(), "{synced}");
    assert_eq!(synced["spec"], mtp("allow-all", json!({}))["spec"]);

    // ...and read-only there: updating needs origin zone (which it is not), deleting is Kuma's 405.
    let (code, body) = zone.put(
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        &mtp(&name, json!({})),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["invalid_parameters"][0]["field"], "labels[\"kuma.io/origin\"]",
        "{body}"
    );
    assert_eq!(
        body["invalid_parameters"][0]["reason"], "the origin label must be set to 'zone'",
        "{body}"
    );
    let (code, body) = http(
        "DELETE",
        zone.api,
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        None,
    )
    .unwrap();
    assert_eq!(code, 405, "{body}");
    assert!(
        body.contains("On zone control plane you can only modify zone resources"),
        "{body}"
    );
    let (code, body) = http("DELETE", zone.api, "/meshes/default", None).unwrap();
    assert_eq!(code, 405, "{body}");

    // Zone -> global: a Dataplane, hashed with its zone, labelled, its inbound tagged.
    let (code, body) = zone.put(
        "/meshes/default/dataplanes/dp-1",
        &dataplane("dp-1", "backend"),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    let dp = wait_for("dp-1 on global", Duration::from_secs(10), || {
        by_display_name(&global, "/meshes/default/dataplanes").remove("dp-1")
    });
    assert!(is_hashed(dp["name"].as_str().unwrap(), "dp-1"), "{dp}");
    assert_eq!(dp["labels"]["kuma.io/origin"], "zone", "{dp}");
    assert_eq!(dp["labels"]["kuma.io/zone"], "zone-1", "{dp}");
    assert_eq!(
        dp["networking"]["inbound"][0]["tags"]["kuma.io/zone"], "zone-1",
        "{dp}"
    );
    // Global's ZoneInsight: the zone's subscription, both instances, per-type counters.
    let insight = wait_for(
        "zone-1's counters on global",
        Duration::from_secs(15),
        || {
            let (code, v) = global.get("/zones+insights/zone-1");
            let sub = v["zoneInsight"]["subscriptions"]
                .as_array()?
                .last()?
                .clone();
            let n = |t: &str, k: &str| {
                sub["status"]["stat"][t][k]
                    .as_str()
                    .and_then(|c| c.parse::<u64>().ok())
            };
            (code == 200
                && n("Mesh", "responsesAcknowledged")? >= 1
                && n("MeshTrafficPermission", "responsesSent")? >= 2)
                .then_some(sub)
        },
    );
    assert!(
        insight["connectTime"].is_string() && insight.get("disconnectTime").is_none(),
        "{insight}"
    );
    assert!(
        !insight["globalInstanceId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{insight}"
    );
    assert!(
        !insight["zoneInstanceId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{insight}"
    );
    // Zero counters are left out, as protobuf JSON does.
    assert!(
        insight["status"]["total"]
            .get("responsesRejected")
            .is_none(),
        "{insight}"
    );
    // The zone keeps its own ZoneInsight of the same connection: the same two instances.
    let local = wait_for("zone-1's own ZoneInsight", Duration::from_secs(10), || {
        let (code, v) = zone.get("/zone-insights/zone-1");
        let sub = v["subscriptions"].as_array()?.last()?.clone();
        (code == 200 && sub.get("disconnectTime").is_none()).then_some(sub)
    });
    assert_eq!(
        local["globalInstanceId"], insight["globalInstanceId"],
        "{local}"
    );
    assert_eq!(
        local["zoneInstanceId"], insight["zoneInstanceId"],
        "{local}"
    );
    // Global does not write what zones provide.
    let (code, body) = global.put("/meshes/default/dataplanes/x", &dataplane("x", "b"));
    assert_eq!(code, 405, "{body}");
    assert!(
        body.to_string()
            .contains("On global control plane you can not modify dataplane resources"),
        "{body}"
    );

    // A policy created on the zone needs origin zone, and then reaches global as the zone's.
    let (code, body) = zone.put(
        "/meshes/default/meshtrafficpermissions/local",
        &mtp("local", json!({})),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["invalid_parameters"][0]["field"], "labels[\"kuma.io/origin\"]",
        "{body}"
    );
    let (code, body) = zone.put(
        "/meshes/default/meshtrafficpermissions/local",
        &mtp("local", json!({"kuma.io/origin": "zone"})),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    let p = wait_for("zone-1's policy on global", Duration::from_secs(10), || {
        by_display_name(&global, "/meshes/default/meshtrafficpermissions").remove("local")
    });
    assert_eq!(p["labels"]["kuma.io/zone"], "zone-1", "{p}");
    assert_eq!(p["labels"]["kuma.io/origin"], "zone", "{p}");
    // Global's own policy does not come back to the zone twice, nor the zone's own.
    let on_zone = display_names(&zone, "/meshes/default/meshtrafficpermissions");
    assert_eq!(
        on_zone,
        BTreeSet::from(["allow-all".to_string()]),
        "zone-origin 'local' has no display name label on its zone"
    );
    assert_eq!(
        zone.names("/meshes/default/meshtrafficpermissions").len(),
        2
    );

    // Secrets of the mesh (its dataplane token signing key) come down; zone secrets stay.
    wait_for(
        "the mesh's signing key on zone-1",
        Duration::from_secs(10),
        || {
            zone.names("/meshes/default/secrets")
                .contains(&"dataplane-token-signing-key-default-1".to_string())
                .then_some(())
        },
    );
    let (code, body) = zone.put(
        "/meshes/default/secrets/zone-only",
        &json!({"type": "Secret", "mesh": "default", "name": "zone-only", "data": "YQ=="}),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !global
            .names("/meshes/default/secrets")
            .iter()
            .any(|n| n.starts_with("zone-only"))
    );
    // The zone gets global's zone token public key, never a private signing key.
    let gs = zone.names("/global-secrets");
    assert!(
        gs.contains(&"zone-token-signing-public-key-1".to_string()),
        "{gs:?}"
    );
    assert!(
        !gs.iter().any(|n| n.starts_with("zone-token-signing-key")),
        "{gs:?}"
    );
}

#[test]
fn resync_after_restarts_applies_what_changed_while_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    let mut zone =
        ControlPlane::start_zone(&global, "zone-1", Some(&token), &dir.path().join("z1"), &[]);
    wait_for(
        "the default Mesh on zone-1",
        Duration::from_secs(15),
        || {
            zone.names("/meshes")
                .contains(&"default".to_string())
                .then_some(())
        },
    );
    for n in ["dp-a", "dp-b"] {
        let (code, body) = zone.put(
            &format!("/meshes/default/dataplanes/{n}"),
            &dataplane(n, "backend"),
        );
        assert!(code == 201 || code == 200, "{code} {body}");
    }
    for n in ["p1", "p2"] {
        let (code, body) = global.put(
            &format!("/meshes/default/meshtrafficpermissions/{n}"),
            &mtp(n, json!({})),
        );
        assert!(code == 201 || code == 200, "{code} {body}");
    }
    let dps = |cp: &ControlPlane| display_names(cp, "/meshes/default/dataplanes");
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    wait_for("both Dataplanes on global", Duration::from_secs(10), || {
        (dps(&global) == set(&["dp-a", "dp-b"])).then_some(())
    });
    wait_for("both policies on zone-1", Duration::from_secs(10), || {
        (zone.names("/meshes/default/meshtrafficpermissions").len() == 2).then_some(())
    });
    let zone_before = zone.get("/meshes/default/meshtrafficpermissions").1["items"].clone();
    let zone_meshes = zone.names("/meshes");

    // Global dies; the zone changes meanwhile.
    global.kill();
    assert_eq!(
        http("DELETE", zone.api, "/meshes/default/dataplanes/dp-a", None)
            .unwrap()
            .0,
        200
    );
    let (code, body) = zone.put("/meshes/default/dataplanes/dp-c", &dataplane("dp-c", "web"));
    assert!(code == 201 || code == 200, "{code} {body}");
    std::thread::sleep(Duration::from_millis(300));
    global.restart();
    wait_for(
        "global to converge on the zone's set",
        Duration::from_secs(15),
        || (dps(&global) == set(&["dp-b", "dp-c"])).then_some(()),
    );
    // The zone's copy of global's resources is exactly what it was (no duplicates, no churn).
    std::thread::sleep(Duration::from_secs(1));
    let zone_after = zone.get("/meshes/default/meshtrafficpermissions").1["items"].clone();
    let strip = |v: &Value| -> Vec<(Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].clone(), i["labels"].clone(), i["spec"].clone()))
            .collect()
    };
    assert_eq!(strip(&zone_before), strip(&zone_after));
    assert_eq!(zone.names("/meshes"), zone_meshes);
    // Modification times unchanged too: the resync rewrote nothing.
    assert_eq!(zone_before, zone_after);

    // The zone dies; global deletes a policy meanwhile; the zone restarts and drops it.
    zone.kill();
    assert_eq!(
        http(
            "DELETE",
            global.api,
            "/meshes/default/meshtrafficpermissions/p1",
            None
        )
        .unwrap()
        .0,
        200
    );
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/p3",
        &mtp("p3", json!({})),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    zone.restart();
    wait_for(
        "zone-1 to converge on global's set",
        Duration::from_secs(15),
        || {
            (display_names(&zone, "/meshes/default/meshtrafficpermissions") == set(&["p2", "p3"]))
                .then_some(())
        },
    );
    // What the zone provides is still on global, once each.
    assert_eq!(dps(&global), set(&["dp-b", "dp-c"]));
    assert_eq!(global.names("/meshes/default/dataplanes").len(), 2);
}

/// Claims of a JWT (unverified).
fn jti(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&base64_decode(payload)).expect("JSON claims");
    claims["jti"].as_str().expect("jti").to_string()
}

#[test]
fn zones_need_a_valid_cp_token_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    // Something a refused zone must never get.
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/secret-policy",
        &mtp("secret-policy", json!({})),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    let other = global.zone_token("zone-2", &["cp"], "1h");
    let ingress = global.zone_token("zone-1", &["ingress"], "1h");
    let expiring = global.zone_token("zone-1", &["cp"], "1s");
    let revoked = global.zone_token("zone-1", &["cp"], "1h");
    let (code, body) = global.put(
        "/global-secrets/zone-token-revocations",
        &json!({"type": "GlobalSecret", "name": "zone-token-revocations", "data": base64_encode(jti(&revoked).as_bytes())}),
    );
    assert!(code == 201 || code == 200, "{code} {body}");
    std::thread::sleep(Duration::from_secs(7)); // past the 1s validity and the 5s clock skew
    let cases: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("another zone's token", Some(&other)),
        ("an ingress-scope token", Some(&ingress)),
        ("an expired token", Some(&expiring)),
        ("a revoked token", Some(&revoked)),
    ];
    for (i, (what, token)) in cases.iter().enumerate() {
        let mut zone = ControlPlane::start_zone(
            &global,
            "zone-1",
            *token,
            &dir.path().join(format!("z{i}")),
            &[],
        );
        let (code, body) = zone.put(
            "/meshes/default/dataplanes/dp-1",
            &dataplane("dp-1", "backend"),
        );
        // A federated zone has no default Mesh of its own: nothing came from global.
        assert_eq!(code, 404, "{what}: {body}");
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            zone.names("/meshes").is_empty(),
            "{what}: the zone got global's meshes"
        );
        assert!(
            !global.names("/zones").contains(&"zone-1".to_string()),
            "{what}: zone-1 listed on global"
        );
        let log = zone.proc.log_text();
        assert!(
            log.contains("invalid zone token") || log.contains("zone token required"),
            "{what}: {log}"
        );
        zone.kill();
    }
    // The same zone with a good token is accepted (the cases above could have passed).
    let good = global.zone_token("zone-1", &["cp"], "1h");
    let zone = ControlPlane::start_zone(
        &global,
        "zone-1",
        Some(&good),
        &dir.path().join("good"),
        &[],
    );
    wait_for("zone-1 on global", Duration::from_secs(10), || {
        global
            .names("/zones")
            .contains(&"zone-1".to_string())
            .then_some(())
    });
    wait_for("global's policy on zone-1", Duration::from_secs(10), || {
        display_names(&zone, "/meshes/default/meshtrafficpermissions")
            .contains("secret-policy")
            .then_some(())
    });
}

/// A hostile zone CP, speaking KDS by hand with a valid token of zone-1.
mod raw {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;
    use tokio::sync::mpsc;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;
    use tonic::{Request, Streaming};

    /// Kuma's `KumaResource` envelope, as this project's KDS sends it (spec = REST JSON).
    #[derive(Clone, PartialEq, Message)]
    struct KumaResource {
        #[prost(message, optional, tag = "1")]
        meta: Option<Meta>,
        #[prost(message, optional, tag = "2")]
        spec: Option<Any>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Meta {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        mesh: String,
        #[prost(map = "string, string", tag = "4")]
        labels: HashMap<String, String>,
    }

    /// Kuma's KDS name of `name` in `zone`: `<name>-<fnv64a(mesh+name+zone), safe-encoded>`.
    pub fn hashed(mesh: &str, name: &str, zone: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in [mesh, name, zone].concat().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        let hash: String = format!("{h:016x}")
            .bytes()
            .map(|c| char::from(alphabet[usize::from(c) % alphabet.len()]))
            .collect();
        format!("{name}-{hash}")
    }

    /// A delta resource carrying the Dataplane document `doc`.
    pub fn dataplane(doc: &serde_json::Value) -> Resource {
        let name = doc["name"].as_str().unwrap().to_string();
        let env = KumaResource {
            meta: Some(Meta {
                name: name.clone(),
                mesh: "default".into(),
                labels: HashMap::new(),
            }),
            spec: Some(Any {
                type_url: "kuma-rs/json".into(),
                value: serde_json::to_vec(doc).unwrap(),
            }),
        };
        Resource {
            name: format!("{name}.default"),
            version: "1".into(),
            resource: Some(Any {
                type_url: "Dataplane".into(),
                value: env.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn with_token<T>(msg: T, token: &str) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    /// `GlobalToZoneSync` with `node_id`: the status of the first answer.
    pub async fn global_to_zone(channel: Channel, token: &str, node_id: &str) -> tonic::Code {
        let (tx, rx) = mpsc::channel(4);
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: node_id.into(),
                ..Default::default()
            }),
            type_url: "Mesh".into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec =
            tonic_prost::ProstCodec::<DeltaDiscoveryRequest, DeltaDiscoveryResponse>::default();
        let path = PathAndQuery::from_static("/kuma.mesh.v1alpha1.KDSSyncService/GlobalToZoneSync");
        match grpc
            .streaming(with_token(ReceiverStream::new(rx), token), path, codec)
            .await
        {
            Err(s) => s.code(),
            Ok(resp) => match resp.into_inner().next().await {
                Some(Err(s)) => s.code(),
                Some(Ok(_)) => tonic::Code::Ok,
                None => tonic::Code::Unknown,
            },
        }
    }

    /// `ZoneToGlobalSync`: global's requests in, this side's responses out.
    pub async fn zone_to_global(
        channel: Channel,
        token: &str,
    ) -> (
        mpsc::Sender<DeltaDiscoveryResponse>,
        Streaming<DeltaDiscoveryRequest>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec =
            tonic_prost::ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default();
        let path = PathAndQuery::from_static("/kuma.mesh.v1alpha1.KDSSyncService/ZoneToGlobalSync");
        let resp = grpc
            .streaming(with_token(ReceiverStream::new(rx), token), path, codec)
            .await
            .expect("ZoneToGlobalSync opened");
        (tx, resp.into_inner())
    }
}

mod support;

#[tokio::test(flavor = "multi_thread")]
async fn a_zone_cannot_write_for_another_zone_over_kds() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use tokio_stream::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    let channel = support::grpc_channel(&global, global.kds_port).await;

    // Zone-1's token does not make a stream zone-2's.
    assert_eq!(
        raw::global_to_zone(channel.clone(), &token, "zone-2").await,
        tonic::Code::Unauthenticated
    );
    assert!(!global.names("/zones").contains(&"zone-2".to_string()));

    // On ZoneToGlobalSync, global asks for the zone's Dataplanes; each answer is checked.
    let (tx, mut requests) = raw::zone_to_global(channel, &token).await;
    let doc = |name: &str, zone_label: &str, tag_zone: &str, display: &str| {
        json!({"type": "Dataplane", "mesh": "default", "name": name,
            "labels": {"kuma.io/origin": "zone", "kuma.io/zone": zone_label, "kuma.io/display-name": display},
            "networking": {"address": "127.0.0.1", "inbound": [
                {"port": 9000, "tags": {"kuma.io/service": "backend", "kuma.io/zone": tag_zone}}]}})
    };
    let cases = [
        (
            "labelled zone-2",
            doc(
                &raw::hashed("default", "dp", "zone-2"),
                "zone-2",
                "zone-2",
                "dp",
            ),
            false,
        ),
        (
            "an inbound tagged zone-2",
            doc(
                &raw::hashed("default", "dp", "zone-1"),
                "zone-1",
                "zone-2",
                "dp",
            ),
            false,
        ),
        (
            "a name that is not its hash in zone-1",
            doc("dp-of-zone-2", "zone-1", "zone-1", "dp"),
            false,
        ),
        (
            "zone-1's own",
            doc(
                &raw::hashed("default", "dp", "zone-1"),
                "zone-1",
                "zone-1",
                "dp",
            ),
            true,
        ),
    ];
    for (i, (what, dp, accepted)) in cases.into_iter().enumerate() {
        let nonce = format!("n{i}");
        tx.send(DeltaDiscoveryResponse {
            type_url: "Dataplane".into(),
            nonce: nonce.clone(),
            resources: vec![raw::dataplane(&dp)],
            ..Default::default()
        })
        .await
        .unwrap();
        let answer = loop {
            let r = tokio::time::timeout(Duration::from_secs(10), requests.next())
                .await
                .expect("global answers")
                .expect("stream open")
                .expect("a request");
            if r.type_url == "Dataplane" && r.response_nonce == nonce {
                break r;
            }
        };
        assert_eq!(
            answer.error_detail.is_none(),
            accepted,
            "{what}: {:?}",
            answer.error_detail
        );
        let stored = global.names("/meshes/default/dataplanes");
        if accepted {
            assert_eq!(
                stored,
                vec![dp["name"].as_str().unwrap().to_string()],
                "{what}"
            );
        } else {
            assert!(stored.is_empty(), "{what}: global stored {stored:?}");
        }
    }
}

#[test]
fn global_is_verified_unless_verification_is_skipped_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    // A CA that did not sign global's certificate: the zone refuses global, gets nothing.
    openssl_ca(&dir.path().join("other-ca"), "other-ca");
    let other = dir.path().join("other-ca/ca.crt").display().to_string();
    let mut zone = ControlPlane::start_zone(
        &global,
        "zone-1",
        Some(&token),
        &dir.path().join("z-other-ca"),
        &[("KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE", other.as_str())],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        zone.names("/meshes").is_empty(),
        "the zone trusted a global its CA did not sign"
    );
    assert!(!global.names("/zones").contains(&"zone-1".to_string()));
    let log = zone.proc.log_text();
    assert!(log.contains("KDS: connection to global ended"), "{log}");
    zone.kill();
    // Verification skipped: it connects, and says so.
    let zone = ControlPlane::start_zone(
        &global,
        "zone-1",
        Some(&token),
        &dir.path().join("z-skip"),
        &[
            ("KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE", ""),
            ("KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY", "true"),
        ],
    );
    wait_for(
        "the default Mesh on zone-1",
        Duration::from_secs(15),
        || {
            zone.names("/meshes")
                .contains(&"default".to_string())
                .then_some(())
        },
    );
    assert!(
        zone.proc
            .log_text()
            .contains("tlsSkipVerify is set: global's KDS certificate is NOT verified"),
        "no warning"
    );
}
