//! mTLS changes in stages, so that traffic keeps flowing while proxies move from one
//! configuration to the next.
//!
//! Proxies do not switch at the same instant: for a while some run the old configuration and
//! some the new one. A change is hitless only if every pair of (old, new) stages can talk:
//! a client never speaks TLS to an inbound that only takes plaintext, never presents a
//! certificate its peer does not trust yet, and an inbound never demands a certificate from
//! a client that still speaks plaintext. [`next`] gives the next stage on the way from what
//! the proxies run to what the Mesh asks for; the reconciler applies one stage, waits for it
//! to reach the proxies, then applies the next:
//!
//! - on: inbounds accept mTLS and plaintext (PERMISSIVE) while clients still speak plaintext;
//!   then clients speak mTLS; then inbounds become STRICT if asked;
//! - off: STRICT inbounds accept plaintext again; then clients speak plaintext; then inbounds
//!   drop TLS;
//! - CA switch: every proxy trusts the new root; then identities come from the new CA (both
//!   roots still trusted); then roots no longer listed are dropped;
//! - PERMISSIVE <-> STRICT while every client speaks mTLS: one stage.

use std::collections::BTreeSet;

use super::generator::is_http;

/// What inbound listeners accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbound {
    /// Plaintext only.
    Off,
    /// mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

/// The mTLS configuration every proxy of a mesh is given at one time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stage {
    pub inbound: Inbound,
    /// Outbound clusters speak mTLS.
    pub outbound: bool,
    /// The backend issuing identities (`None` when mTLS is off).
    pub issuer: Option<String>,
    /// The backends whose roots proxies trust.
    pub trusted: BTreeSet<String>,
}

impl Stage {
    /// mTLS off.
    pub fn off() -> Self {
        Self {
            inbound: Inbound::Off,
            outbound: false,
            issuer: None,
            trusted: BTreeSet::new(),
        }
    }

    /// What a Mesh asks for: `enabled` backend in `permissive` or strict mode, trusting
    /// `trusted` (the enabled backend is always trusted).
    pub fn target(enabled: Option<(&str, bool)>, trusted: &[&str]) -> Self {
        let Some((issuer, permissive)) = enabled else {
            return Self::off();
        };
        let mut t: BTreeSet<String> = trusted.iter().map(|s| s.to_string()).collect();
        t.insert(issuer.to_string());
        Self {
            inbound: if permissive {
                Inbound::Permissive
            } else {
                Inbound::Strict
            },
            outbound: true,
            issuer: Some(issuer.to_string()),
            trusted: t,
        }
    }

    /// Whether proxies get an identity and TLS inbound chains.
    pub fn is_on(&self) -> bool {
        self.inbound != Inbound::Off
    }
}

/// What a service's consumers (outbound) and its own inbounds speak while its protocol
/// changes from `from` to `to` (`(outbound, inbound)`), before the change counts as applied:
/// the side that can carry both goes first. TCP to HTTP: inbounds start parsing HTTP (the
/// HTTP/1.1 that consumers still pass through as raw bytes is parsed all the same), then
/// consumers speak HTTP (HTTP/2 between proxies). HTTP to TCP: consumers stop speaking HTTP/2
/// to the inbound first (the application's raw HTTP/1.1 still parses), then inbounds pass raw
/// bytes. Between two HTTP protocols both sides change at once (inbounds take any HTTP).
pub fn protocol_sides<'a>(from: &'a str, to: &'a str) -> (&'a str, &'a str) {
    match (is_http(from), is_http(to)) {
        (false, true) => (from, to),
        (true, false) => (to, from),
        _ => (to, to),
    }
}

