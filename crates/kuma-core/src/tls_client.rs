//! TLS client trust from what the operator gave: a CA bundle, or nothing at all (skip
//! verification, for development). kuma-dp dials the DP server with it (`--ca-cert-file`,
//! `--skip-verify`), a federated zone CP dials global's KDS server with it
//! (`multizone.zone.kds.rootCaFile`, `tlsSkipVerify`). There is no silent fallback to system
//! roots: the callers make a missing choice a configuration error.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA PEM holds no usable certificate.
    #[error("invalid CA certificate: {0}")]
    BadCa(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting exactly the certificates in `ca_pem`.
pub fn with_ca(ca_pem: &str) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| Error::BadCa(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::BadCa("no PEM certificate found".into()));
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that trusts no certificate at all (for plain-http control planes).
pub fn trust_nothing() -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// A client configuration that accepts any server certificate (`--skip-verify`).
pub fn insecure() -> Result<ClientConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnything {
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Accepts every certificate and signature: only ever used with `--skip-verify`.
#[derive(Debug)]
struct AcceptAnything {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_pem_without_certificates() {
        assert!(matches!(with_ca("hello"), Err(Error::BadCa(_))));
    }

    #[test]
    fn insecure_builds() {
        insecure().unwrap();
    }
}
