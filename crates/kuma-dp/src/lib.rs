//! `kuma-dp`: the data plane agent of the mesh (Kuma 2.x compatible, Universal mode).
//!
//! It renders the proxy's resource template ([`template`], [`dataplane`]), asks the control plane
//! for an Envoy bootstrap ([`bootstrap`]), runs and supervises a real Envoy ([`envoy`]),
//! reports readiness on `127.0.0.1:9902` ([`readiness`]), answers DNS for the mesh's names on
//! `127.0.0.1:15053` ([`dns`]), and serves the proxy's metrics (Envoy's merged with the
//! applications') on a UNIX socket behind Envoy's Prometheus listener ([`metrics`]).
//! [`config`] turns the command line ([`cli`]) into one checked [`config::Config`]; [`app`] is
//! the composition root.

pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod dns;
pub mod duration;
pub mod envoy;
pub mod metrics;
pub mod readiness;
pub mod template;
