//! The `envoy-admin` CA (Kuma's `pkg/envoy/admin/tls`): GlobalSecret `envoy-admin-ca`, its
//! `data` the CA certificate PEM followed by its key PEM (base64 in the resource, as Kuma
//! stores it), created at start on standalone and zone CPs when absent, never on global and
//! never synced over KDS (each zone has its own).
//!
//! From it: one client certificate per CP process (DNS SAN `kuma-cp`, client auth), which the
//! CP presents to every proxy's `kuma:envoy:admin` listener; and per proxy a server
//! certificate (IP SANs = the proxy's addresses, server auth), cached until those addresses
//! change so the proxy's Envoy config is stable across regenerations.
//!
//! Keys are ECDSA P-256 (Kuma: RSA-2048), PEM like Kuma's: cheap to issue for many proxies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kuma_core::resource::{Resource, ResourceKey, ResourceType, SecretData, Spec};
use kuma_core::store;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::manager::{ManagerError, ResourceManager};
use crate::xds::lifecycle::AdminNode;

/// Name of the GlobalSecret holding the CA (Kuma's `system.EnvoyAdminCA`).
pub const CA_SECRET: &str = "envoy-admin-ca";
/// DNS SAN of the CP's client certificate, required by every admin listener (Kuma's
/// `ClientCertSAN`).
pub const CLIENT_SAN: &str = "kuma-cp";
/// Validity of the CA and of the certificates it issues (Kuma: 10 years).
const LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Failures of the envoy-admin PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed reading or writing the CA.
    #[error("GlobalSecret {CA_SECRET}: {0}")]
    Store(#[from] ManagerError),
    /// The stored CA does not hold a certificate and a key PEM block.
    #[error("GlobalSecret {CA_SECRET}: {0}")]
    BadCa(String),
    /// Certificate generation failed.
    #[error("envoy-admin certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What one proxy's admin listener serves: its certificate and the CA its clients must use.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: CertPair,
    pub ca_pem: String,
    /// The addresses the certificate was issued for (its SANs).
    pub addresses: Vec<String>,
}

/// A proxy's admin resources and what they were built from.
struct AdminBuild {
    tls: Arc<ServerTls>,
    admin: AdminNode,
    resources: Vec<Arc<kuma_xds::Resource>>,
}

