//! The `multizone` scenario at tiny scale (30 proxies: 6 services × 5 replicas, fan-out 3,
//! two services per zone) against the debug `kuma-cp` started four times (global + 3 zones),
//! so it cannot rot. The scenario itself waits for the exact expected configuration of every
//! affected proxy (local endpoints and remote ingresses with their weights; the changed
//! ingress weight in every other zone) and for global's Dataplane counts, and fails
//! otherwise; this test asserts that it succeeded and counted every affected proxy and zone.
//! No timing is asserted.
//!
//! Needs the binaries: `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kuma_xds_load::scenario::{self, Options, Scenario};

const SERVICES: usize = 6;
const REPLICAS: usize = 5;
const FANOUT: usize = 3;
const ROUNDS: usize = 2;

/// The built `kuma-cp` (debug first); panics when missing (tests never skip silently).
fn kuma_cp() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("kuma-cp");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "kuma-cp not found under {}: run `cargo build --workspace --bins` first",
        target.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multizone_tiny() {
    let mut o = Options {
        services: SERVICES,
        replicas: REPLICAS,
        fanout: FANOUT,
        streams_per_connection: 5,
        rounds: ROUNDS,
        settle: Duration::from_millis(200),
        timeout: Duration::from_secs(90),
        ..Default::default()
    };
    o.cp.binary = Some(kuma_cp());
    let r = match scenario::run(Scenario::Multizone, o).await {
        Ok(r) => r,
        Err(e) => panic!("{e:#}"),
    };
    eprintln!("{}", r.table());
    let proxies = SERVICES * REPLICAS;
    let phase = |prefix: &str| {
        r.phases
            .iter()
            .find(|p| p.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no phase {prefix} in {:?}", r.phases))
    };
    assert_eq!(phase("connect").proxies, proxies, "every proxy converged");
    // Service 3 (zone-1) then 4 (zone-2) change; each is consumed by 3 services, of which
    // the two in other zones (5 replicas each) must see the new ingress weight.
    assert_eq!(phase("cross-zone add").proxies, 2 * REPLICAS * ROUNDS);
    assert_eq!(phase("cross-zone remove").proxies, 2 * REPLICAS * ROUNDS);
    let mz = r.multizone.as_ref().expect("multizone figures");
    assert_eq!(mz.zones, ["zone-1", "zone-2", "zone-3"]);
    assert_eq!(mz.proxies_per_zone, [10, 10, 10]);
    assert_eq!(mz.dataplanes_synced, proxies);
    assert_eq!(mz.resync_s.len(), 3, "every zone resynced");
    assert!(mz.global_kib_per_dataplane.is_finite());
    assert_eq!(r.init_fetch_timeouts, 0, "warming timed out");
    assert_eq!(mz.nacks, 0, "a proxy NACKed");
}
