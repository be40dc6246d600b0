//! Target `metrics_text`: what Envoy's admin `/stats?format=prometheus` returns (its stat and
//! cluster names come from the mesh's configuration), fed to the metrics hijacker's
//! `kuma_dp::metrics::text::parse`, `merge::merge_clusters` and `text::write`.
//!
//! Invariants of an accepted body:
//! - what is written parses again, into families that are written the same (the writer's
//!   output is a fixed point), before and after the merge;
//! - the merge keeps every family, in order, and leaves no two series of a cluster family
//!   with the same label set;
//! - the assembled answer ends with one newline and holds no blank line.

use kuma_dp::metrics::merge::{self, CLUSTER_LABEL};
use kuma_dp::metrics::response::{self, Format};
use kuma_dp::metrics::text::{self, Family};

fn written(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        text::write(&mut out, family);
    }
    out
}

fn fixed_point(families: &[Family], stage: &str) -> String {
    let out = written(families);
    let again = text::parse(&out)
        .unwrap_or_else(|e| panic!("{stage}: the written body is refused: {e}\n{out}"));
    assert_eq!(written(&again), out, "{stage}: written twice differently");
    out
}

pub fn run(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut families) = text::parse(body) else {
        return;
    };
    fixed_point(&families, "parsed");
    let names: Vec<String> = families.iter().map(|f| f.name.clone()).collect();
    merge::merge_clusters(&mut families);
    let merged_names: Vec<String> = families.iter().map(|f| f.name.clone()).collect();
    assert_eq!(
        merged_names, names,
        "the merge keeps every family, in order"
    );
    for family in &families {
        if family
            .metrics
            .first()
            .is_none_or(|m| m.label(CLUSTER_LABEL).is_none())
        {
            continue;
        }
        let mut keys: Vec<Vec<(String, String)>> = family
            .metrics
            .iter()
            .filter(|m| m.label(CLUSTER_LABEL).is_some())
            .map(|m| {
                let mut labels = m.labels.clone();
                labels.sort();
                labels
            })
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            n,
            "{}: duplicate series after the merge",
            family.name
        );
    }
    let out = fixed_point(&families, "merged");
    let answer = response::assemble([out.as_bytes()], Format::Text);
    assert_eq!(answer.last(), Some(&b'\n'));
    assert!(!answer.windows(2).any(|w| w == b"\n\n"), "a blank line");
}
