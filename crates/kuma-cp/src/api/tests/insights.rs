//! The insight endpoints over a running [`crate::insights::Resyncer`]: exact bodies (our own
//! expected JSON in the shapes of Kuma's goldens), filters, paging, 404 and 405 rules.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use kuma_core::Resource;
use kuma_core::store::memory::MemoryStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::super::insights::View;
use super::super::{State, router};
use super::Api;
use crate::insights::{Insights, Resyncer};
use crate::manager::ResourceManager;
use crate::tokens::{Issuer, Validator};

/// An API whose insights come from a resyncer on the same store (domain `internal`, VIP
/// port 8080); the resyncer stops with the token.
fn api_with_insights() -> (Api, Arc<ResourceManager>, Insights, CancellationToken) {
    let manager = Arc::new(
        ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
            .with_mesh_side_effects(Arc::new(crate::mesh_setup::MeshSetup)),
    );
    let (resyncer, insights) = Resyncer::new(manager.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(resyncer.run(shutdown.clone()));
    let state = State {
        manager: manager.clone(),
        index: json!({}),
        config: json!({}),
        zone: "zone-1".into(),
        issuer: Arc::new(Issuer::new(manager.clone())),
        validator: Arc::new(Validator::new(manager.clone(), true)),
        localhost_is_admin: true,
        mesh_status: Default::default(),
        insights: View {
            insights: insights.clone(),
            dns_domain: "internal".into(),
            vip_port: 8080,
        },
        envoy_admin: None,
    };
    (
        Api {
            router: router(state),
        },
        manager,
        insights,
        shutdown,
    )
}

fn wire(v: Value) -> Resource {
    Resource::from_wire(v, None).expect("valid")
}

fn dp(mesh: &str, name: &str, networking: Value) -> Resource {
    wire(json!({"type": "Dataplane", "mesh": mesh, "name": name, "networking": networking}))
}

fn inbound(port: u16, svc: &str) -> Value {
    json!({"port": port, "tags": {"kuma.io/service": svc}})
}

/// A DataplaneInsight: connected (or disconnected), with versions and mTLS backend.
fn insight(mesh: &str, name: &str, online: bool, backend: Option<&str>) -> Resource {
    let mut sub = json!({"id": "1", "controlPlaneInstanceId": "cp",
        "connectTime": "2026-01-01T00:00:00Z",
        "version": {"kumaDp": {"version": "2.14.3"}, "envoy": {"version": "1.38.2"}}});
    if !online {
        sub["disconnectTime"] = json!("2026-01-01T00:01:00Z");
    }
    let mut v =
        json!({"type": "DataplaneInsight", "mesh": mesh, "name": name, "subscriptions": [sub]});
    if let Some(b) = backend {
        v["mTLS"] = json!({"issuedBackend": b, "supportedBackends": [b]});
    }
    wire(v)
}

/// The item without its times (checked apart: RFC 3339, equal within a mesh's insight).
fn timeless(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["creationTime", "modificationTime"] {
            let t = o.remove(k).expect("times are present");
            chrono::DateTime::parse_from_rfc3339(t.as_str().expect("a string")).expect("RFC 3339");
        }
    }
    v
}

