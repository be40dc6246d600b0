//! The transparent proxy on a Universal host: the iptables rules that send an application's
//! TCP traffic (and optionally its DNS) through the local Envoy and kuma-dp, as Kuma's
//! `kumactl install|uninstall transparent-proxy` sets them up.
//!
//! - [`rules`]: the rules of one IP family as `iptables-restore` input, a pure function of a
//!   [`rules::Plan`] (chain names, rule comments and defaults are Kuma 2.14.3's).
//! - [`cleanup`]: reading `iptables-save` output: what of ours is installed and the input
//!   that removes exactly that.
//! - [`host`]: the kuma-dp user, the resolv.conf nameservers, IPv6 availability, the
//!   loopback interface.
//! - [`iptables`]: running `iptables-save` / `iptables-restore --noflush` per family.
//!
//! Invariants: every rule the install adds to a built-in chain carries a comment starting
//! with [`rules::COMMENT_PREFIX`], and every chain it creates starts with
//! [`rules::CHAIN_PREFIX`]; the uninstall removes exactly those (and a table left empty
//! by that, see [`cleanup::left_empty`]). Each family's change is one `iptables-restore
//! --noflush` input: the nat table, plus the raw table for DNS conntrack zones.

pub mod cleanup;
pub mod host;
pub mod iptables;
pub mod rules;
