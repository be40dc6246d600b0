//! Reading `iptables-save` output: whether the transparent proxy is installed, and the
//! `iptables-restore --noflush` input that removes exactly what the install added. Pure.
//!
//! What belongs to the transparent proxy: the chains named `KUMA_MESH*` (flushed, then
//! deleted) and, in every other chain, the rules whose comment starts with
//! `kuma/mesh/transparent/proxy` (deleted one by one, by their full rule spec). Nothing else
//! is touched, so `iptables-save` after the removal equals `iptables-save` before the install
//! (but for counters). Every table of the save is considered, so rules of an older install
//! in `raw` or `mangle` go too.

use super::rules::{CHAIN_PREFIX, COMMENT_PREFIX};

/// Errors of reading an `iptables-save` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A rule of another chain jumps to a `KUMA_MESH*` chain without the comment that marks
    /// it as ours: removing the chain would fail, removing the rule could remove someone
    /// else's; the operator decides.
    #[error(
        "transparent proxy rules detected, but the rule `-A {chain} {rule}` in table {table} has no comment starting with {COMMENT_PREFIX:?}; cleanup cannot proceed safely. Please remove the transparent proxy iptables rules manually"
    )]
    Uncommented {
        table: String,
        chain: String,
        rule: String,
    },
}

/// What of the transparent proxy one table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFindings {
    /// Table name (`nat`).
    pub table: String,
    /// `KUMA_MESH*` chains, in save order.
    pub chains: Vec<String>,
    /// Commented rules in other chains: (chain, rule spec after `-A <chain> `).
    pub rules: Vec<(String, String)>,
}

/// The transparent proxy's chains and rules in an `iptables-save` output, per table (tables
/// without any are left out).
pub fn find(save: &str) -> Result<Vec<TableFindings>, Error> {
    let mut found = Vec::new();
    let mut cur: Option<TableFindings> = None;
    for line in save.lines() {
        let line = line.trim_end();
        if let Some(table) = line.strip_prefix('*') {
            cur = Some(TableFindings {
                table: table.trim().to_string(),
                ..Default::default()
            });
        } else if line == "COMMIT" {
            if let Some(t) = cur.take()
                && (!t.chains.is_empty() || !t.rules.is_empty())
            {
                found.push(t);
            }
        } else if let (Some(t), Some(decl)) = (cur.as_mut(), line.strip_prefix(':')) {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                t.chains.push(name.to_string());
            }
        } else if let (Some(t), Some(rule)) = (cur.as_mut(), line.strip_prefix("-A ")) {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if chain.starts_with(CHAIN_PREFIX) {
                continue;
            }
            let args = arguments(spec);
            if has_our_comment(&args) {
                t.rules.push((chain.to_string(), spec.to_string()));
            } else if jumps_to_ours(&args) {
                return Err(Error::Uncommented {
                    table: t.table.clone(),
                    chain: chain.to_string(),
                    rule: spec.to_string(),
                });
            }
        }
    }
    Ok(found)
}

/// A rule spec split into its arguments as `iptables-restore` reads it: space, tab and line
/// feed (only those: a form feed is part of an argument) separate them, `"` quotes (a closing quote ends the argument), `\` escapes the next
/// character inside quotes. A rule is judged on its arguments, never on a substring: text
/// inside another rule's comment (`--comment "see -j KUMA_MESH_OUTBOUND"`) is not a jump,
/// and a comment of ours must be a `--comment` argument.
pub fn arguments(spec: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut arg = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in spec.chars() {
        if quoted {
            if escaped {
                arg.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
                args.push(std::mem::take(&mut arg));
            } else {
                arg.push(c);
            }
        } else if c == '"' {
            quoted = true;
        } else if matches!(c, ' ' | '\t' | '\n') {
            if !arg.is_empty() {
                args.push(std::mem::take(&mut arg));
            }
        } else {
            arg.push(c);
        }
    }
    if !arg.is_empty() {
        args.push(arg);
    }
    args
}

/// `--comment <text starting with our prefix>`.
fn has_our_comment(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--comment" && w[1].starts_with(COMMENT_PREFIX))
}

/// `-j` / `-g` to a `KUMA_MESH*` chain.
fn jumps_to_ours(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| matches!(w[0].as_str(), "-j" | "-g") && w[1].starts_with(CHAIN_PREFIX))
}

