//! Mesh certificate authorities and proxy identities.
//!
//! - `builtin` backend: a root generated once per (mesh, backend) and stored as the mesh
//!   Secrets `<mesh>.ca-builtin-cert-<backend>` / `<mesh>.ca-builtin-key-<backend>`; never
//!   regenerated while present.
//! - `provided` backend: the operator's CA from `conf.cert` / `conf.key` data sources
//!   (`secret`, `inline` (base64), `inlineString`, `file`).
//! - Identities: a fresh key per issuance, URI SANs `spiffe://<mesh>/<service>` for every
//!   service of the proxy plus `kuma://<tag>/<value>` for every inbound tag, server+client
//!   auth, lifetime from `dpCert.rotation.expiration` (default 24h).
//!
//! - Before a Mesh is written, [`validate_backend`] is Kuma's CA plugin check of each backend
//!   (builtin: the root's secret name; provided: data sources chosen, the pair loads, and
//!   every certificate of the chain may sign: CA, `keyCertSign`, no `keyAgreement`).
//!
//! Keys are ECDSA P-256 (Kuma uses RSA-2048): equally supported by Envoy, and far cheaper to
//! generate for thousands of proxies. Provided CAs may use RSA or ECDSA keys (PKCS#8).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use kuma_core::resource::mesh::{self, CaBackend};
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType, SecretData, Spec};
use kuma_core::store;
use kuma_core::validate::Violation;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::manager::{ManagerError, ResourceManager};

/// CA failures, each naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend's configuration is unusable (missing data source, unreadable PEM...).
    #[error("mTLS backend {backend}: {reason}")]
    Config { backend: String, reason: String },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The store failed while reading or writing CA secrets.
    #[error("store: {0}")]
    Store(String),
}

impl From<ManagerError> for Error {
    fn from(e: ManagerError) -> Self {
        Error::Store(e.to_string())
    }
}

