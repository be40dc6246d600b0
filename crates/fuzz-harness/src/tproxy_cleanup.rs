//! Target `tproxy_cleanup`: `iptables-save` output, fed to kumactl's
//! `transparent_proxy::cleanup::{find, removal_input, left_empty}` (what `kumactl uninstall
//! transparent-proxy` removes).
//!
//! Invariants:
//! - cleanup never proposes deleting a rule without our comment: every rule it lists is a
//!   `-A <chain> <spec>` line of that table in the save, in a chain that is not ours, and
//!   its spec, split into arguments as `iptables-restore` does, holds `--comment` followed
//!   by an argument starting with `kuma/mesh/transparent/proxy`;
//! - every chain it flushes and deletes is a `KUMA_MESH*` chain declared in that table;
//! - the `iptables-restore` input has exactly one line per rule and chain (no line break
//!   smuggled in), and the tables found empty are tables it found;
//! - after the removal (applied to the save text) nothing of ours is found any more.

use kumactl::transparent_proxy::cleanup::{
    TableFindings, arguments, find, left_empty, removal_input,
};
use kumactl::transparent_proxy::rules::{CHAIN_PREFIX, COMMENT_PREFIX};

pub fn run(data: &[u8]) {
    let save = String::from_utf8_lossy(data);
    let Ok(found) = find(&save) else {
        return;
    };
    for t in &found {
        let lines = table_lines(&save, &t.table);
        for (chain, spec) in &t.rules {
            assert!(!chain.starts_with(CHAIN_PREFIX), "{chain}");
            let line = format!("-A {chain} {spec}");
            assert!(
                lines.iter().any(|l| l.trim_end() == line.trim_end()),
                "{line:?} is not a rule of table {}",
                t.table
            );
            assert!(has_our_comment(spec), "{line:?} has no comment of ours");
        }
        for chain in &t.chains {
            assert!(chain.starts_with(CHAIN_PREFIX), "{chain}");
            assert!(
                lines.iter().any(|l| l
                    .strip_prefix(':')
                    .and_then(|d| d.split_whitespace().next())
                    == Some(chain.as_str())),
                "{chain} is not declared in table {}",
                t.table
            );
        }
    }
    let input = removal_input(&found);
    let want: usize = found
        .iter()
        .map(|t| 2 + t.rules.len() + 2 * t.chains.len())
        .sum();
    assert_eq!(input.lines().count(), want, "{input:?}");
    for table in left_empty(&save, &found) {
        assert!(found.iter().any(|t| t.table == table), "{table}");
    }
    let after = remove(&save, &found);
    assert_eq!(
        find(&after).as_deref(),
        Ok(&[][..]),
        "left after the removal:\n{after}"
    );
}

/// The trimmed lines of the blocks of `table` in the save.
fn table_lines<'a>(save: &'a str, table: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in save.lines().map(str::trim_end) {
        if let Some(name) = line.strip_prefix('*') {
            inside = name.trim() == table;
        } else if inside {
            out.push(line);
        }
    }
    out
}

/// The save as it would be after `found` is removed: its rules, and its chains with their
/// declarations and rules, gone from the blocks of their tables.
fn remove(save: &str, found: &[TableFindings]) -> String {
    let mut out = String::new();
    let mut current: Vec<&TableFindings> = Vec::new();
    for raw in save.lines() {
        let line = raw.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            current = found.iter().filter(|t| t.table == name.trim()).collect();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if current.iter().any(|t| t.chains.iter().any(|c| c == name)) {
                continue;
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if current.iter().any(|t| {
                t.chains.iter().any(|c| c == chain)
                    || t.rules.iter().any(|(c, s)| c == chain && s == spec)
            }) {
                continue;
            }
        }
        out.push_str(raw);
        out.push('\n');
    }
    out
}

/// Whether the rule spec, split into arguments as `iptables-restore` does (kumactl's
/// splitter, pinned by its own tests), holds `--comment <argument starting with our prefix>`.
fn has_our_comment(spec: &str) -> bool {
    let args = arguments(spec);
    args.windows(2)
        .any(|w| w[0] == "--comment" && w[1].starts_with(COMMENT_PREFIX))
}
