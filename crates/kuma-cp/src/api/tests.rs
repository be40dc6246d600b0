//! Router tests on the memory store: round trips, paging, and every bad input answered with
//! the right status and field while nothing stored changes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kuma_core::store::memory::MemoryStore;
use serde_json::{Value, json};
use tower::ServiceExt;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use super::{State, router};
use crate::manager::ResourceManager;
use crate::tokens::{Issuer, Validator};

const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const REMOTE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)),
    40000,
);

struct Api {
    router: axum::Router,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    /// JSON, or a JSON string for other bodies (tokens are `text/plain`).
    body: Value,
}

impl Reply {
    /// Fields named in `invalid_parameters`.
    fn fields(&self) -> Vec<String> {
        self.body["invalid_parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["field"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_error(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["type"], "/std-errors", "{}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        assert_eq!(self.body["detail"], self.body["details"]);
    }
}

impl Api {
    fn new() -> Self {
        Self::with_manager().0
    }

    /// An API and the manager behind it (for the control plane's own writes).
    fn with_manager() -> (Self, Arc<ResourceManager>) {
        Self::with_settings(true)
    }

    /// An API with `localhostIsAdmin` as given.
    fn with_settings(localhost_is_admin: bool) -> (Self, Arc<ResourceManager>) {
        Self::with_admin(localhost_is_admin, None)
    }

    /// An API whose inspect endpoints use `envoy_admin`.
    fn with_admin(
        localhost_is_admin: bool,
        envoy_admin: Option<Arc<dyn crate::envoy_admin::Admin>>,
    ) -> (Self, Arc<ResourceManager>) {
        let manager = Arc::new(
            ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
                .with_mesh_side_effects(Arc::new(crate::mesh_setup::MeshSetup)),
        );
        let state = State {
            manager: manager.clone(),
            index: json!({"product": "Kuma"}),
            config: json!({"mode": "zone"}),
            zone: "zone-1".into(),
            issuer: Arc::new(Issuer::new(manager.clone())),
            validator: Arc::new(Validator::new(manager.clone(), true)),
            localhost_is_admin,
            mesh_status: Default::default(),
            insights: Default::default(),
            envoy_admin,
        };
        (
            Self {
                router: router(state),
            },
            manager,
        )
    }

    /// A request from 127.0.0.1 without credentials (an admin).
    async fn call(&self, method: &str, uri: &str, body: Option<Body>) -> Reply {
        self.call_as(method, uri, body, Some(LOCAL), None).await
    }

    /// A request from `peer` (`None`: unknown) with an optional `Authorization` value.
    async fn call_as(
        &self,
        method: &str,
        uri: &str,
        body: Option<Body>,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
    ) -> Reply {
        self.call_with(method, uri, body, peer, authorization, &[])
            .await
    }

    /// [`Self::call_as`] with extra request headers (`Host: localhost:5681` unless given).
    async fn call_with(
        &self,
        method: &str,
        uri: &str,
        body: Option<Body>,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", "localhost:5681");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let mut req = req.body(body.unwrap_or_else(Body::empty)).expect("request");
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, None).await
    }

    async fn put(&self, uri: &str, body: &Value) -> Reply {
        self.call("PUT", uri, Some(Body::from(body.to_string())))
            .await
    }

    async fn put_raw(&self, uri: &str, body: impl Into<Body>) -> Reply {
        self.call("PUT", uri, Some(body.into())).await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.call("DELETE", uri, None).await
    }

    /// An API with mesh `default`.
    async fn with_mesh() -> Self {
        let api = Self::new();
        let r = api
            .put(
                "/meshes/default",
                &json!({"type": "Mesh", "name": "default"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        api
    }

    /// Everything stored, to check that refused writes changed nothing.
    async fn snapshot(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for t in kuma_core::ResourceType::ALL
            .into_iter()
            .filter(|t| t.is_exposed())
        {
            let r = self.get(&format!("/{}", t.ws_path())).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            out.push(r.body);
        }
        out
    }
}

fn dp(name: &str, port: u16, service: &str) -> Value {
    json!({"type": "Dataplane", "mesh": "default", "name": name,
        "networking": {"address": "10.0.0.1", "inbound": [
            {"port": port, "servicePort": port + 1000, "tags": {"kuma.io/service": service}}]}})
}

#[tokio::test]
async fn index_config_and_misc() {
    let api = Api::new();
    assert_eq!(api.get("/").await.body, json!({"product": "Kuma"}));
    assert_eq!(api.get("/config").await.body, json!({"mode": "zone"}));
    assert_eq!(api.get("/who-am-i").await.body["name"], "mesh-system:admin");
    let types = api.get("/_resources").await.body;
    let dpi = types["resources"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["name"] == "DataplaneInsight")
        .expect("insight listed")
        .clone();
    assert_eq!(dpi["readOnly"], true);
    assert_eq!(dpi["path"], "dataplane-insights");
    // The control plane's own Config (VIP tables) has no REST path, as in Kuma.
    let listed = types["resources"].as_array().expect("list");
    assert!(
        listed
            .iter()
            .all(|t| t["name"] != "Config" && t["path"] != ""),
        "{types}"
    );
    api.get("/no-such-type")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.get("/meshes/default/no-such-type")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.get("/a/b/c/d/e/f")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    // A global type under a mesh, a mesh-scoped type at the top level.
    api.get("/meshes/default/zones")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.get("/dataplanes/dp-1")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.call("POST", "/meshes", None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn unknown_fields_are_accepted_dropped_and_named() {
    let api = Api::with_mesh().await;
    // In document order: `foo` and `bogus` come after what `dp` wrote.
    let mut doc = dp("dp-1", 8080, "web");
    doc["foo"] = json!("bar");
    doc["networking"]["bogus"] = json!({"deep": 1});
    doc["networking"]["inbound"][0]["extra"] = json!(true);
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"warnings": [
            "unknown field \"extra\" at networking.inbound[0]: ignored",
            "unknown field \"bogus\" at networking: ignored",
            "unknown field \"foo\": ignored"
        ]})
    );
    // Dropped, as Kuma drops them: not stored, not echoed back.
    let got = api.get("/meshes/default/dataplanes/dp-1").await;
    assert!(got.body.get("foo").is_none(), "{}", got.body);
    assert!(
        got.body["networking"].get("bogus").is_none(),
        "{}",
        got.body
    );
    assert!(got.body["networking"]["inbound"][0].get("extra").is_none());
    // An update reports them too.
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["warnings"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_new_dataplanes_workload_label_is_a_dns_1035_label() {
    let api = Api::with_mesh().await;
    let mut doc = dp("dp-1", 8080, "web");
    doc["labels"] = json!({"kuma.io/workload": "Web_1"});
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.body["title"], "Invalid workload label");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("labels[\"kuma.io/workload\"]: must be a valid DNS-1035 label (at most 63 characters, matching regex [a-z]([-a-z0-9]*[a-z0-9])?): a DNS-1035 label must consist of"),
        "{}",
        r.body
    );
    doc["labels"] = json!({"kuma.io/workload": "web-1"});
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Kuma checks it on create only.
    doc["labels"] = json!({"kuma.io/workload": "Web_1"});
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn decode_errors_are_bad_requests_naming_every_field() {
    let api = Api::with_mesh().await;
    let mut doc = dp("dp-1", 8080, "web");
    doc["networking"]["inbound"][0]["port"] = json!(-1);
    doc["networking"]["inbound"][0]["tags"]["version"] = json!(1);
    doc["networking"]["gateway"] = json!({"type": "FOO"});
    let r = api.put("/meshes/default/dataplanes/dp-1", &doc).await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.body["title"], "Bad Request");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("invalid Dataplane object: \""),
        "{detail}"
    );
    assert_eq!(
        r.fields(),
        [
            "networking.inbound[0].port",
            "networking.inbound[0].tags[\"version\"]",
            "networking.gateway.type"
        ]
    );
    // Not JSON at all: Kuma's words too.
    let r = api.put_raw("/meshes/default/dataplanes/dp-1", "{,}").await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.body["title"], "Bad Request");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid Dataplane object: "),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn create_update_get_round_trip() {
    let api = Api::with_mesh().await;
    let applied = dp("dp-1", 8080, "web");
    let r = api.put("/meshes/default/dataplanes/dp-1", &applied).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Kuma's body without warnings.
    assert_eq!(r.body, json!({}));

