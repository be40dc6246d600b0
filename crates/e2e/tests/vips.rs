//! VIPs of services (Kuma's legacy DNS model): allocated by the CP where every Dataplane is
//! seen, kept in Config `kuma-<mesh>-dns-vips` (read here from the sqlite store: Configs have
//! no REST path), stable across restarts, and in a multi-zone deployment allocated by global
//! and synced to zones so every zone has the same VIPs (a zone's new service waits for global
//! while global is down).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};

fn dataplane(name: &str, port: u16, service: &str) -> Value {
    json!({
        "type": "Dataplane", "mesh": "default", "name": name,
        "networking": {"address": "127.0.0.1", "inbound": [
            {"port": port, "servicePort": port + 1, "tags": {"kuma.io/service": service}}
        ]}
    })
}

fn put_dataplane(cp: &ControlPlane, name: &str, port: u16, service: &str) {
    let (code, body) = cp.put(
        &format!("/meshes/default/dataplanes/{name}"),
        &dataplane(name, port, service),
    );
    assert!(
        code == 201 || code == 200,
        "PUT dataplane {name}: {code} {body}"
    );
}

fn table(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn services_get_sequential_vips_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    put_dataplane(&cp, "backend-1", 9000, "backend");
    let start = Instant::now();
    put_dataplane(&cp, "web-1", 9010, "web");
    let want = table(&[("backend", "240.0.0.0"), ("web", "240.0.0.1")]);
    wait_for("both VIPs in the store", Duration::from_secs(5), || {
        (cp.vips("default") == want).then_some(())
    });
    let took = start.elapsed();
    println!("web's VIP was in the store {took:?} after its Dataplane was written");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Kuma's layout, byte for byte for one entry.
    let raw: Value =
        serde_json::from_str(&cp.stored_config("kuma-default-dns-vips").expect("stored"))
            .expect("JSON");
    assert_eq!(
        raw["0:backend"],
        json!({"address": "240.0.0.0", "outbounds": [{"TagSet": {"kuma.io/service": "backend"}, "Origin": "service", "Port": 0}]})
    );
    // Not on the REST API, as in Kuma.
    let (_, types) = cp.get("/_resources");
    assert!(
        types["resources"]
            .as_array()
            .expect("types")
            .iter()
            .all(|t| t["name"] != "Config"),
        "{types}"
    );

    // Restarted (SIGKILL): the same VIPs, and a new service takes the next address.
    cp.restart();
    assert_eq!(cp.vips("default"), want);
    put_dataplane(&cp, "api-1", 9020, "api");
    let mut want = want;
    want.insert("api".into(), "240.0.0.2".into());
    wait_for("api's VIP", Duration::from_secs(5), || {
        (cp.vips("default") == want).then_some(())
    });

    // A removed service keeps its VIP through the grace period (not in use meanwhile) and
    // gets it back when it returns.
    assert_eq!(cp.delete("/meshes/default/dataplanes/web-1"), 200);
    wait_for("web unused", Duration::from_secs(5), || {
        (!cp.vips("default").contains_key("web")).then_some(())
    });
    let raw: Value =
        serde_json::from_str(&cp.stored_config("kuma-default-dns-vips").expect("stored"))
            .expect("JSON");
    assert_eq!(raw["0:web"]["address"], "240.0.0.1", "{raw}");
    assert!(raw["0:web"]["unusedSince"].is_string(), "{raw}");
    put_dataplane(&cp, "web-2", 9030, "web");
    wait_for("web back with its VIP", Duration::from_secs(5), || {
        (cp.vips("default") == want).then_some(())
    });

    // dnsServer.CIDR changed: every VIP outside the new range is allocated again from it.
    cp.restart_with(&[("KUMA_DNS_SERVER_CIDR", "10.20.0.0/16")]);
    let moved = table(&[
        ("api", "10.20.0.0"),
        ("backend", "10.20.0.1"),
        ("web", "10.20.0.2"),
    ]);
    wait_for("VIPs in the new CIDR", Duration::from_secs(5), || {
        (cp.vips("default") == moved).then_some(())
    });
}

#[test]
fn global_allocates_and_every_zone_has_the_same_vips() {
    let dir = tempfile::tempdir().unwrap();
    let mut global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let t1 = global.zone_token("zone-1", &["cp"], "1h");
    let t2 = global.zone_token("zone-2", &["cp"], "1h");
    let zone1 = ControlPlane::start_zone(&global, "zone-1", Some(&t1), &dir.path().join("z1"), &[]);
    let zone2 = ControlPlane::start_zone(&global, "zone-2", Some(&t2), &dir.path().join("z2"), &[]);
    for z in [&zone1, &zone2] {
        wait_for(
            "the default Mesh on the zone",
            Duration::from_secs(15),
            || {
                z.names("/meshes")
                    .contains(&"default".to_string())
                    .then_some(())
            },
        );
    }

    // A Dataplane in zone-1: global allocates, both zones get global's table.
    let start = Instant::now();
    put_dataplane(&zone1, "backend-1", 9000, "backend");
    let want = table(&[("backend", "240.0.0.0")]);
    wait_for("global allocates", Duration::from_secs(5), || {
        (global.vips("default") == want).then_some(())
    });
    let on_global = start.elapsed();
    wait_for("zone-1 has global's VIPs", Duration::from_secs(5), || {
        (zone1.vips("default") == want).then_some(())
    });
    let on_zone = start.elapsed();
    println!(
        "backend's VIP: on global {on_global:?}, on zone-1 {on_zone:?} after its Dataplane was written on zone-1"
    );
    assert!(
        on_zone - on_global < Duration::from_secs(1),
        "zone-1 got the table {:?} after global",
        on_zone - on_global
    );
    assert_eq!(
        zone1.stored_config("kuma-default-dns-vips"),
        global.stored_config("kuma-default-dns-vips"),
        "the same table, string for string"
    );

    // A service of zone-2 gets the next VIP; every zone sees both.
    put_dataplane(&zone2, "web-1", 9010, "web");
    let want = table(&[("backend", "240.0.0.0"), ("web", "240.0.0.1")]);
    for (name, cp) in [("global", &global), ("zone-1", &zone1), ("zone-2", &zone2)] {
        wait_for(
            &format!("both VIPs on {name}"),
            Duration::from_secs(5),
            || (cp.vips("default") == want).then_some(()),
        );
    }
    // Global down (SIGKILL): a zone keeps its table, and a brand-new service of the zone
    // has no VIP until global is back (zones never allocate).
    global.kill();
    put_dataplane(&zone1, "api-1", 9020, "api");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(zone1.vips("default"), want, "zone-1 while global is down");
    // Global back: the same VIPs, and the new service continues the sequence everywhere.
    global.restart();
    // (zone-1 may already have reconnected and sent api-1: compare what was there.)
    let after = global.vips("default");
    for (service, vip) in &want {
        assert_eq!(
            after.get(service),
            Some(vip),
            "{service} after global's restart"
        );
    }
    let mut want = want;
    want.insert("api".into(), "240.0.0.2".into());
    for (name, cp) in [("global", &global), ("zone-1", &zone1), ("zone-2", &zone2)] {
        wait_for(
            &format!("api's VIP on {name}"),
            Duration::from_secs(15),
            || (cp.vips("default") == want).then_some(()),
        );
    }

    // A zone never allocates: its own new service waits for global.
    assert!(
        global.proc.log_text().contains("VIPs: mesh table changed"),
        "global's log names its allocations"
    );
    assert!(
        !zone1.proc.log_text().contains("VIPs: mesh table changed"),
        "zone-1 allocated by itself"
    );
}