/// The `iptables-restore --noflush` input removing `found`: per table, the rules of the
/// built-in chains first (`-D <chain> <spec>`), then every `KUMA_MESH*` chain flushed, then
/// deleted (they jump to each other, so all flushes come before any delete). Empty when
/// there is nothing to remove.
pub fn removal_input(found: &[TableFindings]) -> String {
    let mut text = String::new();
    for t in found {
        text.push_str(&format!("*{}\n", t.table));
        for (chain, spec) in &t.rules {
            text.push_str(&format!("-D {chain} {spec}\n"));
        }
        for c in &t.chains {
            text.push_str(&format!("-F {c}\n"));
        }
        for c in &t.chains {
            text.push_str(&format!("-X {c}\n"));
        }
        text.push_str("COMMIT\n");
    }
    text
}

/// The tables of `found` that hold nothing once the removal is done: no rule and no chain
/// left but the built-in ones, each with policy `ACCEPT`. With the nf_tables backend such a
/// table is usually one the install created (a fresh host or namespace has no nat or raw
/// table); deleting it too makes `iptables-save` show what it showed before the install.
pub fn left_empty(save: &str, found: &[TableFindings]) -> Vec<String> {
    let mut empty = Vec::new();
    let mut table: Option<&TableFindings> = None;
    let mut holds_more = false;
    for line in save.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            table = found.iter().find(|t| t.table == name.trim());
            holds_more = false;
        } else if line == "COMMIT" {
            if let Some(t) = table.take()
                && !holds_more
            {
                empty.push(t.table.clone());
            }
        } else if let (Some(t), Some(decl)) = (table, line.strip_prefix(':')) {
            let mut f = decl.split_whitespace();
            let (name, policy) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
            let ours = t.chains.iter().any(|c| c == name);
            // A user chain (policy `-`) not ours, or a built-in chain that drops, stays.
            if !ours && policy != "ACCEPT" {
                holds_more = true;
            }
        } else if let (Some(t), Some(rule)) = (table, line.strip_prefix("-A ")) {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            let ours = t.chains.iter().any(|c| c == chain)
                || t.rules.iter().any(|(c, r)| c == chain && r == spec);
            if !ours {
                holds_more = true;
            }
        }
    }
    empty
}