    let got = api.get("/meshes/default/dataplanes/dp-1").await;
    assert_eq!(got.status, StatusCode::OK);
    let b = &got.body;
    assert_eq!(b["type"], "Dataplane");
    assert_eq!(b["mesh"], "default");
    assert_eq!(b["name"], "dp-1");
    assert_eq!(b["kri"], "kri_dp_default_zone-1__dp-1_");
    assert_eq!(b["labels"]["kuma.io/origin"], "zone");
    assert_eq!(b["labels"]["kuma.io/mesh"], "default");
    assert_eq!(b["labels"]["kuma.io/zone"], "zone-1");
    // What was applied, plus the zone tag the CP adds.
    let mut expected_net = applied["networking"].clone();
    expected_net["inbound"][0]["tags"]["kuma.io/zone"] = json!("zone-1");
    assert_eq!(b["networking"], expected_net);
    let created = b["creationTime"].clone();

    // Re-applying what was read back (server-managed fields included) is an update.
    let mut next = b.clone();
    next["networking"]["inbound"][0]["port"] = json!(9090);
    let r = api.put("/meshes/default/dataplanes/dp-1", &next).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = api.get("/meshes/default/dataplanes/dp-1").await.body;
    assert_eq!(got["networking"]["inbound"][0]["port"], 9090);
    assert_eq!(got["creationTime"], created);