#[tokio::test]
async fn service_mesh_and_global_insights() {
    let (api, m, insights, shutdown) = api_with_insights();
    for mesh in ["default", "other"] {
        m.upsert(wire(json!({"type": "Mesh", "name": mesh})))
            .await
            .expect("mesh");
    }
    let net = |inb: Vec<Value>| json!({"address": "10.0.0.1", "inbound": inb});
    for (name, online) in [("backend-1", true), ("backend-2", false)] {
        m.upsert(dp("default", name, net(vec![inbound(80, "backend")])))
            .await
            .expect("dp");
        m.upsert_internal(insight("default", name, online, Some("ca-1")))
            .await
            .expect("insight");
    }
    m.upsert(dp("default", "web-1", net(vec![inbound(80, "web")])))
        .await
        .expect("dp");
    m.upsert_internal(insight("default", "web-1", true, None))
        .await
        .expect("insight");
    m.upsert(dp(
        "default",
        "edge-1",
        json!({"address": "10.0.0.2", "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": "edge"}}}),
    ))
    .await
    .expect("gateway");
    m.upsert_internal(insight("default", "edge-1", true, None))
        .await
        .expect("insight");
    m.upsert(dp("other", "db-1", net(vec![inbound(5432, "db")])))
        .await
        .expect("dp");
    let started = std::time::Instant::now();
    loop {
        let s = insights.snapshot();
        let done = s.meshes.get("default").is_some_and(|e| {
            e.services.len() == 3 && e.mesh.dataplanes.total == 4 && e.mesh.dataplanes.online == 3
        }) && s.meshes.contains_key("other");
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // One mesh's services, in Kuma's item shape and key order.
    let r = api.get("/meshes/default/service-insights").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let first = &r.body["items"][0];
    let keys: Vec<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "type",
            "mesh",
            "name",
            "creationTime",
            "modificationTime",
            "status",
            "dataplanes",
            "issuedBackends",
            "addressPort",
            "zones"
        ]
    );
    let items: Vec<Value> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .cloned()
        .map(timeless)
        .collect();
    assert_eq!(
        Value::Array(items),
        json!([
            {"type": "ServiceInsight", "mesh": "default", "name": "backend",
             "status": "partially_degraded", "dataplanes": {"total": 2, "online": 1, "offline": 1},
             "issuedBackends": {"ca-1": 2}, "addressPort": "backend.internal:8080", "zones": ["zone-1"]},
            {"type": "ServiceInsight", "mesh": "default", "name": "edge",
             "status": "online", "dataplanes": {"total": 1, "online": 1},
             "serviceType": "gateway_builtin", "zones": ["zone-1"]},
            {"type": "ServiceInsight", "mesh": "default", "name": "web",
             "status": "online", "dataplanes": {"total": 1, "online": 1},
             "addressPort": "web.internal:8080", "zones": ["zone-1"]},
        ])
    );
    assert_eq!(r.body["total"], 3);
    assert!(r.body["next"].is_null());

    // Filters and paging.
    let r = api
        .get("/meshes/default/service-insights?type=gateway_builtin,INTERNAL&name=e")
        .await;
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["backend", "edge", "web"], "{}", r.body);
    let r = api
        .get("/meshes/default/service-insights?type=gateway_delegated")
        .await;
    assert_eq!(r.body["total"], 0);
    let r = api
        .get("/meshes/default/service-insights?type=random-type")
        .await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["type"]);
    assert_eq!(r.body["detail"], "unsupported service type");
    let r = api.get("/meshes/default/service-insights?size=2").await;
    assert_eq!(r.body["total"], 3);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        r.body["next"],
        "http://localhost:5681/meshes/default/service-insights?size=2&offset=2"
    );
    api.get("/meshes/default/service-insights?size=0")
        .await
        .assert_error(StatusCode::BAD_REQUEST);

    // Across meshes: sorted by mesh, then name.
    let r = api.get("/service-insights").await;
    let pairs: Vec<String> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["mesh"].as_str().unwrap_or(""),
                i["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        pairs,
        ["default/backend", "default/edge", "default/web", "other/db"]
    );
    // A mesh with no insights lists nothing.
    assert_eq!(
        api.get("/meshes/nope/service-insights").await.body,
        json!({"total": 0, "items": [], "next": null})
    );

    // One service; an unknown one of a mesh with insights: empty stats, an address.
    let r = api.get("/meshes/other/service-insights/db").await;
    assert_eq!(
        timeless(r.body),
        json!({"type": "ServiceInsight", "mesh": "other", "name": "db", "status": "offline",
               "dataplanes": {"total": 1, "offline": 1}, "addressPort": "db.internal:8080",
               "zones": ["zone-1"]})
    );
    let r = api.get("/meshes/other/service-insights/ghost").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        timeless(r.body),
        json!({"type": "ServiceInsight", "mesh": "other", "name": "ghost", "dataplanes": {},
               "addressPort": "ghost.internal:8080"})
    );
    api.get("/meshes/nope/service-insights/db")
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // Read-only.
    for (method, path) in [
        ("PUT", "/meshes/default/service-insights/backend"),
        ("DELETE", "/meshes/default/service-insights/backend"),
        ("PUT", "/mesh-insights/default"),
        ("DELETE", "/mesh-insights/default"),
        ("POST", "/global-insight"),
    ] {
        api.call(method, path, Some(axum::body::Body::from("{}")))
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    }

    // MeshInsight.
    let r = api.get("/mesh-insights/default").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secrets = r.body["resources"]["Secret"]["total"].as_u64().unwrap_or(0);
    assert!(secrets >= 1, "the mesh's signing key at least: {}", r.body);
    assert_eq!(
        timeless(r.body.clone()),
        json!({"type": "MeshInsight", "name": "default",
            "dataplanes": {"total": 4, "online": 3, "offline": 1},
            "dpVersions": {
                "kumaDp": {"2.14.3": {"total": 4, "online": 3, "offline": 1}},
                "envoy": {"1.38.2": {"total": 4, "online": 3, "offline": 1}}},
            "mTLS": {"issuedBackends": {"ca-1": {"total": 2, "online": 1, "offline": 1}},
                     "supportedBackends": {"ca-1": {"total": 2, "online": 1, "offline": 1}}},
            "services": {"total": 3, "internal": 3},
            "dataplanesByType": {
                "standard": {"total": 3, "online": 2, "offline": 1},
                "gateway": {"total": 1, "online": 1},
                "gatewayBuiltin": {"total": 1, "online": 1},
                "gatewayDelegated": {}},
            "resources": {"Dataplane": {"total": 4}, "Secret": {"total": secrets}}})
    );
    let r = api.get("/mesh-insights").await;
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["items"][1]["name"], "other");
    assert_eq!(
        r.body["items"][1]["dataplanes"],
        json!({"total": 1, "offline": 1})
    );
    assert_eq!(api.get("/mesh-insights?name=oth").await.body["total"], 1);
    api.get("/mesh-insights/nope")
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // A policy is counted (MeshInsight only).
    let r = api
        .put(
            "/meshes/default/meshtrafficpermissions/allow",
            &json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow",
                "spec": {"targetRef": {"kind": "Mesh"},
                         "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut body = Value::Null;
    for _ in 0..300 {
        body = api.get("/mesh-insights/default").await.body;
        if body["policies"] == json!({"MeshTrafficPermission": {"total": 1}}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        body["resources"]["MeshTrafficPermission"],
        json!({"total": 1}),
        "{body}"
    );

    // The global insight: every number present.
    let r = api.get("/global-insight").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut g = r.body;
    let created = g["createdAt"].take();
    chrono::DateTime::parse_from_rfc3339(created.as_str().expect("createdAt")).expect("RFC 3339");
    let resources = g["resources"].take();
    assert_eq!(resources["Dataplane"], json!({"total": 5}));
    assert_eq!(resources["MeshTrafficPermission"], json!({"total": 1}));
    let zero = json!({"offline": 0, "online": 0, "partiallyDegraded": 0, "total": 0});
    assert_eq!(
        g,
        json!({
            "createdAt": null,
            "dataplanes": {
                "gatewayBuiltin": {"offline": 0, "online": 1, "partiallyDegraded": 0, "total": 1},
                "gatewayDelegated": zero,
                "standard": {"offline": 2, "online": 2, "partiallyDegraded": 0, "total": 4}},
            "meshes": {"total": 2},
            "policies": {"total": 1},
            "resources": null,
            "services": {
                "external": {"total": 0},
                "gatewayBuiltin": {"offline": 0, "online": 1, "partiallyDegraded": 0, "total": 1},
                "gatewayDelegated": zero,
                "internal": {"offline": 1, "online": 1, "partiallyDegraded": 1, "total": 3}},
            "zones": {
                "controlPlanes": {"online": 0, "total": 0},
                "zoneEgresses": {"online": 0, "total": 0},
                "zoneIngresses": {"online": 0, "total": 0}},
        })
    );
    // Kuma's older `/global-insights`: counts of global types, zeros included.
    let r = api.get("/global-insights").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["type"], "GlobalInsights");
    let keys: Vec<&str> = r.body["resources"]
        .as_object()
        .expect("resources")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["Mesh", "GlobalSecret", "Zone", "ZoneIngress", "ZoneEgress"]
    );
    assert_eq!(r.body["resources"]["Mesh"], json!({"total": 2}));
    assert_eq!(r.body["resources"]["ZoneEgress"], json!({"total": 0}));
    shutdown.cancel();
}

/// Without computed insights (the first moments after start), `GET /mesh-insights/{mesh}`
/// still answers for an existing Mesh, with our mTLS additions only.
#[tokio::test]
async fn mesh_insight_before_the_first_computation() {
    let api = Api::with_mesh().await;
    let r = api.get("/mesh-insights/default").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"type": "MeshInsight", "name": "default", "mTLS": {}})
    );
    assert_eq!(
        api.get("/mesh-insights").await.body,
        json!({"total": 0, "items": [], "next": null})
    );
}
