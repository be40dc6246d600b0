//! The smoke run of the fuzz targets: every committed corpus file (`fuzz/corpus/<target>/`,
//! the seeds plus what `cargo fuzz` found, minimised) is replayed through the same entry
//! point the fuzz target calls. A missing or empty corpus fails, and so does a fuzz target
//! that has no entry point here (or the reverse), so the targets cannot rot unnoticed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay(target: &str) {
    let (_, run) = fuzz_harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no entry point for {target}"));
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panic!("{target} fails on {}", file.display());
        }
    }
}

#[test]
fn bootstrap_request() {
    replay("bootstrap_request");
}

#[test]
fn kds_sink() {
    replay("kds_sink");
}

#[test]
fn kumactl_apply() {
    replay("kumactl_apply");
}

#[test]
fn metrics_text() {
    replay("metrics_text");
}

#[test]
fn resource_json() {
    replay("resource_json");
}

#[test]
fn resource_yaml() {
    replay("resource_yaml");
}

#[test]
fn token() {
    replay("token");
}

#[test]
fn xds_delta() {
    replay("xds_delta");
}

#[test]
fn xds_sotw() {
    replay("xds_sotw");
}

#[test]
fn dns_forward() {
    replay("dns_forward");
}

#[test]
fn dns_query() {
    replay("dns_query");
}

#[test]
fn dns_table() {
    replay("dns_table");
}

#[test]
fn resolv_conf() {
    replay("resolv_conf");
}

#[test]
fn tproxy_cleanup() {
    replay("tproxy_cleanup");
}

#[test]
fn vip_table() {
    replay("vip_table");
}

/// `fuzz/fuzz_targets/<name>.rs` exist for exactly the entry points, each calling its own,
/// and each is a `[[bin]]` of the fuzz crate.
#[test]
fn fuzz_targets_match_the_entry_points() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = fuzz_harness::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(on_disk, names, "fuzz targets vs entry points");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &names {
        let source = std::fs::read_to_string(dir.join(format!("{name}.rs"))).expect("the target");
        assert!(
            source.contains(&format!("fuzz_harness::{name}::run(data)")),
            "fuzz target {name} does not call its entry point"
        );
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "fuzz target {name} is not a [[bin]] of fuzz/Cargo.toml"
        );
    }
}