    // Global type, and the Mesh itself.
    let m = api.get("/meshes/default").await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["name"], "default");
    assert!(m.body.get("kri").is_none());
    let r = api
        .put(
            "/global-secrets/s1",
            &json!({"type": "GlobalSecret", "name": "s1", "data": "aGk="}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(api.get("/globalsecrets/s1").await.body["data"], "aGk=");

    // New-style policy keeps its spec under `spec`.
    let mtp = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow",
        "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
    let r = api
        .put("/meshes/default/meshtrafficpermissions/allow", &mtp)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let got = api
        .get("/meshes/default/meshtrafficpermissions/allow")
        .await
        .body;
    assert_eq!(got["spec"], mtp["spec"]);

    let r = api.delete("/meshes/default/dataplanes/dp-1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({}));
    api.get("/meshes/default/dataplanes/dp-1")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_paging_and_filters() {
    let api = Api::with_mesh().await;
    for i in 0..5u16 {
        let mut d = dp(
            &format!("dp-{i}"),
            8000 + i,
            if i % 2 == 0 { "backend" } else { "frontend" },
        );
        if i == 3 {
            d["labels"] = json!({"team": "a"});
        }
        let r = api
            .put(&format!("/meshes/default/dataplanes/dp-{i}"), &d)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let page = api.get("/meshes/default/dataplanes?size=2").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["total"], 5);
    let names: Vec<_> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].clone())
        .collect();
    assert_eq!(names, [json!("dp-0"), json!("dp-1")]);
    assert_eq!(
        page.body["next"],
        "http://localhost:5681/meshes/default/dataplanes?size=2&offset=2"
    );
    let last = api.get("/meshes/default/dataplanes?size=2&offset=4").await;
    assert_eq!(last.body["items"].as_array().expect("items").len(), 1);
    assert!(last.body["next"].is_null());

    let all = api.get("/dataplanes").await.body;
    assert_eq!(all["total"], 5);
    assert!(all["next"].is_null());

    let by_name = api.get("/meshes/default/dataplanes?name=dp-3").await.body;
    assert_eq!(by_name["total"], 1);
    let by_label = api
        .get("/meshes/default/dataplanes?filter%5Blabels.team%5D=a")
        .await
        .body;
    assert_eq!(by_label["total"], 1);
    assert_eq!(by_label["items"][0]["name"], "dp-3");
    let by_tag = api
        .get("/meshes/default/dataplanes?tag=kuma.io/service:front")
        .await
        .body;
    assert_eq!(by_tag["total"], 2);
    let by_two_tags = api
        .get("/meshes/default/dataplanes?tag=kuma.io/service:back&tag=kuma.io/zone:zone-1")
        .await
        .body;
    assert_eq!(by_two_tags["total"], 3);

    for (q, field) in [
        ("size=0", "size"),
        ("size=1001", "size"),
        ("size=abc", "size"),
        ("offset=x", "offset"),
        ("filter%5Bspec.x%5D=1", "filter[spec.x]"),
    ] {
        let r = api.get(&format!("/meshes/default/dataplanes?{q}")).await;
        r.assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(r.fields(), [field], "{q}");
    }
    let meshes = api.get("/meshes").await.body;
    assert_eq!(meshes["total"], 1);
}

#[tokio::test]
async fn bad_inputs_change_nothing() {
    let api = Api::with_mesh().await;
    let r = api
        .put("/meshes/default/dataplanes/dp-1", &dp("dp-1", 8080, "web"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let before = api.snapshot().await;

    // Malformed JSON: the message names the problem and where.
    let r = api
        .put_raw(
            "/meshes/default/dataplanes/dp-1",
            "{\"type\": \"Dataplane\",\n \"name\": }",
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST);
    let detail = r.body["detail"].as_str().expect("detail");
    assert!(detail.contains("line 2 column"), "{detail}");

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "inbound address not an IP",
            {
                let mut d = dp("dp-1", 8080, "web");
                d["networking"]["inbound"][0]["address"] = json!("nope");
                d
            },
            "networking.inbound[0].address",
        ),
        (
            "no kuma.io/service",
            {
                let mut d = dp("dp-1", 8080, "web");
                d["networking"]["inbound"][0]["tags"] = json!({"app": "web"});
                d
            },
            "networking.inbound[0].tags[\"kuma.io/service\"]",
        ),
        (
            "inbound port out of range",
            {
                let mut d = dp("dp-1", 8080, "web");
                d["networking"]["inbound"] = json!([
                    {"port": 8080, "servicePort": 80, "tags": {"kuma.io/service": "a"}},
                    {"port": 0, "servicePort": 81, "tags": {"kuma.io/service": "b"}}]);
                d
            },
            "networking.inbound[1].port",
        ),
        ("name mismatch", dp("dp-2", 8080, "web"), "name"),
        (
            "wrong mesh label",
            {
                let mut d = dp("dp-1", 8080, "web");
                d["labels"] = json!({"kuma.io/mesh": "other"});
                d
            },
            "labels[\"kuma.io/mesh\"]",
        ),
    ];
    for (what, body, field) in cases {
        let r = api.put("/meshes/default/dataplanes/dp-1", &body).await;
        r.assert_error(StatusCode::BAD_REQUEST);
        assert!(
            r.fields().contains(&field.to_string()),
            "{what}: {}",
            r.body
        );
        assert_eq!(r.body["title"], "Could not process a resource", "{what}");
        assert_eq!(r.body["detail"], "Resource is not valid", "{what}");
        assert_eq!(
            r.body["causes"][0]["field"],
            r.body["invalid_parameters"][0]["field"]
        );
    }

    // A name that is not a DNS label (URL and body agree).
    let mut bad = dp("Bad_Name", 8080, "web");
    bad["name"] = json!("Bad_Name");
    let r = api.put("/meshes/default/dataplanes/Bad_Name", &bad).await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["name"]);

    // A mesh that does not exist: looked up first, 404 as Kuma.
    let mut other = dp("dp-9", 8080, "web");
    other["mesh"] = json!("nope");
    let r = api.put("/meshes/nope/dataplanes/dp-9", &other).await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert_eq!(
        (&r.body["title"], &r.body["detail"]),
        (&json!("Failed to retrieve Mesh"), &json!("Not found"))
    );

    // Mesh mismatch between URL and body.
    let mut elsewhere = dp("dp-1", 8080, "web");
    elsewhere["mesh"] = json!("nope");
    let r = api.put("/meshes/default/dataplanes/dp-1", &elsewhere).await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert!(r.fields().contains(&"mesh".to_string()), "{}", r.body);

    // Oversized body.
    let huge = format!(
        "{{\"type\": \"Mesh\", \"name\": \"big\", \"x\": \"{}\"}}",
        "a".repeat(super::MAX_BODY_BYTES)
    );
    let r = api.put_raw("/meshes/big", huge).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE);

    // Read-only type.
    let r = api
        .put(
            "/meshes/default/dataplane-insights/dp-1",
            &json!({"type": "DataplaneInsight", "mesh": "default", "name": "dp-1"}),
        )
        .await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED);
    api.delete("/meshes/default/dataplane-insights/dp-1")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);

    // Type mismatch between URL and body.
    let r = api.put("/zones/dp-1", &dp("dp-1", 8080, "web")).await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert!(r.fields().contains(&"type".to_string()), "{}", r.body);

    assert_eq!(
        api.snapshot().await,
        before,
        "a refused write changed the store"
    );
}

