//! The control plane's own TLS identity for the DP server (and, unless configured otherwise,
//! the HTTPS API): a configured certificate, or one generated once into the work dir (a
//! self-signed CA plus a server certificate it signs, written as `kuma-cp.crt` = server
//! certificate followed by the CA, `kuma-cp.key`, and `ca.crt`). kuma-dp verifies the CP with
//! `--ca-cert-file <workDir>/kuma-cp.crt` (or ca.crt); kumactl with `--ca-cert-file ca.crt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// PEM material the DP server presents, and the CA that kuma-dp / Envoy should trust.
#[derive(Clone)]
pub struct Identity {
    pub cert_chain_pem: String,
    pub key_pem: String,
    /// The trust anchor to hand to Envoy in the bootstrap when kuma-dp sends none.
    pub ca_pem: String,
}

impl Identity {
    /// Loads the configured files, or `<work_dir>/kuma-cp.{crt,key}`, generating them when absent.
    pub fn load_or_generate(
        cert_file: &str,
        key_file: &str,
        work_dir: &Path,
        hostname: &str,
    ) -> anyhow::Result<Self> {
        if !cert_file.is_empty() || !key_file.is_empty() {
            return Self::from_files(
                (cert_file, "general.tlsCertFile"),
                (key_file, "general.tlsKeyFile"),
            );
        }
        let crt: PathBuf = work_dir.join("kuma-cp.crt");
        let key: PathBuf = work_dir.join("kuma-cp.key");
        let ca: PathBuf = work_dir.join("ca.crt");
        if crt.exists() && key.exists() {
            let cert_chain_pem = std::fs::read_to_string(&crt)
                .with_context(|| format!("reading {}", crt.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let ca_pem = match std::fs::read_to_string(&ca) {
                Ok(s) => s,
                Err(_) => last_pem_cert(&cert_chain_pem).unwrap_or_else(|| cert_chain_pem.clone()),
            };
            return Ok(Self {
                cert_chain_pem,
                key_pem,
                ca_pem,
            });
        }
        let id = Self::generate(hostname)?;
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating work dir {}", work_dir.display()))?;
        std::fs::write(&crt, &id.cert_chain_pem)
            .with_context(|| format!("writing {}", crt.display()))?;
        write_private(&key, &id.key_pem)?;
        std::fs::write(&ca, &id.ca_pem).with_context(|| format!("writing {}", ca.display()))?;
        tracing::info!(cert = %crt.display(), "generated a self-signed DP server certificate");
        Ok(id)
    }

    /// A configured certificate chain and key, each given with its config key (named in
    /// errors); both must be set. The chain and key are checked to parse and to match.
    pub fn from_files(cert: (&str, &str), key: (&str, &str)) -> anyhow::Result<Self> {
        let ((cert_file, cert_key), (key_file, key_key)) = (cert, key);
        if cert_file.is_empty() || key_file.is_empty() {
            bail!("{cert_key} and {key_key} must be set together");
        }
        let cert_chain_pem = std::fs::read_to_string(cert_file)
            .with_context(|| format!("reading {cert_key} {cert_file}"))?;
        let key_pem = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading {key_key} {key_file}"))?;
        // The last certificate of the chain is the best guess for the anchor.
        let ca_pem = last_pem_cert(&cert_chain_pem).unwrap_or_else(|| cert_chain_pem.clone());
        let id = Self {
            cert_chain_pem,
            key_pem,
            ca_pem,
        };
        id.server_config_alpn(&[])
            .with_context(|| format!("{cert_key} {cert_file} and {key_key} {key_file}"))?;
        Ok(id)
    }

    /// A fresh CA and server certificate for `localhost`, `127.0.0.1`, `::1` and `hostname`.
    pub fn generate(hostname: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kuma-cp CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names = vec!["localhost".to_string()];
        if !hostname.is_empty() && hostname != "localhost" {
            names.push(hostname.to_string());
        }
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kuma-cp");
        for ip in ["127.0.0.1", "::1"] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().context("static IP")?));
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            cert_chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
            key_pem: key.serialize_pem(),
            ca_pem: ca_cert.pem(),
        })
    }

    /// rustls server config offering h2 and http/1.1 (gRPC and `/bootstrap` on one port).
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        self.server_config_alpn(&[b"h2", b"http/1.1"])
    }

    /// rustls server config offering the ALPN protocols `alpn` (the HTTPS API: http/1.1).
    pub fn server_config_alpn(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        self.server_config_versions(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`Identity::server_config_alpn`] limited to `versions` of TLS.
    pub fn server_config_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("parsing the certificate chain")?;
        if certs.is_empty() {
            bail!("no PEM certificate found");
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .context("parsing the private key")?;
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("the certificate and the key do not match")?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

fn last_pem_cert(chain: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let start = chain.rfind(BEGIN)?;
    Some(chain[start..].to_string())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_generate("", "", dir.path(), "host-a").unwrap();
        let b = Identity::load_or_generate("", "", dir.path(), "host-a").unwrap();
        assert_eq!(a.cert_chain_pem, b.cert_chain_pem);
        assert!(a.server_config().is_ok());
        assert!(a.cert_chain_pem.ends_with(&a.ca_pem));
    }

    #[test]
    fn configured_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::generate("h").unwrap();
        let b = Identity::generate("h").unwrap();
        let write = |n: &str, s: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, s).unwrap();
            p.display().to_string()
        };
        let (crt, key, other_key) = (
            write("a.crt", &a.cert_chain_pem),
            write("a.key", &a.key_pem),
            write("b.key", &b.key_pem),
        );
        let ok = Identity::from_files((&crt, "x.tlsCertFile"), (&key, "x.tlsKeyFile")).unwrap();
        assert_eq!(ok.ca_pem, a.ca_pem);
        let err = |c: &str, k: &str| {
            format!(
                "{:#}",
                Identity::from_files((c, "x.tlsCertFile"), (k, "x.tlsKeyFile"))
                    .err()
                    .unwrap()
            )
        };
        let e = err(&crt, &other_key);
        assert!(
            e.contains("x.tlsCertFile") && e.contains("do not match"),
            "{e}"
        );
        let e = err(&crt, "/nonexistent.key");
        assert!(e.contains("x.tlsKeyFile"), "{e}");
        let e = err(&key, &key);
        assert!(
            e.contains("x.tlsCertFile") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = err("", &key);
        assert!(e.contains("set together"), "{e}");
    }
}