/// The loaded CA, the CP's client certificate and the per-proxy server certificates.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    client: CertPair,
    servers: Mutex<HashMap<String, Arc<ServerTls>>>,
    /// Per proxy: its admin resources as last built, with the certificate and admin metadata
    /// they were built from (reused while both are unchanged).
    built: Mutex<HashMap<String, AdminBuild>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CA from the store, creating it first when absent (standalone and zone CPs:
    /// Kuma's `EnsureEnvoyAdminCaExists`), and issues this process's client certificate.
    pub async fn ensure(manager: &ResourceManager) -> Result<Self, Error> {
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", CA_SECRET);
        let stored = match manager.get(&key).await {
            Ok(r) => r,
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                let pair = generate_ca()?;
                let data = format!("{}{}", pair.cert_pem, pair.key_pem);
                let res = Resource::new(
                    CA_SECRET,
                    "",
                    Spec::GlobalSecret(SecretData::from_bytes(data.as_bytes())),
                );
                match manager.create_internal(res).await {
                    Ok(r) => {
                        tracing::info!("generated the envoy-admin CA (GlobalSecret {CA_SECRET})");
                        r
                    }
                    // Created meanwhile by another instance: use theirs.
                    Err(ManagerError::Store(store::Error::AlreadyExists(_))) => {
                        manager.get(&key).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = match &stored.spec {
            Spec::GlobalSecret(s) => s.bytes().unwrap_or_default(),
            _ => Vec::new(),
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::BadCa("not PEM text".into()))?;
        let (cert_pem, key_pem) = split_ca(&text)?;
        Self::from_ca(&cert_pem, &key_pem)
    }

    /// A PKI from the CA's PEM certificate and key (PKCS#8).
    pub fn from_ca(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| Error::BadCa(format!("cannot read the CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| Error::BadCa(format!("cannot read the CA certificate: {e}")))?;
        let client = issue(&issuer, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        Ok(Self {
            ca_pem: cert_pem.to_string(),
            issuer,
            client,
            servers: Mutex::new(HashMap::new()),
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (what the CP trusts and what admin listeners require).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CP's client certificate (DNS SAN `kuma-cp`), issued once per process.
    pub fn client(&self) -> &CertPair {
        &self.client
    }

    /// The server certificate of proxy `node_id` for `addresses` (IPs become IP SANs, names
    /// DNS SANs): the cached one while the addresses are the same, else a new one.
    pub fn server(&self, node_id: &str, addresses: &[String]) -> Result<Arc<ServerTls>, Error> {
        let lock = || self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = lock().get(node_id)
            && s.addresses == addresses
        {
            return Ok(s.clone());
        }
        // Issued outside the lock: proxies generated in parallel do not queue on it.
        let cert = issue(&self.issuer, addresses, ExtendedKeyUsagePurpose::ServerAuth)?;
        let tls = Arc::new(ServerTls {
            cert,
            ca_pem: self.ca_pem.clone(),
            addresses: addresses.to_vec(),
        });
        let mut servers = lock();
        // Another thread may have issued one for the same addresses meanwhile: keep that.
        match servers.get(node_id) {
            Some(s) if s.addresses == addresses => Ok(s.clone()),
            _ => {
                servers.insert(node_id.to_string(), tls.clone());
                Ok(tls)
            }
        }
    }

    /// The proxy's admin resources built from `tls` and `admin` by `build`, or the ones built
    /// last time from the same certificate and metadata: a proxy regenerated for any other
    /// reason does not re-encode its admin listener (inline certificate and key) each time.
    pub fn admin_resources<E>(
        &self,
        node_id: &str,
        tls: &Arc<ServerTls>,
        admin: &AdminNode,
        build: impl FnOnce() -> Result<Vec<Arc<kuma_xds::Resource>>, E>,
    ) -> Result<Vec<Arc<kuma_xds::Resource>>, E> {
        let lock = || self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = lock().get(node_id)
            && Arc::ptr_eq(&b.tls, tls)
            && b.admin == *admin
        {
            return Ok(b.resources.clone());
        }
        let resources = build()?;
        lock().insert(
            node_id.to_string(),
            AdminBuild {
                tls: tls.clone(),
                admin: admin.clone(),
                resources: resources.clone(),
            },
        );
        Ok(resources)
    }

    /// Forgets the server certificate (and admin resources) of a proxy that went away.
    pub fn forget(&self, node_id: &str) {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }
}

/// The certificate and key blocks of the stored CA (certificate first, as Kuma writes it;
/// either order is read).
fn split_ca(text: &str) -> Result<(String, String), Error> {
    let mut cert = None;
    let mut key = None;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| Error::BadCa("truncated PEM block".into()))?;
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| Error::BadCa(format!("PEM block {label} has no end")))?
            + end_marker.len();
        let pem = format!("{}\n", &block[..end]);
        if label == "CERTIFICATE" {
            cert.get_or_insert(pem);
        } else if label.ends_with("PRIVATE KEY") {
            key.get_or_insert(pem);
        }
        rest = &block[end..];
    }
    match (cert, key) {
        (Some(c), Some(k)) => Ok((c, k)),
        _ => Err(Error::BadCa(
            "expected a CERTIFICATE and a PRIVATE KEY PEM block".into(),
        )),
    }
}

/// A new self-signed CA, subject `O=Kuma, OU=Mesh, CN=Envoy Admin CA` (Kuma's).
pub fn generate_ca() -> Result<CertPair, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Kuma");
    dn.push(DnType::OrganizationalUnitName, "Mesh");
    dn.push(DnType::CommonName, "Envoy Admin CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + LIFETIME;
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf for `hosts` (none: the client certificate, DNS SAN `kuma-cp`), empty subject.
fn issue(
    issuer: &Issuer<'static, KeyPair>,
    hosts: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if usage == ExtendedKeyUsagePurpose::ClientAuth {
        params
            .subject_alt_names
            .push(SanType::DnsName(CLIENT_SAN.try_into()?));
    }
    for h in hosts {
        params.subject_alt_names.push(match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into()?),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let mut serial = uuid::Uuid::new_v4().into_bytes().to_vec();
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // non-zero
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + LIFETIME;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::store::memory::MemoryStore;
    use x509_parser::prelude::*;

    fn sans(pem: &str) -> Vec<String> {
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let ext = cert.subject_alternative_name().unwrap().unwrap();
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(ip) => format!(
                    "IP:{}",
                    ip.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn eku(pem: &str) -> (bool, bool) {
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let e = cert.extended_key_usage().unwrap().unwrap().value;
        (e.server_auth, e.client_auth)
    }

    #[tokio::test]
    async fn the_ca_is_created_once_in_kumas_layout_and_loaded_after() {
        let m = ResourceManager::new(std::sync::Arc::new(MemoryStore::new()), "zone-1");
        let first = Pki::ensure(&m).await.unwrap();
        let key = ResourceKey::new(ResourceType::GlobalSecret, "", CA_SECRET);
        let stored = m.get(&key).await.unwrap();
        let Spec::GlobalSecret(s) = &stored.spec else {
            panic!("not a GlobalSecret")
        };
        let text = String::from_utf8(s.bytes().unwrap()).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"), "{text}");
        assert_eq!(first.ca_pem(), split_ca(&text).unwrap().0);
        let second = Pki::ensure(&m).await.unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem(), "the stored CA is reused");
        // A new client certificate per process, from the same CA.
        assert_ne!(first.client(), second.client());
        assert_eq!(sans(&second.client().cert_pem), vec!["DNS:kuma-cp"]);
        assert_eq!(eku(&second.client().cert_pem), (false, true));
    }

    #[test]
    fn server_certs_carry_the_addresses_and_are_cached_until_they_change() {
        let ca = generate_ca().unwrap();
        let pki = Pki::from_ca(&ca.cert_pem, &ca.key_pem).unwrap();
        let addrs = vec!["127.0.1.2".to_string(), "10.0.0.1".to_string()];
        let a = pki.server("default.dp-1", &addrs).unwrap();
        assert_eq!(sans(&a.cert.cert_pem), vec!["IP:127.0.1.2", "IP:10.0.0.1"],);
        assert_eq!(eku(&a.cert.cert_pem), (true, false));
        assert_eq!(a.ca_pem, ca.cert_pem);
        let again = pki.server("default.dp-1", &addrs).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "same addresses: same certificate");
        let moved = pki
            .server("default.dp-1", &["127.0.1.3".to_string()])
            .unwrap();
        assert_ne!(moved.cert, a.cert);
        assert_eq!(sans(&moved.cert.cert_pem), vec!["IP:127.0.1.3"]);
        let named = pki.server("x", &["dp.example".to_string()]).unwrap();
        assert_eq!(sans(&named.cert.cert_pem), vec!["DNS:dp.example"]);
    }

    #[test]
    fn the_stored_ca_is_read_in_either_order_and_refused_when_incomplete() {
        let ca = generate_ca().unwrap();
        let swapped = format!("{}{}", ca.key_pem, ca.cert_pem);
        assert_eq!(
            split_ca(&swapped).unwrap(),
            (ca.cert_pem.clone(), ca.key_pem.clone())
        );
        assert!(split_ca(&ca.cert_pem).is_err());
        assert!(split_ca("garbage").is_err());
    }
}
