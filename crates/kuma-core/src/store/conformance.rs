//! The store conformance suite: every backend runs it (`run(make_empty_store)`), so all of
//! them keep the contract written on [`super::Store`].

use std::future::Future;

use tokio::sync::broadcast::error::TryRecvError;

use super::{Error, EventKind, Store};
use crate::resource::{Dataplane, Mesh, Resource, ResourceKey, ResourceType, SecretData, Spec};

fn mesh(name: &str) -> Resource {
    Resource::new(name, "", Spec::Mesh(Mesh::default()))
}

fn dataplane(mesh: &str, name: &str, port: u32) -> Resource {
    let v = serde_json::json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": port, "servicePort": port + 1, "tags": {"kuma.io/service": "svc"}}]}});
    let dp: Dataplane = serde_json::from_value(v).expect("static dataplane parses");
    let mut r = Resource::new(name, mesh, Spec::Dataplane(dp));
    r.meta.labels.insert("app".into(), "x".into());
    r
}

/// Runs every check against fresh stores from `make`.
pub async fn run<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    create_get_round_trip(&make().await).await;
    create_twice_conflicts(&make().await).await;
    update_checks_version(&make().await).await;
    delete_and_cascade(&make().await).await;
    list_filters_and_orders(&make().await).await;
    watch_sees_every_write(&make().await).await;
}

async fn create_get_round_trip(s: &impl Store) {
    let created = s
        .create(dataplane("default", "dp-1", 80))
        .await
        .expect("create");
    assert_eq!(created.meta.version, 1);
    let got = s.get(&created.key()).await.expect("get");
    assert_eq!(
        got.spec, created.spec,
        "stored spec is exactly what was written"
    );
    assert_eq!(got.meta.labels, created.meta.labels);
    assert_eq!(got.meta.version, 1);
    assert_eq!(
        got.meta.creation_time.timestamp_millis(),
        created.meta.creation_time.timestamp_millis()
    );
    let missing = ResourceKey::new(ResourceType::Dataplane, "default", "nope");
    assert!(matches!(s.get(&missing).await, Err(Error::NotFound(_))));
    let secret = Resource::new("s", "default", Spec::Secret(SecretData::from_bytes(b"hi")));
    s.create(secret.clone()).await.expect("create secret");
    assert_eq!(s.get(&secret.key()).await.expect("get").spec, secret.spec);
    // A global insight with nested maps and uint64 counters.
    let insight: crate::resource::ZoneInsight = serde_json::from_value(serde_json::json!({
        "subscriptions": [{"id": "1", "globalInstanceId": "g", "connectTime": "2026-01-01T00:00:00Z",
            "status": {"total": {"responsesSent": "18446744073709551615"}, "stat": {"Mesh": {"responsesRejected": "2"}}},
            "version": {"kumaCp": {"version": "2.14.3"}}, "config": "{}", "authTokenProvided": true}],
        "healthCheck": {"time": "2026-01-01T00:00:05Z"}
    }))
    .expect("static insight parses");
    let insight = Resource::new("zone-1", "", Spec::ZoneInsight(insight));
    s.create(insight.clone()).await.expect("create insight");
    assert_eq!(s.get(&insight.key()).await.expect("get").spec, insight.spec);
    // The control plane's own Config (a VIP table: a JSON document inside a string).
    let config = Resource::new(
        "kuma-default-dns-vips",
        "",
        Spec::Config(crate::resource::ConfigSpec {
            config: r#"{"0:backend":{"address":"240.0.0.0","outbounds":[{"TagSet":{"kuma.io/service":"backend"},"Origin":"service","Port":0}]}}"#.into(),
        }),
    );
    s.create(config.clone()).await.expect("create config");
    let got = s.get(&config.key()).await.expect("get config");
    assert_eq!(got.spec, config.spec);
    assert_eq!(got.meta.mesh, "");
    let listed = s
        .list(ResourceType::Config, None)
        .await
        .expect("list configs");
    assert_eq!(listed.len(), 1);
}

async fn create_twice_conflicts(s: &impl Store) {
    s.create(mesh("m1")).await.expect("create");
    assert!(matches!(
        s.create(mesh("m1")).await,
        Err(Error::AlreadyExists(_))
    ));
}

async fn update_checks_version(s: &impl Store) {
    let v1 = s
        .create(dataplane("default", "dp-1", 80))
        .await
        .expect("create");
    let mut next = dataplane("default", "dp-1", 90);
    next.meta.version = v1.meta.version;
    let v2 = s.update(next.clone()).await.expect("update");
    assert_eq!(v2.meta.version, 2);
    assert!(v2.meta.modification_time >= v1.meta.modification_time);
    assert_eq!(
        v2.meta.creation_time.timestamp_millis(),
        v1.meta.creation_time.timestamp_millis()
    );
    // A writer that read v1 loses: nothing changes.
    let mut stale = dataplane("default", "dp-1", 100);
    stale.meta.version = 1;
    assert!(matches!(s.update(stale).await, Err(Error::Conflict(_))));
    assert_eq!(s.get(&v1.key()).await.expect("get").spec, next.spec);
    let ghost = dataplane("default", "ghost", 80);
    assert!(matches!(s.update(ghost).await, Err(Error::NotFound(_))));
}

async fn delete_and_cascade(s: &impl Store) {
    s.create(mesh("a")).await.expect("mesh a");
    s.create(mesh("b")).await.expect("mesh b");
    s.create(dataplane("a", "dp-1", 80)).await.expect("dp a");
    s.create(dataplane("b", "dp-1", 80)).await.expect("dp b");
    s.delete(&ResourceKey::new(ResourceType::Mesh, "", "a"))
        .await
        .expect("delete mesh");
    assert!(
        s.list(ResourceType::Dataplane, Some("a"))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        s.list(ResourceType::Dataplane, Some("b"))
            .await
            .expect("list")
            .len(),
        1
    );
    let key = ResourceKey::new(ResourceType::Dataplane, "b", "dp-1");
    s.delete(&key).await.expect("delete");
    assert!(matches!(s.delete(&key).await, Err(Error::NotFound(_))));
}

async fn list_filters_and_orders(s: &impl Store) {
    for (m, n) in [("z", "b"), ("a", "c"), ("a", "a"), ("m", "x")] {
        s.create(dataplane(m, n, 80)).await.expect("create");
    }
    s.create(mesh("a")).await.expect("mesh");
    let all: Vec<(String, String)> = s
        .list(ResourceType::Dataplane, None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| (r.meta.mesh, r.meta.name))
        .collect();
    let expected = [("a", "a"), ("a", "c"), ("m", "x"), ("z", "b")]
        .map(|(m, n)| (m.to_string(), n.to_string()));
    assert_eq!(all, expected);
    assert_eq!(
        s.list(ResourceType::Dataplane, Some("a"))
            .await
            .expect("list")
            .len(),
        2
    );
    assert_eq!(
        s.list(ResourceType::Mesh, None).await.expect("list").len(),
        1
    );
}

async fn watch_sees_every_write(s: &impl Store) {
    let mut rx = s.watch();
    let r = s
        .create(dataplane("default", "dp-1", 80))
        .await
        .expect("create");
    s.update(r.clone()).await.expect("update");
    s.delete(&r.key()).await.expect("delete");
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("event within 5s")
            .expect("event");
        assert_eq!(ev.key, r.key());
        kinds.push(ev.kind);
    }
    assert_eq!(
        kinds,
        [EventKind::Created, EventKind::Updated, EventKind::Deleted]
    );
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}