/// Default identity lifetime.
pub const DEFAULT_DP_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default builtin root lifetime (10 years).
pub const DEFAULT_ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A CA able to sign identities.
pub struct Ca {
    /// PEM of the root (what proxies trust).
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// An issued proxy identity.
#[derive(Clone, Debug)]
pub struct IssuedIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Names of the Secrets holding a builtin root.
pub fn builtin_secret_names(mesh: &str, backend: &str) -> (String, String) {
    (
        format!("{mesh}.ca-builtin-cert-{backend}"),
        format!("{mesh}.ca-builtin-key-{backend}"),
    )
}

/// Kuma's duration syntax: one integer and one unit of `y w d h m s ms`, or `0`.
pub fn parse_kuma_duration(s: &str) -> Option<Duration> {
    mesh::parse_kuma_duration(s.trim())
}

/// `dpCert.rotation.expiration` of a backend, default 24h.
pub fn dp_cert_lifetime(backend: &CaBackend) -> Duration {
    backend
        .dp_cert
        .as_ref()
        .and_then(|c| c.pointer("/rotation/expiration"))
        .and_then(Value::as_str)
        .and_then(parse_kuma_duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_DP_CERT_LIFETIME)
}

/// Mode of a backend: `PERMISSIVE` or (default) `STRICT`.
pub fn is_permissive(backend: &CaBackend) -> bool {
    backend.mode.as_deref() == Some("PERMISSIVE")
}

/// A new self-signed root for `mesh` (subject `O=Kuma, OU=Mesh, CN=<mesh>`, SAN `spiffe://<mesh>`).
pub fn generate_root(mesh: &str, lifetime: Duration) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Kuma");
    dn.push(DnType::OrganizationalUnitName, "Mesh");
    dn.push(DnType::CommonName, mesh);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .subject_alt_names
        .push(SanType::URI(format!("spiffe://{mesh}").try_into()?));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(10);
    params.not_after = now + lifetime;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Ca {
    /// A CA from PEM certificate and key (PKCS#8, ECDSA or RSA).
    pub fn from_pem(backend: &str, cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Config {
            backend: backend.into(),
            reason: format!("cannot read the CA key: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| Error::Config {
            backend: backend.into(),
            reason: format!("cannot read the CA certificate: {e}"),
        })?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// Issues an identity for a proxy of `mesh`.
    pub fn issue(
        &self,
        mesh: &str,
        dp: &Dataplane,
        lifetime: Duration,
    ) -> Result<IssuedIdentity, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let mut services = BTreeSet::new();
        let mut tags = BTreeSet::new();
        for inbound in dp.inbounds() {
            for (k, v) in &inbound.tags {
                if k == kuma_core::resource::dataplane::SERVICE_TAG {
                    services.insert(v.as_str());
                }
                tags.insert((k.as_str(), v.as_str()));
            }
        }
        for s in services {
            params
                .subject_alt_names
                .push(SanType::URI(format!("spiffe://{mesh}/{s}").try_into()?));
        }
        for (k, v) in tags {
            params
                .subject_alt_names
                .push(SanType::URI(format!("kuma://{k}/{v}").try_into()?));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut serial = uuid::Uuid::new_v4().into_bytes().to_vec();
        serial[0] &= 0x7f; // positive
        serial[0] |= 0x01; // non-zero
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(10);
        params.not_after = now + lifetime;
        // Names the issuing root by its key (the root's subject key identifier): builtin roots
        // of one mesh share their subject (Kuma's `O=Kuma, OU=Mesh, CN=<mesh>`), so while a
        // CA switch has proxies trust two of them, a verifier picks the right one by key.
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// Creates the builtin root secrets of every builtin backend of `mesh` that lacks them (on
/// every Mesh write, by [`crate::mesh_setup`]). Existing roots are never replaced.
pub async fn ensure_builtin_roots(manager: &ResourceManager, mesh: &Resource) -> Result<(), Error> {
    let Spec::Mesh(spec) = &mesh.spec else {
        return Ok(());
    };
    let Some(mtls) = &spec.mtls else {
        return Ok(());
    };
    let name = &mesh.meta.name;
    for b in mtls.backends.iter().filter(|b| b.backend_type == "builtin") {
        let (cert_name, key_name) = builtin_secret_names(name, &b.name);
        let cert_key = ResourceKey::new(ResourceType::Secret, name, &cert_name);
        match manager.get(&cert_key).await {
            Ok(_) => continue,
            Err(ManagerError::Store(store::Error::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
        let lifetime = b
            .conf
            .as_ref()
            .and_then(|c| c.pointer("/caCert/expiration"))
            .and_then(Value::as_str)
            .and_then(parse_kuma_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_ROOT_LIFETIME);
        let (cert, key) = generate_root(name, lifetime)?;
        // Key first: a cert secret without its key would be taken as "present".
        for (secret, pem) in [(&key_name, &key), (&cert_name, &cert)] {
            let res = Resource::new(
                secret,
                name,
                Spec::Secret(SecretData::from_bytes(pem.as_bytes())),
            );
            manager.upsert_internal(res).await?;
        }
        tracing::info!(mesh = %name, backend = %b.name, "generated the builtin CA root");
    }
    Ok(())
}

/// Loads the PEM certificate and key of a backend's CA (builtin secrets or provided data
/// sources); parse them with [`Ca::from_pem`].
pub async fn load_pems(
    manager: &ResourceManager,
    mesh: &str,
    backend: &CaBackend,
) -> Result<(String, String), Error> {
    match backend.backend_type.as_str() {
        "builtin" => {
            let (cert_name, key_name) = builtin_secret_names(mesh, &backend.name);
            let cert = secret_text(manager, mesh, &cert_name, &backend.name).await?;
            let key = secret_text(manager, mesh, &key_name, &backend.name).await?;
            Ok((cert, key))
        }
        "provided" => {
            let conf = backend.conf.clone().unwrap_or(Value::Null);
            let cert =
                data_source(manager, mesh, &backend.name, conf.get("cert"), "conf.cert").await?;
            let key =
                data_source(manager, mesh, &backend.name, conf.get("key"), "conf.key").await?;
            Ok((cert, key))
        }
        other => Err(Error::Config {
            backend: backend.name.clone(),
            reason: format!("unknown backend type {other}"),
        }),
    }
}

async fn secret_text(
    manager: &ResourceManager,
    mesh: &str,
    name: &str,
    backend: &str,
) -> Result<String, Error> {
    let key = ResourceKey::new(ResourceType::Secret, mesh, name);
    let res = manager.get(&key).await.map_err(|e| Error::Config {
        backend: backend.into(),
        reason: format!("secret {name}: {e}"),
    })?;
    let Spec::Secret(data) = &res.spec else {
        return Err(Error::Config {
            backend: backend.into(),
            reason: format!("{name} is not a secret"),
        });
    };
    let bytes = data.bytes().ok_or_else(|| Error::Config {
        backend: backend.into(),
        reason: format!("secret {name} is not base64"),
    })?;
    String::from_utf8(bytes).map_err(|_| Error::Config {
        backend: backend.into(),
        reason: format!("secret {name} is not PEM text"),
    })
}

/// Kuma's CA plugin check (`ValidateBackend`) of `backend`, an mTLS backend of the Mesh
/// `mesh_name` about to be written; paths are relative to the backend's `conf`.
pub async fn validate_backend(
    manager: &ResourceManager,
    mesh_name: &str,
    backend: &CaBackend,
) -> Vec<Violation> {
    match backend.backend_type.as_str() {
        "builtin" => mesh::builtin_backend_problems(mesh_name, backend),
        "provided" => {
            let problems = mesh::provided_conf_problems(backend);
            if !problems.is_empty() {
                return problems;
            }
            match load_pems(manager, mesh_name, backend).await {
                Ok((cert, key)) => pair_problems(&cert, &key),
                Err(e) => {
                    let reason = match e {
                        Error::Config { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    ["cert", "key"]
                        .into_iter()
                        .map(|field| Violation {
                            field: field.into(),
                            message: format!("could not load data: {reason}"),
                        })
                        .collect()
                }
            }
        }
        _ => Vec::new(),
    }
}

/// Kuma's provided CA certificate rules: the PEMs are a key pair, and every certificate of
/// the chain is a CA allowed to sign certificates and not to agree keys (X509-SVID).
fn pair_problems(cert_pem: &str, key_pem: &str) -> Vec<Violation> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let not_pair = |reason: String| {
        vec![Violation {
            field: "cert".into(),
            message: format!("not a valid TLS key pair: {reason}"),
        }]
    };
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect() {
            Ok(chain) => chain,
            Err(e) => return not_pair(format!("tls: failed to parse certificate PEM data: {e}")),
        };
    if chain.is_empty() {
        return not_pair("tls: failed to find any PEM data in certificate input".into());
    }
    let key = match KeyPair::from_pem(key_pem) {
        Ok(k) => k,
        Err(e) => return not_pair(format!("tls: failed to parse private key: {e}")),
    };
    let mut out = Vec::new();
    for (k, der) in chain.iter().enumerate() {
        let field = format!("cert[{k}]");
        let cert = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, c)) => c,
            Err(e) => {
                if k == 0 {
                    return not_pair(format!("x509: {e}"));
                }
                out.push(Violation {
                    field,
                    message: format!("not a valid x509 certificate: {e}"),
                });
                return out;
            }
        };
        let cert_key: &[u8] = &cert.tbs_certificate.subject_pki.subject_public_key.data;
        if k == 0 && cert_key != key.public_key_raw() {
            return not_pair("tls: private key does not match public key".into());
        }
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            out.push(Violation {
                field: field.clone(),
                message: "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)".into(),
            });
        }
        let (cert_sign, key_agreement) = match cert.key_usage() {
            Ok(Some(u)) => (u.value.key_cert_sign(), u.value.key_agreement()),
            _ => (false, false),
        };
        if !cert_sign {
            out.push(Violation {
                field: field.clone(),
                message:
                    "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)"
                        .into(),
            });
        }
        if key_agreement {
            out.push(Violation {
                field,
                message: "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: Appendix A. X.509 Field Reference)".into(),
            });
        }
    }
    out
}

/// A Kuma DataSource: `{secret: name}`, `{inline: base64}`, `{inlineString: text}`, `{file: path}`.
async fn data_source(
    manager: &ResourceManager,
    mesh: &str,
    backend: &str,
    source: Option<&Value>,
    field: &str,
) -> Result<String, Error> {
    let err = |reason: String| Error::Config {
        backend: backend.into(),
        reason: format!("{field}: {reason}"),
    };
    let Some(src) = source else {
        return Err(err("must be set for a provided CA".into()));
    };
    if let Some(name) = src.get("secret").and_then(Value::as_str) {
        return secret_text(manager, mesh, name, backend).await;
    }
    if let Some(b64) = src.get("inline").and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| err(format!("inline is not base64: {e}")))?;
        return String::from_utf8(bytes).map_err(|_| err("inline is not PEM text".into()));
    }
    if let Some(s) = src.get("inlineString").and_then(Value::as_str) {
        return Ok(s.to_string());
    }
    if let Some(path) = src.get("file").and_then(Value::as_str) {
        return std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {path}: {e}")));
    }
    Err(err("needs one of secret, inline, inlineString, file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_kuma_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_kuma_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_kuma_duration("1h30m"), None);
    }

    #[test]
    fn root_signs_identities_with_spiffe_sans() {
        use rustls_pki_types::pem::PemObject;
        let (cert, key) = generate_root("default", DEFAULT_ROOT_LIFETIME).unwrap();
        let ca = Ca::from_pem("ca-1", &cert, &key).unwrap();
        let dp: Dataplane = serde_json::from_value(serde_json::json!({"networking": {"address": "10.0.0.1",
            "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "web", "team": "a"}}]}}))
        .unwrap();
        let id = ca.issue("default", &dp, Duration::from_secs(60)).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(id.cert_pem.as_bytes());
        assert!(der.is_ok());
        assert!(id.not_after > id.not_before);
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref().unwrap()).unwrap();
        let sans: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(
            sans.iter().any(|s| s.contains("spiffe://default/web")),
            "{sans:?}"
        );
        assert!(sans.iter().any(|s| s.contains("kuma://team/a")), "{sans:?}");
    }

    /// Two builtin roots of one mesh have the same subject; an identity names its issuer by
    /// key, so a verifier trusting both picks the one that signed it.
    #[test]
    fn identities_name_their_root_by_key() {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::extensions::ParsedExtension;
        let key_ids = |pem: &str| {
            let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            let (mut ski, mut aki) = (None, None);
            for ext in c.extensions() {
                match ext.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
                    ParsedExtension::AuthorityKeyIdentifier(a) => {
                        aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                    }
                    _ => {}
                }
            }
            (c.subject().to_string(), ski, aki)
        };
        let dp: Dataplane =
            serde_json::from_value(serde_json::json!({"networking": {"address": "10.0.0.1",
            "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}}))
            .unwrap();
        let (c1, k1) = generate_root("default", DEFAULT_ROOT_LIFETIME).unwrap();
        let (c2, k2) = generate_root("default", DEFAULT_ROOT_LIFETIME).unwrap();
        let (subject1, ski1, _) = key_ids(&c1);
        let (subject2, ski2, _) = key_ids(&c2);
        assert_eq!(subject1, subject2, "Kuma's subject, whatever the backend");
        assert!(ski1.is_some() && ski1 != ski2, "{ski1:?} {ski2:?}");
        for (cert, key, ski) in [(&c1, &k1, &ski1), (&c2, &k2, &ski2)] {
            let ca = Ca::from_pem("ca", cert, key).unwrap();
            let id = ca.issue("default", &dp, Duration::from_secs(60)).unwrap();
            assert_eq!(
                &key_ids(&id.cert_pem).2,
                ski,
                "the identity's AKI is its root's SKI"
            );
        }
    }
}
