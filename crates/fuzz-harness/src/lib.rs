//! The entry points of the fuzz targets, one module per target, shared by the `cargo fuzz`
//! crate (`fuzz/`, nightly, libFuzzer) and the corpus replay test (`tests/replay.rs`,
//! stable, part of `cargo nextest run --workspace`), so the two cannot drift.
//!
//! Each `run(data)` feeds untrusted bytes to the same function the product uses on that
//! input and panics when an invariant breaks (a panic is what the fuzzer reports):
//!
//! | target | product entry point |
//! |---|---|
//! | [`resource_yaml`] | `Resource::parse_documents` + `Resource::from_wire` (YAML/JSON documents) |
//! | [`resource_json`] | `kuma_cp::api::decode_put`, the REST API's `PUT` body decoding |
//! | [`bootstrap_request`] | `kuma_cp::bootstrap::{decode, dataplane_from_request, envoy_bootstrap}` |
//! | [`xds_sotw`] | `kuma_xds::sotw::State` fed a sequence of requests and snapshots |
//! | [`xds_delta`] | `kuma_xds::delta::State` fed a sequence of requests and snapshots |
//! | [`token`] | `kuma_cp::tokens::Validator` (dataplane and user tokens) against real keys |
//! | [`kumactl_apply`] | `kumactl::template::parse_vars` + `kumactl::commands::apply::prepare` |
//! | [`kds_sink`] | `kuma_cp::kds::sink::receive`: what a zone sends global over KDS |
//! | [`dns_query`] | `kuma_dp::dns::server::decide`: a DNS query from any local process |
//! | [`dns_table`] | `kuma_dp::dns::table::Table::from_json`: the `/dns` body |
//! | [`dns_forward`] | `kuma_dp::dns::{forward::is_answer_to, server::relay}`: an upstream's answer |
//! | [`resolv_conf`] | `kuma_dp::dns::forward::parse_resolv_conf` |
//! | [`metrics_text`] | `kuma_dp::metrics::{text::parse, merge::merge_clusters, text::write}`: Envoy's stats |
//! | [`vip_table`] | `kuma_core::vips::VipTable::{parse, to_json, reconcile}`: a stored/synced VIP Config |
//! | [`tproxy_cleanup`] | `kumactl::transparent_proxy::cleanup::find`: `iptables-save` output |
//!
//! Invariants checked beyond "no panic, no hang": what is accepted round-trips through its
//! wire shape (JSON and the YAML printers), refusals are client errors (4xx), the xDS
//! state machines answer only subscribed types with what the current snapshot holds, DNS
//! replies parse, keep the query's id and fit the client's limit, and the transparent
//! proxy's cleanup only ever removes what carries its comment.

pub mod bootstrap_request;
pub mod dns_forward;
pub mod dns_query;
pub mod dns_table;
pub mod kds_sink;
pub mod kumactl_apply;
pub mod metrics_text;
pub mod resolv_conf;
pub mod resource_json;
pub mod resource_yaml;
pub mod token;
pub mod tproxy_cleanup;
pub mod vip_table;
pub mod xds_delta;
pub mod xds_sotw;

mod check;
mod xds;

/// A target's entry point: any bytes in, a panic when an invariant breaks.
pub type EntryPoint = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and the
/// `fuzz/corpus/<name>` directory) and its entry point.
pub const TARGETS: [(&str, EntryPoint); 15] = [
    ("bootstrap_request", bootstrap_request::run),
    ("dns_forward", dns_forward::run),
    ("dns_query", dns_query::run),
    ("dns_table", dns_table::run),
    ("kds_sink", kds_sink::run),
    ("kumactl_apply", kumactl_apply::run),
    ("metrics_text", metrics_text::run),
    ("resolv_conf", resolv_conf::run),
    ("resource_json", resource_json::run),
    ("resource_yaml", resource_yaml::run),
    ("token", token::run),
    ("tproxy_cleanup", tproxy_cleanup::run),
    ("vip_table", vip_table::run),
    ("xds_delta", xds_delta::run),
    ("xds_sotw", xds_sotw::run),
];