/// A one-line account of `found` (`table nat: 3 rules in built-in chains, chains A, B`).
pub fn describe(found: &[TableFindings]) -> String {
    found
        .iter()
        .map(|t| {
            format!(
                "table {}: {} rule(s) in built-in chains, chains {}",
                t.table,
                t.rules.len(),
                if t.chains.is_empty() {
                    "none".to_string()
                } else {
                    t.chains.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 30 13:20:41 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUMA_MESH_INBOUND - [0:0]
:KUMA_MESH_INBOUND_REDIRECT - [0:0]
:USER_CHAIN - [0:0]
-A PREROUTING -p tcp -m comment --comment "kuma/mesh/transparent/proxy/redirect inbound TCP traffic to our custom chain for processing" -j KUMA_MESH_INBOUND
-A OUTPUT -d 192.0.2.1/32 -j USER_CHAIN
-A OUTPUT -p udp -m comment --comment "kuma/mesh/transparent/proxy/return early for DNS traffic from kuma-dp" -m udp --dport 53 -m owner --uid-owner 5678 -j RETURN
-A KUMA_MESH_INBOUND -p tcp -m comment --comment "kuma/mesh/transparent/proxy/x" -j KUMA_MESH_INBOUND_REDIRECT
-A KUMA_MESH_INBOUND_REDIRECT -p tcp -m comment --comment "kuma/mesh/transparent/proxy/y" -j REDIRECT --to-ports 15006
-A USER_CHAIN -j RETURN
COMMIT
# Completed on Mon Nov 30 13:20:41 2026
"#;

    #[test]
    fn removal_deletes_our_rules_and_chains_and_nothing_else() {
        let found = find(SAVE).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let want = r#"*nat
-D PREROUTING -p tcp -m comment --comment "kuma/mesh/transparent/proxy/redirect inbound TCP traffic to our custom chain for processing" -j KUMA_MESH_INBOUND
-D OUTPUT -p udp -m comment --comment "kuma/mesh/transparent/proxy/return early for DNS traffic from kuma-dp" -m udp --dport 53 -m owner --uid-owner 5678 -j RETURN
-F KUMA_MESH_INBOUND
-F KUMA_MESH_INBOUND_REDIRECT
-X KUMA_MESH_INBOUND
-X KUMA_MESH_INBOUND_REDIRECT
COMMIT
"#;
        assert_eq!(removal_input(&found), want);
        assert_eq!(
            describe(&found),
            "table nat: 2 rule(s) in built-in chains, chains KUMA_MESH_INBOUND, KUMA_MESH_INBOUND_REDIRECT"
        );
    }

    #[test]
    fn only_tables_left_with_nothing_are_empty() {
        let found = find(SAVE).unwrap();
        // nat keeps USER_CHAIN and a rule of someone else.
        assert_eq!(left_empty(SAVE, &found), Vec::<String>::new());
        let fresh = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -m comment --comment \"kuma/mesh/transparent/proxy/z\" -j CT --zone 1\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUMA_MESH_OUTBOUND - [0:0]\n-A OUTPUT -p tcp -m comment --comment \"kuma/mesh/transparent/proxy/o\" -j KUMA_MESH_OUTBOUND\n-A KUMA_MESH_OUTBOUND -j RETURN\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        let found = find(fresh).unwrap();
        assert_eq!(left_empty(fresh, &found), ["raw", "nat"]);
        // A built-in chain whose policy is not ACCEPT keeps its table.
        let dropping = fresh.replace(
            ":PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp",
            ":PREROUTING DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp",
        );
        assert_eq!(left_empty(&dropping, &find(&dropping).unwrap()), ["nat"]);
    }

    #[test]
    fn nothing_installed_finds_nothing() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n";
        assert_eq!(find(save).unwrap(), vec![]);
        assert_eq!(removal_input(&[]), "");
        assert_eq!(find("").unwrap(), vec![]);
    }

    /// A rule is ours by its arguments, not by a substring: the `tproxy_cleanup` fuzz target
    /// found a rule whose own comment (`"kuma/meshUTPUT ... --comment "`) is not ours, but
    /// which held `--comment "kuma/mesh/transparent/proxy` as text, and was listed for
    /// deletion. (`iptables-save` escapes quotes inside values, so its output never reads
    /// so; the check is the safety line of the uninstall all the same.) Text inside a
    /// comment is no jump either.
    #[test]
    fn rules_are_judged_on_their_arguments() {
        let save = "*nat\n:OUTPUT ACCEPT [0:0]\n:KUMA_MESH_OUTBOUND - [0:0]\n\
            -A OUTPUT -p udp -m comment --comment \"kuma/meshX -m comment --comment \"kuma/mesh/transparent/proxy/a b -j RETURN\n\
            -A OUTPUT -m comment --comment \"x\\\" --comment \\\"kuma/mesh/transparent/proxy/evil\" -j RETURN\n\
            -A OUTPUT -m comment --comment \"do not -j KUMA_MESH_OUTBOUND\" -j RETURN\n\
            -A OUTPUT -m comment --comment \"kuma/mesh/transparent/proxy/o\" -j KUMA_MESH_OUTBOUND\n\
            COMMIT\n";
        let found = find(save).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].rules,
            vec![(
                "OUTPUT".to_string(),
                "-m comment --comment \"kuma/mesh/transparent/proxy/o\" -j KUMA_MESH_OUTBOUND"
                    .to_string()
            )]
        );
        assert_eq!(
            arguments(r#"-m comment --comment "a \"b\" \\c"  -j  X"#),
            ["-m", "comment", "--comment", r#"a "b" \c"#, "-j", "X"]
        );
        // Found by fuzzing: a form feed does not separate arguments.
        assert_eq!(
            arguments("-m comment\x0c--comment \"kuma/mesh/transparent/proxy/o\""),
            [
                "-m",
                "comment\x0c--comment",
                "kuma/mesh/transparent/proxy/o"
            ]
        );
    }

    #[test]
    fn an_uncommented_jump_to_our_chain_is_refused() {
        let save = "*nat\n:OUTPUT ACCEPT [0:0]\n:KUMA_MESH_OUTBOUND - [0:0]\n-A OUTPUT -p tcp -j KUMA_MESH_OUTBOUND\nCOMMIT\n";
        let err = find(save).unwrap_err();
        assert!(
            err.to_string()
                .contains("`-A OUTPUT -p tcp -j KUMA_MESH_OUTBOUND` in table nat"),
            "{err}"
        );
    }
}
