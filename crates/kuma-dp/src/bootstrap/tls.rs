//! TLS trust for the connection to the control plane's DP server: the CA of
//! `--ca-cert-file` (or `KUMA_CONTROL_PLANE_CA_CERT`), or nothing at all with
//! `--skip-verify` ([`kuma_core::tls_client`]); an https address without either is a
//! configuration error.

pub use kuma_core::tls_client::{insecure, trust_nothing, with_ca};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither a CA nor `--skip-verify` for an https address.
    #[error(
        "the control plane address {0} uses https but no CA certificate was given: pass \
         --ca-cert-file <ca.pem> (or KUMA_CONTROL_PLANE_CA_CERT_FILE) to verify the control \
         plane, or --skip-verify to disable verification (insecure)"
    )]
    NoTrust(String),
    /// The CA or rustls refused.
    #[error(transparent)]
    Trust(#[from] kuma_core::tls_client::Error),
}
