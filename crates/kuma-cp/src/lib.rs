//! The control plane (`kuma-cp`): configuration, persistent stores, the REST API (HTTP and
//! HTTPS, served with diagnostics by [`serve`]: deadlines and connection caps), the DP server
//! (bootstrap + ADS), Envoy configuration generation, insights, and the composition root
//! [`app::build`].

pub mod api;
pub mod app;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod diagnostics;
pub mod dp_server;
pub mod envoy_admin;
#[cfg(test)]
mod golden;
pub mod insights;
pub mod kds;
pub mod mads;
pub mod manager;
pub mod mesh_setup;
pub mod metrics;
pub mod serve;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod vips;
pub mod xds;
