//! Zones as global shows them: a federated zone CP connected with its zone token appears in
//! `GET /zones+insights` and `kumactl inspect zones` as Online with its KDS subscription
//! (instance ids, counters, version, config), cannot be deleted while connected, shows
//! Offline once disabled, and Offline within 10 s of its CP being killed, after which it can
//! be deleted.

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};

/// The `ZoneOverview` of `zone` on `global`.
fn overview(global: &ControlPlane, zone: &str) -> Value {
    let (code, v) = global.get(&format!("/zones+insights/{zone}"));
    assert_eq!(code, 200, "{v}");
    v
}

fn online(o: &Value) -> bool {
    o["zoneInsight"]["subscriptions"]
        .as_array()
        .is_some_and(|subs| {
            subs.iter()
                .any(|s| s.get("connectTime").is_some() && s.get("disconnectTime").is_none())
        })
}

/// The `kumactl inspect zones` row of `zone`, split on column gaps.
fn inspect_row(global: &ControlPlane, zone: &str) -> Vec<String> {
    let (ok, table, err) = global.kumactl(&["inspect", "zones"]);
    assert!(ok, "{err}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{zone} ")))
        .unwrap_or_else(|| panic!("no {zone} in:\n{table}"));
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_connected_zone_is_online_on_global_and_offline_soon_after_its_cp_dies() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    let mut zone = ControlPlane::start_zone(
        &global,
        "zone-1",
        Some(&token),
        &dir.path().join("zone-1"),
        &[],
    );
    let o = wait_for("zone-1 online on global", Duration::from_secs(15), || {
        global
            .names("/zones")
            .contains(&"zone-1".to_string())
            .then(|| overview(&global, "zone-1"))
            .filter(online)
    });
    assert_eq!(o["type"], "ZoneOverview");
    assert_eq!(o["kri"], "kri_z____zone-1_");
    let sub = o["zoneInsight"]["subscriptions"]
        .as_array()
        .and_then(|s| s.last())
        .cloned()
        .expect("a subscription");
    let global_id = global.get("/").1["instanceId"].clone();
    assert_eq!(sub["globalInstanceId"], global_id, "{sub}");
    assert_eq!(sub["authTokenProvided"], true, "{sub}");
    // The zone sent its configuration (Kuma's `config`, JSON text).
    let config: Value =
        serde_json::from_str(sub["config"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    assert!(config.is_object(), "{sub}");
    // Global sent it something (Mesh `default` at least), counted.
    wait_for("updates counted", Duration::from_secs(15), || {
        let row = inspect_row(&global, "zone-1");
        (row[1] == "Online" && row[4] != "0").then_some(row)
    });

    // Connected: cannot be deleted (Kuma's rule).
    let (code, body) = e2e::http("DELETE", global.api, "/zones/zone-1", None).expect("DELETE");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Zone CP is still connected"), "{body}");

    // Disabled: Offline in `inspect zones`, connected all the same.
    let (code, body) = global.put(
        "/zones/zone-1",
        &json!({"type": "Zone", "name": "zone-1", "enabled": false}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(inspect_row(&global, "zone-1")[1], "Offline");
    assert!(online(&overview(&global, "zone-1")));
    let (code, body) = global.put(
        "/zones/zone-1",
        &json!({"type": "Zone", "name": "zone-1", "enabled": true}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(inspect_row(&global, "zone-1")[1], "Online");

    // Killed: Offline within 10 s, then deletable.
    let killed = Instant::now();
    zone.kill();
    wait_for("zone-1 offline on global", Duration::from_secs(10), || {
        (!online(&overview(&global, "zone-1"))).then_some(())
    });
    println!(
        "zone-1 offline on global {:?} after its CP was killed",
        killed.elapsed()
    );
    assert_eq!(inspect_row(&global, "zone-1")[1], "Offline");
    let (code, body) = e2e::http("DELETE", global.api, "/zones/zone-1", None).expect("DELETE");
    assert_eq!(code, 200, "{body}");
}