#[tokio::test]
async fn deletes() {
    let api = Api::with_mesh().await;
    api.delete("/meshes/default/dataplanes/ghost")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.delete("/zones/ghost")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let r = api
        .put("/meshes/default/dataplanes/dp-1", &dp("dp-1", 8080, "web"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.delete("/meshes/default").await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["mesh"]);
    assert_eq!(api.get("/meshes/default").await.status, StatusCode::OK);
    assert_eq!(
        api.delete("/meshes/default/dataplanes/dp-1").await.status,
        StatusCode::OK
    );
    assert_eq!(api.delete("/meshes/default").await.status, StatusCode::OK);
    api.get("/meshes/default")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dataplane_overviews() {
    let (api, manager) = Api::with_manager();
    api.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default"}),
    )
    .await;
    for (name, port) in [("dp-1", 8080), ("dp-2", 8081)] {
        let r = api
            .put(
                &format!("/meshes/default/dataplanes/{name}"),
                &dp(name, port, "web"),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // The control plane writes insights itself.
    let insight = kuma_core::Resource::from_wire(
        json!({"type": "DataplaneInsight", "mesh": "default", "name": "dp-1",
            "subscriptions": [{"id": "s1", "controlPlaneInstanceId": "cp-1", "connectTime": "2026-01-01T00:00:00Z"}]}),
        None,
    )
    .expect("insight");
    manager.upsert_internal(insight).await.expect("insight");

    for path in [
        "/meshes/default/dataplanes/_overview",
        "/meshes/default/dataplanes+insights",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"], 2);
        let first = &r.body["items"][0];
        assert_eq!(first["type"], "DataplaneOverview");
        assert_eq!(first["name"], "dp-1");
        assert_eq!(first["dataplane"]["networking"]["address"], "10.0.0.1");
        assert!(first["dataplane"].get("name").is_none());
        assert_eq!(first["dataplaneInsight"]["subscriptions"][0]["id"], "s1");
        assert_eq!(r.body["items"][1]["dataplaneInsight"], json!({}));
    }
    let online = api
        .get("/meshes/default/dataplanes/_overview?status=online")
        .await
        .body;
    assert_eq!(online["total"], 1);
    let offline = api
        .get("/meshes/default/dataplanes/_overview?status=offline&size=1")
        .await
        .body;
    assert_eq!(offline["items"][0]["name"], "dp-2");
    api.get("/meshes/default/dataplanes/_overview?status=maybe")
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    for path in [
        "/meshes/default/dataplanes/dp-2/_overview",
        "/meshes/default/dataplanes+insights/dp-2",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"], "dp-2");
    }
    api.get("/meshes/default/dataplanes/ghost/_overview")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    // The plain Dataplane routes still work next to the overview ones.
    assert_eq!(
        api.get("/meshes/default/dataplanes/dp-1").await.status,
        StatusCode::OK
    );
    assert_eq!(api.get("/meshes/default/dataplanes").await.body["total"], 2);
}

/// ZoneIngress / ZoneEgress: generic CRUD under `zoneingresses` (alias `zone-ingresses`) and
/// `zoneegresses`, Kuma's validation messages, read-only insights, and the overviews.
#[tokio::test]
async fn zone_proxy_resources_and_overviews() {
    let (api, manager) = Api::with_manager();
    let zi = json!({"type": "ZoneIngress", "name": "zi-1",
        "networking": {"address": "127.0.0.1", "port": 10001,
            "advertisedAddress": "10.0.0.1", "advertisedPort": 10001}});
    assert_eq!(
        api.put("/zoneingresses/zi-1", &zi).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put(
            "/zone-ingresses/zi-2",
            &json!({"type": "ZoneIngress", "name": "zi-2",
            "networking": {"address": "127.0.0.1", "port": 10002}})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let bad = api
        .put(
            "/zoneingresses/zi-3",
            &json!({"type": "ZoneIngress", "name": "zi-3",
            "networking": {"address": "127.0.0.1", "advertisedPort": 5}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let fields: Vec<&str> = bad.body["invalid_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["networking.advertisedAddress", "networking.port"],
        "{}",
        bad.body
    );
    assert_eq!(
        api.put(
            "/zoneegresses/ze-1",
            &json!({"type": "ZoneEgress", "name": "ze-1",
            "networking": {"address": "127.0.0.1", "port": 10003}})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    // Insights are the control plane's.
    let r = api
        .put(
            "/zone-ingress-insights/zi-1",
            &json!({"type": "ZoneIngressInsight", "name": "zi-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.body);
    let insight = kuma_core::Resource::from_wire(
        json!({"type": "ZoneIngressInsight", "name": "zi-1",
            "subscriptions": [{"id": "s1", "controlPlaneInstanceId": "cp-1", "connectTime": "2026-01-01T00:00:00Z"}]}),
        None,
    )
    .expect("insight");
    manager.upsert_internal(insight).await.expect("insight");

    for path in ["/zoneingresses/_overview", "/zoneingresses+insights"] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"], 2);
        let first = &r.body["items"][0];
        assert_eq!(first["type"], "ZoneIngressOverview");
        assert_eq!(first["zoneIngress"]["networking"]["advertisedPort"], 10001);
        assert_eq!(first["zoneIngressInsight"]["subscriptions"][0]["id"], "s1");
        assert_eq!(r.body["items"][1]["zoneIngressInsight"], json!({}));
    }
    assert_eq!(
        api.get("/zoneingresses/_overview?status=online").await.body["total"],
        1
    );
    let one = api.get("/zoneingresses+insights/zi-2").await;
    assert_eq!(one.body["name"], "zi-2", "{}", one.body);
    for path in [
        "/zoneegresses/_overview",
        "/zoneegressoverviews",
        "/zoneegresses+insights",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["items"][0]["type"], "ZoneEgressOverview");
        assert_eq!(
            r.body["items"][0]["zoneEgress"]["networking"]["port"],
            10003
        );
    }
    api.get("/zoneegresses/ghost/_overview")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    assert_eq!(api.get("/zoneingresses/zi-1").await.status, StatusCode::OK);
    assert_eq!(api.get("/zone-ingresses").await.body["total"], 2);
}

/// Issues a user token through the API (as a local admin).
async fn user_token(api: &Api, name: &str, groups: &[&str]) -> String {
    let r = api
        .call(
            "POST",
            "/tokens/user",
            Some(Body::from(
                json!({"name": name, "groups": groups, "validFor": "1h"}).to_string(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["content-type"], "text/plain");
    r.body.as_str().expect("token text").to_string()
}

#[tokio::test]
async fn access_control() {
    let (api, manager) = Api::with_manager();
    crate::tokens::ensure_user_signing_key(&manager)
        .await
        .unwrap();
    api.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default"}),
    )
    .await;
    let admin = format!(
        "Bearer {}",
        user_token(&api, "root", &["mesh-system:admin"]).await
    );
    let member = format!("Bearer {}", user_token(&api, "alice", &["team-a"]).await);

    // Remote callers without credentials: 401 everywhere but the index.
    for (method, path) in [
        ("GET", "/meshes"),
        ("GET", "/who-am-i"),
        ("GET", "/config"),
        ("GET", "/no-such-type"),
        ("GET", "/global-secrets/admin-user-token"),
        ("GET", "/service-insights"),
        ("GET", "/global-insight"),
        ("PUT", "/meshes/x"),
        ("POST", "/tokens/user"),
    ] {
        for peer in [Some(REMOTE), None] {
            let r = api.call_as(method, path, None, peer, None).await;
            r.assert_error(StatusCode::UNAUTHORIZED);
            assert_eq!(r.body["title"], "Unauthenticated", "{path}");
        }
    }
    let r = api.call_as("GET", "/", None, Some(REMOTE), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // The index ignores even broken credentials.
    let r = api
        .call_as("GET", "/", None, Some(REMOTE), Some("Bearer garbage"))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Invalid credentials are refused even from localhost: an explicit credential wins.
    for auth in ["Bearer garbage", "Basic YTpi", "Bearer "] {
        let r = api
            .call_as("GET", "/meshes", None, Some(LOCAL), Some(auth))
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["title"], "Invalid authentication data");
    }

    // A remote admin.
    let r = api
        .call_as("GET", "/who-am-i", None, Some(REMOTE), Some(&admin))
        .await;
    assert_eq!(
        r.body,
        json!({"name": "root", "groups": ["mesh-system:admin", "mesh-system:authenticated"]})
    );
    let r = api
        .call_as(
            "GET",
            "/meshes/default/secrets/dataplane-token-signing-key-default-1",
            None,
            Some(REMOTE),
            Some(&admin),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Lower-case scheme works too.
    let lower = admin.replacen("Bearer", "bearer", 1);
    let r = api
        .call_as("GET", "/global-secrets", None, Some(REMOTE), Some(&lower))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A remote member reads dataplanes and meshes, not secrets, and issues no tokens.
    let r = api
        .call_as("GET", "/who-am-i", None, Some(REMOTE), Some(&member))
        .await;
    assert_eq!(
        r.body,
        json!({"name": "alice", "groups": ["team-a", "mesh-system:authenticated"]})
    );
    for path in [
        "/meshes",
        "/meshes/default/dataplanes",
        "/dataplanes",
        "/zones",
        "/meshes/default/dataplanes/_overview",
        "/meshes/default/dataplanes+insights",
        "/mesh-insights/default",
        "/mesh-insights",
        "/service-insights",
        "/meshes/default/service-insights",
        "/global-insight",
        "/meshes/default/meshtrafficpermissions",
        "/config",
        "/_resources",
    ] {
        let r = api
            .call_as("GET", path, None, Some(REMOTE), Some(&member))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    let secret = json!({"type": "Secret", "mesh": "default", "name": "s", "data": "YQ=="});
    for (method, path, body) in [
        ("GET", "/secrets", None),
        ("GET", "/meshes/default/secrets", None),
        (
            "GET",
            "/meshes/default/secrets/dataplane-token-signing-key-default-1",
            None,
        ),
        // Percent-encoded type names resolve to the same type.
        ("GET", "/meshes/default/%73ecrets", None),
        ("GET", "/globalsecrets", None),
        ("GET", "/global-secrets/admin-user-token", None),
        ("PUT", "/meshes/default/secrets/s", Some(secret.to_string())),
        ("DELETE", "/meshes/default/secrets/s", None),
        (
            "POST",
            "/tokens/dataplane",
            Some(r#"{"mesh":"default"}"#.into()),
        ),
        ("POST", "/tokens/user", Some(r#"{"name":"x"}"#.into())),
    ] {
        let r = api
            .call_as(
                method,
                path,
                body.map(Body::from),
                Some(REMOTE),
                Some(&member),
            )
            .await;
        r.assert_error(StatusCode::FORBIDDEN);
        assert_eq!(r.body["title"], "Access Denied", "{path}");
        assert!(
            r.body["detail"].as_str().unwrap().contains("\"alice\""),
            "{}",
            r.body
        );
    }
    assert!(
        manager
            .list(kuma_core::ResourceType::Secret, Some("default"))
            .await
            .unwrap()
            .iter()
            .all(|s| s.meta.name != "s"),
        "a refused write stored a secret"
    );

    // A loopback peer is admin only for a direct local request (Kuma's check): not for a
    // page of another origin in a browser of this host, a DNS-rebound name, or a reverse
    // proxy on this host forwarding a remote caller.
    let evil = ("origin", "https://evil.example");
    for headers in [
        &[evil][..],
        &[("host", "rebound.example:5681")],
        &[("sec-fetch-site", "cross-site")],
        &[("x-forwarded-for", "203.0.113.9")],
    ] {
        let r = api
            .call_with("GET", "/meshes", None, Some(LOCAL), None, headers)
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED);
    }
    let same_origin = [
        ("host", "127.0.0.1:5681"),
        ("origin", "http://127.0.0.1:5681"),
    ];
    let r = api
        .call_with("GET", "/who-am-i", None, Some(LOCAL), None, &same_origin)
        .await;
    assert_eq!(r.body["name"], "mesh-system:admin", "{}", r.body);

    // No CORS headers, whoever asks.
    for r in [
        api.call_with("GET", "/meshes", None, Some(LOCAL), None, &[evil])
            .await,
        api.call_with("GET", "/meshes", None, Some(LOCAL), Some(&admin), &[evil])
            .await,
        api.call_with("GET", "/", None, Some(REMOTE), None, &[evil])
            .await,
        api.call_with("OPTIONS", "/meshes", None, Some(LOCAL), None, &[evil])
            .await,
    ] {
        assert!(
            !r.headers
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{:?}",
            r.headers
        );
    }

    // IPv4-mapped IPv6 loopback is local.
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
    let r = api
        .call_as("GET", "/who-am-i", None, Some(mapped), None)
        .await;
    assert_eq!(r.body["name"], "mesh-system:admin");
}

#[tokio::test]
async fn least_privilege_host_files_and_mesh_cascade() {
    let (api, manager) = Api::with_manager();
    crate::tokens::ensure_user_signing_key(&manager)
        .await
        .unwrap();
    let admin = format!(
        "Bearer {}",
        user_token(&api, "root", &["mesh-system:admin"]).await
    );
    let member = format!("Bearer {}", user_token(&api, "alice", &["team-a"]).await);
    let as_user = |method: &'static str, path: &'static str, body: Option<Value>, who: &str| {
        let who = who.to_string();
        let api = &api;
        async move {
            api.call_as(
                method,
                path,
                body.map(|b| Body::from(b.to_string())),
                Some(REMOTE),
                Some(&who),
            )
            .await
        }
    };
    let provided = |cert: Value| {
        // skipValidation: these data sources hold no CA; only who may write them is tested.
        json!({"type": "Mesh", "name": "files", "mtls": {"enabledBackend": "ca-1", "skipValidation": true, "backends": [
            {"name": "ca-1", "type": "provided", "conf": {"cert": cert, "key": {"inline": "eA=="}}}]}})
    };

    // A data source reading a file of the CP's host: admins only, on the field that reads it.
    let r = as_user(
        "PUT",
        "/meshes/files",
        Some(provided(json!({"file": "/etc/shadow"}))),
        &member,
    )
    .await;
    r.assert_error(StatusCode::FORBIDDEN);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"alice\"") && detail.contains("mtls.backends[0].conf.cert.file"),
        "{detail}"
    );
    assert_eq!(api.get("/meshes/files").await.status, StatusCode::NOT_FOUND);
    // The same Mesh with inline data: anyone.
    let r = as_user(
        "PUT",
        "/meshes/files",
        Some(provided(json!({"inlineString": "x"}))),
        &member,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Turning it into a file source later is refused too, and leaves it as it was.
    let before = api.get("/meshes/files").await.body;
    let r = as_user(
        "PUT",
        "/meshes/files",
        Some(provided(json!({"file": "/etc/shadow"}))),
        &member,
    )
    .await;
    r.assert_error(StatusCode::FORBIDDEN);
    assert_eq!(api.get("/meshes/files").await.body, before);
    let r = as_user(
        "PUT",
        "/meshes/files",
        Some(provided(json!({"file": "/etc/kuma/ca.pem"}))),
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Deleting a Mesh deletes its Secrets (its token signing key at least): admins only.
    let secrets = || async {
        manager
            .list(kuma_core::ResourceType::Secret, Some("files"))
            .await
            .unwrap()
            .len()
    };
    let owned = secrets().await;
    assert!(owned > 0, "the mesh has no secrets to protect");
    let r = as_user("DELETE", "/meshes/files", None, &member).await;
    r.assert_error(StatusCode::FORBIDDEN);
    assert!(
        r.body["detail"].as_str().unwrap().contains("Secret"),
        "{}",
        r.body
    );
    assert_eq!(api.get("/meshes/files").await.status, StatusCode::OK);
    assert_eq!(secrets().await, owned, "a refused delete removed secrets");
    let r = as_user("DELETE", "/meshes/files", None, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(secrets().await, 0);
}

#[tokio::test]
async fn localhost_is_not_admin_when_disabled() {
    let (api, manager) = Api::with_settings(false);
    crate::tokens::ensure_user_signing_key(&manager)
        .await
        .unwrap();
    let issuer = Issuer::new(manager.clone());
    let token = issuer
        .issue_user(&crate::tokens::UserTokenRequest {
            name: "root".into(),
            groups: Some(vec!["mesh-system:admin".into()]),
            valid_for: String::new(),
        })
        .await
        .unwrap();
    api.get("/meshes")
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let r = api
        .call_as(
            "GET",
            "/meshes",
            None,
            Some(LOCAL),
            Some(&format!("Bearer {token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn token_endpoints() {
    let (api, manager) = Api::with_manager();
    api.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default"}),
    )
    .await;
    // Creating the mesh created its signing key.
    let key = api
        .get("/meshes/default/secrets/dataplane-token-signing-key-default-1")
        .await;
    assert_eq!(key.status, StatusCode::OK, "{}", key.body);
    let pem = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        key.body["data"].as_str().unwrap(),
    )
    .unwrap();
    assert!(pem.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));

    let body = json!({"mesh": "default", "name": "web-1",
        "tags": {"kuma.io/service": ["web"]}, "validFor": "720h"});
    let r = api
        .call(
            "POST",
            "/tokens/dataplane",
            Some(Body::from(body.to_string())),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["content-type"], "text/plain");
    let token = r.body.as_str().unwrap();
    let dp = kuma_core::Resource::from_wire(dp("web-1", 8080, "web"), None).unwrap();
    Validator::new(manager.clone(), true)
        .validate_dataplane(token, &dp)
        .await
        .expect("the issued token authenticates web-1");

    let r = api
        .call(
            "POST",
            "/tokens/dataplane",
            Some(Body::from(r#"{"name":"x","validFor":"forever"}"#)),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["mesh", "validFor"]);
    let r = api
        .call(
            "POST",
            "/tokens/dataplane",
            Some(Body::from(r#"{"mesh":"nope"}"#)),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["mesh"]);
    api.call("POST", "/tokens/dataplane", Some(Body::from("{")))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    // No user signing key yet in this store: 404 naming it.
    let r = api
        .call("POST", "/tokens/user", Some(Body::from(r#"{"name":"a"}"#)))
        .await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("user-token-signing-key"),
        "{}",
        r.body
    );
    api.get("/tokens/dataplane")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn zone_token_endpoint() {
    use crate::tokens::ZoneScope;
    let (api, manager) = Api::with_manager();
    // No zone token signing key (a federated zone): 404 naming it.
    let r = api
        .call(
            "POST",
            "/tokens/zone",
            Some(Body::from(r#"{"zone":"zone-1","scope":["cp"]}"#)),
        )
        .await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("zone-token-signing-key"),
        "{}",
        r.body
    );
    crate::tokens::ensure_user_signing_key(&manager)
        .await
        .unwrap();
    crate::tokens::ensure_zone_signing_key(&manager)
        .await
        .unwrap();

    // An admin (loopback) gets a text/plain token that authenticates zone-1's CP.
    let r = api
        .call(
            "POST",
            "/tokens/zone",
            Some(Body::from(
                r#"{"zone":"zone-1","scope":["cp","ingress"],"validFor":"24h"}"#,
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["content-type"], "text/plain");
    let token = r.body.as_str().unwrap().to_string();
    let validator = Validator::new(manager.clone(), true);
    let claims = validator
        .authorize_zone(&token, ZoneScope::Cp, None)
        .await
        .expect("a cp token");
    assert_eq!(claims.zone, "zone-1");
    validator
        .authorize_zone(&token, ZoneScope::Ingress, Some("zone-1"))
        .await
        .expect("an ingress token");
    validator
        .authorize_zone(&token, ZoneScope::Egress, Some("zone-1"))
        .await
        .expect_err("not an egress token");

    // Bad input: 400 naming every field.
    for (body, fields) in [
        (
            r#"{"validFor":"forever"}"#,
            &["zone", "scope", "validFor"][..],
        ),
        (r#"{"zone":"z","scope":[]}"#, &["scope"]),
        (r#"{"zone":"z","scope":["cp","root"]}"#, &["scope[1]"]),
        (
            r#"{"zone":"","scope":["cp"],"validFor":"-1h"}"#,
            &["zone", "validFor"],
        ),
    ] {
        let r = api
            .call("POST", "/tokens/zone", Some(Body::from(body)))
            .await;
        r.assert_error(StatusCode::BAD_REQUEST);
        assert_eq!(r.fields(), fields, "{body}: {}", r.body);
        assert_eq!(r.body["title"], "Invalid request");
    }
    let r = api
        .call(
            "POST",
            "/tokens/zone",
            Some(Body::from(r#"{"zone":"z","scope":["cp","root"]}"#)),
        )
        .await;
    assert_eq!(
        r.body["invalid_parameters"][0]["reason"],
        "unknown scope \"root\": must be one of cp, ingress, egress"
    );
    api.call("POST", "/tokens/zone", Some(Body::from("{")))
        .await
        .assert_error(StatusCode::BAD_REQUEST);

    // Admins only: a member gets 403 (whatever the body), an anonymous remote caller 401.
    let member = format!("Bearer {}", user_token(&api, "alice", &["team-a"]).await);
    for body in [r#"{"zone":"zone-1","scope":["cp"]}"#, "{"] {
        let r = api
            .call_as(
                "POST",
                "/tokens/zone",
                Some(Body::from(body)),
                Some(REMOTE),
                Some(&member),
            )
            .await;
        r.assert_error(StatusCode::FORBIDDEN);
        assert_eq!(r.body["title"], "Access Denied");
    }
    let r = api
        .call_as(
            "POST",
            "/tokens/zone",
            Some(Body::from(r#"{"zone":"zone-1","scope":["cp"]}"#)),
            Some(REMOTE),
            Some(&member),
        )
        .await;
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"alice\"") && detail.contains("generate zone token for zone 'zone-1'"),
        "{detail}"
    );
    let r = api
        .call_as(
            "POST",
            "/tokens/zone",
            Some(Body::from(r#"{"zone":"zone-1","scope":["cp"]}"#)),
            Some(REMOTE),
            None,
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED);
    // A remote admin may.
    let admin = format!(
        "Bearer {}",
        user_token(&api, "root", &["mesh-system:admin"]).await
    );
    let r = api
        .call_as(
            "POST",
            "/tokens/zone",
            Some(Body::from(r#"{"zone":"zone-1","scope":["egress"]}"#)),
            Some(REMOTE),
            Some(&admin),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn zone_overviews() {
    let (api, manager) = Api::with_manager();
    for (name, enabled) in [("zone-a", true), ("zone-b", false), ("zone-c", true)] {
        let r = api
            .put(
                &format!("/zones/{name}"),
                &json!({"type": "Zone", "name": name, "enabled": enabled}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // The control plane writes insights itself; users cannot.
    let insight = json!({"type": "ZoneInsight", "name": "zone-a", "subscriptions": [
        {"id": "1", "globalInstanceId": "global-1", "connectTime": "2026-01-01T00:00:00Z",
         "disconnectTime": "2026-01-01T00:05:00Z",
         "status": {"total": {"responsesSent": "20", "responsesRejected": "2"}}},
        {"id": "2", "globalInstanceId": "global-1", "zoneInstanceId": "zone-a-cp",
         "connectTime": "2026-01-01T00:06:00Z", "authTokenProvided": true,
         "status": {"lastUpdateTime": "2026-01-01T00:07:00Z",
                    "total": {"responsesSent": "22", "responsesAcknowledged": "21", "responsesRejected": "1"},
                    "stat": {"Mesh": {"responsesSent": "22", "responsesAcknowledged": "21", "responsesRejected": "1"}}},
         "version": {"kumaCp": {"version": "2.14.3", "gitTag": "v2.14.3", "gitCommit": "abc", "buildDate": "2026-01-01T00:00:00Z"}},
         "config": "{\"store\":{\"type\":\"memory\"}}"}],
        "healthCheck": {"time": "2026-01-01T00:07:30Z"}});
    api.put("/zone-insights/zone-a", &insight)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    api.delete("/zone-insights/zone-a")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    manager
        .upsert_internal(kuma_core::Resource::from_wire(insight.clone(), None).expect("insight"))
        .await
        .expect("insight");

    for path in ["/zones/_overview", "/zones+insights"] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"], 3);
        assert_eq!(r.body["next"], Value::Null);
        let a = &r.body["items"][0];
        assert_eq!(a["type"], "ZoneOverview");
        assert_eq!(a["name"], "zone-a");
        assert_eq!(a["kri"], "kri_z____zone-a_");
        assert!(a["creationTime"].is_string() && a["modificationTime"].is_string());
        assert_eq!(a["zone"], json!({"enabled": true}));
        let mut want = insight.clone();
        for k in ["type", "name"] {
            want.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(a["zoneInsight"], want);
        assert_eq!(r.body["items"][1]["zone"], json!({"enabled": false}));
        assert_eq!(r.body["items"][1]["zoneInsight"], json!({}));
    }
    // Paging and the name filter.
    let r = api.get("/zones+insights?size=1&offset=1").await;
    assert_eq!(r.body["items"][0]["name"], "zone-b");
    assert_eq!(r.body["total"], 3);
    assert!(
        r.body["next"]
            .as_str()
            .unwrap()
            .ends_with("/zones+insights?size=1&offset=2"),
        "{}",
        r.body
    );
    let r = api.get("/zones/_overview?name=-c").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["items"][0]["name"], "zone-c");

    for path in ["/zones/zone-a/_overview", "/zones+insights/zone-a"] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"], "zone-a");
        assert_eq!(
            r.body["zoneInsight"]["healthCheck"]["time"],
            "2026-01-01T00:07:30Z"
        );
    }
    let r = api.get("/zones+insights/ghost").await;
    r.assert_error(StatusCode::NOT_FOUND);
    api.get("/zones/ghost/_overview")
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // The Zone itself, as GET /zones/{name} shows it, and `enabled` editable.
    let r = api.get("/zones/zone-a").await;
    assert_eq!(r.body["type"], "Zone");
    assert_eq!(r.body["kri"], "kri_z____zone-a_");
    assert_eq!(r.body["enabled"], true);
    let r = api
        .put(
            "/zones/zone-a",
            &json!({"type": "Zone", "name": "zone-a", "enabled": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        api.get("/zones+insights/zone-a").await.body["zone"],
        json!({"enabled": false})
    );
    // The insight is listed as a read-only type of its own.
    let r = api.get("/zone-insights").await;
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["items"][0]["type"], "ZoneInsight");
    let r = api.get("/zone-insights/zone-a").await;
    assert_eq!(r.body["subscriptions"][1]["zoneInstanceId"], "zone-a-cp");

    // An online zone cannot be deleted (Kuma's rule); an offline one can.
    let r = api.delete("/zones/zone-a").await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(r.fields(), ["zone"]);
    assert_eq!(
        r.body["invalid_parameters"][0]["reason"],
        "unable to delete Zone, Zone CP is still connected, please shut it down first"
    );
    assert_eq!(api.delete("/zones/zone-b").await.status, StatusCode::OK);
}

mod insights;
/// Answers like an Envoy admin: `stats` text, a config dump, or a failure per proxy name.
struct FakeAdmin;

#[async_trait::async_trait]
impl crate::envoy_admin::Admin for FakeAdmin {
    async fn call(
        &self,
        proxy: &kuma_core::Resource,
        op: &crate::envoy_admin::Op,
    ) -> Result<Vec<u8>, crate::envoy_admin::Error> {
        use crate::envoy_admin::Error;
        match proxy.meta.name.as_str() {
            "down" => Err(Error::Unreachable("connection refused".into())),
            "far" => Err(Error::Kds {
                request_type: op.request_type(),
                reason: "zone is offline".into(),
            }),
            _ => Ok(format!("{} {}", proxy.meta.name, op.path_and_query()).into_bytes()),
        }
    }
}

#[tokio::test]
async fn inspect_endpoints_answer_envoys_bytes_and_kumas_errors() {
    let (api, manager) = Api::with_admin(true, Some(Arc::new(FakeAdmin)));
    manager
        .upsert_internal(kuma_core::Resource::new(
            "default",
            "",
            kuma_core::resource::Spec::Mesh(Default::default()),
        ))
        .await
        .unwrap();
    for name in ["web", "down", "far"] {
        let r = api
            .put(
                &format!("/meshes/default/dataplanes/{name}"),
                &json!({"type": "Dataplane", "mesh": "default", "name": name,
                    "networking": {"address": "127.0.1.2", "inbound": [{"port": 1, "servicePort": 2, "tags": {"kuma.io/service": "web"}}]}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = api.get("/meshes/default/dataplanes/web/stats").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.body, "web stats?usedonly");
    let r = api
        .get("/meshes/default/dataplanes/web/xds?include_eds=true")
        .await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.body, "web config_dump?include_eds=true");
    let r = api
        .get("/meshes/default/dataplanes/web/clusters?format=json")
        .await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.body, "web clusters?format=json");
    // Kuma's errors: unknown type and proxy 404, Envoy unreachable 500, a zone's failure 400.
    let r = api.get("/meshes/default/dataplanes/web/config_dump").await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert_eq!(r.body["title"], "Could not execute admin operation");
    assert_eq!(r.fields(), vec!["type"]);
    let r = api.get("/meshes/default/dataplanes/nope/stats").await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert_eq!(r.body["title"], "Could not get dataplane resource");
    let r = api.get("/zoneingresses/nope/stats").await;
    r.assert_error(StatusCode::NOT_FOUND);
    assert_eq!(r.body["title"], "Could not get zone ingress resource");
    let r = api.get("/meshes/default/dataplanes/down/stats").await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body["detail"], "Internal Server Error");
    let r = api.get("/meshes/default/dataplanes/far/clusters").await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["detail"],
        "could not send ClustersRequest: zone is offline"
    );
    // A zone ingress of another zone cannot be reached from this zone.
    manager
        .upsert_internal(
            kuma_core::Resource::from_wire(
                json!({"type": "ZoneIngress", "name": "zi-2", "zone": "zone-2",
                    "networking": {"address": "10.0.0.2", "port": 10001, "advertisedAddress": "10.0.0.2", "advertisedPort": 10001}}),
                None,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let r = api.get("/zoneingresses/zi-2/xds").await;
    r.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["title"],
        "Could not connect to zone ingress that resides in another zone"
    );
    // Callers who may not read proxies may not inspect them either.
    let r = api
        .call_as(
            "GET",
            "/meshes/default/dataplanes/web/xds",
            None,
            Some(REMOTE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