/// The next stage from `applied` (what the proxies run) toward `target`.
pub fn next(applied: &Stage, target: &Stage) -> Stage {
    if applied == target {
        return target.clone();
    }
    let union = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> BTreeSet<String> {
        a.union(b).cloned().collect()
    };
    if !target.is_on() {
        return match applied.inbound {
            Inbound::Strict => Stage {
                inbound: Inbound::Permissive,
                ..applied.clone()
            },
            _ if applied.outbound => Stage {
                inbound: Inbound::Permissive,
                outbound: false,
                ..applied.clone()
            },
            _ => Stage::off(),
        };
    }
    if !applied.is_on() {
        // Nobody presents a certificate yet: start accepting mTLS, keep sending plaintext.
        return Stage {
            inbound: Inbound::Permissive,
            outbound: false,
            ..target.clone()
        };
    }
    if applied.issuer != target.issuer {
        let trusted = union(&applied.trusted, &target.trusted);
        let new_trusted = target
            .issuer
            .as_ref()
            .is_some_and(|i| applied.trusted.contains(i));
        return if new_trusted {
            Stage {
                issuer: target.issuer.clone(),
                trusted,
                ..applied.clone()
            }
        } else {
            Stage {
                trusted,
                ..applied.clone()
            }
        };
    }
    if !applied.outbound {
        return Stage {
            inbound: Inbound::Permissive,
            outbound: true,
            issuer: target.issuer.clone(),
            trusted: union(&applied.trusted, &target.trusted),
        };
    }
    target.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(from: &Stage, to: &Stage) -> Vec<Stage> {
        let mut out = Vec::new();
        let mut at = from.clone();
        while at != *to {
            at = next(&at, to);
            out.push(at.clone());
            assert!(out.len() < 10, "no progress: {out:?}");
        }
        out
    }

    /// Whether a client at stage `c` reaches a server at stage `s`.
    fn talks(c: &Stage, s: &Stage) -> bool {
        if c.outbound {
            // The server must take mTLS and trust the client's issuer; the client must trust
            // the server's issuer.
            s.inbound != Inbound::Off
                && c.issuer.as_ref().is_some_and(|i| s.trusted.contains(i))
                && s.issuer.as_ref().is_some_and(|i| c.trusted.contains(i))
        } else {
            s.inbound != Inbound::Strict
        }
    }

    fn assert_hitless(from: &Stage, to: &Stage) {
        let mut prev = from.clone();
        for stage in walk(from, to) {
            for (a, b) in [(&prev, &stage), (&stage, &prev), (&stage, &stage)] {
                assert!(
                    talks(a, b),
                    "{a:?} cannot reach {b:?} on the way {from:?} -> {to:?}"
                );
            }
            prev = stage;
        }
    }

    #[test]
    fn every_transition_keeps_every_pair_talking() {
        let off = Stage::off();
        let perm1 = Stage::target(Some(("ca-1", true)), &[]);
        let strict1 = Stage::target(Some(("ca-1", false)), &[]);
        let strict2_both = Stage::target(Some(("ca-2", false)), &["ca-1"]);
        let strict2 = Stage::target(Some(("ca-2", false)), &[]);
        let perm2 = Stage::target(Some(("ca-2", true)), &[]);
        for (a, b) in [
            (&off, &perm1),
            (&off, &strict1),
            (&perm1, &strict1),
            (&strict1, &perm1),
            (&strict1, &strict2_both),
            (&strict1, &strict2),
            (&strict2_both, &strict2),
            (&strict1, &off),
            (&perm1, &off),
            (&perm1, &strict2),
            (&strict2, &perm2),
        ] {
            assert_hitless(a, b);
        }
    }

    #[test]
    fn protocol_changes_start_on_the_side_that_takes_both() {
        assert_eq!(protocol_sides("tcp", "http"), ("tcp", "http"));
        assert_eq!(protocol_sides("http", "tcp"), ("tcp", "http"));
        assert_eq!(protocol_sides("http", "grpc"), ("grpc", "grpc"));
        assert_eq!(protocol_sides("tcp", "kafka"), ("kafka", "kafka"));
    }

    #[test]
    fn stages_of_common_changes() {
        let off = Stage::off();
        let strict1 = Stage::target(Some(("ca-1", false)), &[]);
        assert_eq!(walk(&off, &strict1).len(), 3, "accept, send, require");
        assert_eq!(walk(&strict1, &off).len(), 3, "accept, stop sending, drop");
        let strict2 = Stage::target(Some(("ca-2", false)), &["ca-1"]);
        let steps = walk(&strict1, &strict2);
        assert_eq!(steps.len(), 2, "trust, then issue: {steps:?}");
        assert_eq!(steps[0].issuer.as_deref(), Some("ca-1"));
        assert!(steps[0].trusted.contains("ca-2"));
        let perm1 = Stage::target(Some(("ca-1", true)), &[]);
        assert_eq!(walk(&perm1, &strict1), vec![strict1.clone()]);
    }
}
