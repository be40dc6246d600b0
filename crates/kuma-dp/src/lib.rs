//! `kuma-dp`: the data plane agent of the mesh (Kuma 2.x compatible, Universal mode).
//!
//! It renders the proxy's resource template ([`template`], [`dataplane`]), asks the control plane
//! for an Envoy bootstrap ([`bootstrap`]), runs and supervises a real Envoy ([`envoy`]),
//! reports readiness on `127.0.0.1:9902` ([`readiness`]), and answers DNS for the mesh's names on
//! `127.0.0.1:15053` ([`dns`]). [`config`] turns the command line
//! ([`cli`]) into one checked [`config::Config`]; [`app`] is the composition root.

pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod dns;
pub mod duration;
pub mod envoy;
pub mod readiness;
pub mod template;
