//! Signing keys: RSA-2048 private keys, PEM `RSA PRIVATE KEY` (PKCS#1), stored base64 in the
//! `data` of a secret named `<prefix>-<kid>`. The kid (serial number) is a positive integer; new
//! tokens are signed with the highest one, so a key is rotated by adding `kid + 1` and later
//! deleting the old one.
//!
//! [`Family`] names where the keys and the revocation list of one kind of token live.
//!
//! Zone tokens are signed on the global CP (or a standalone zone CP) only; a federated zone
//! receives the public half of each key as GlobalSecret `zone-token-signing-public-key-<kid>`
//! (PEM `RSA PUBLIC KEY`, PKCS#1, as Kuma's KDS mapper writes it; see [`public_key_pem`]) and
//! validates with it.

use jsonwebtoken::{DecodingKey, EncodingKey};
use kuma_core::resource::{ResourceKey, ResourceType, SecretData};
use kuma_core::store;
use kuma_core::{Resource, Spec};
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding,
};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};

use super::TokenError;
use crate::manager::{ManagerError, ResourceManager};

/// Size of generated signing keys, in bits.
pub const RSA_BITS: usize = 2048;

/// Generates a signing key: a fresh RSA-2048 private key as PKCS#1 PEM. CPU-heavy (hundreds of
/// milliseconds): call it off the async executor.
pub fn generate_pem() -> Result<String, TokenError> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
        .map_err(|e| TokenError::Key(format!("could not generate an RSA key: {e}")))?;
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| TokenError::Key(format!("could not encode the RSA key: {e}")))
}

/// Where the signing keys and the revocation list of one kind of token are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// Dataplane tokens of one mesh: mesh-scoped Secrets.
    Dataplane { mesh: String },
    /// User (API) tokens: GlobalSecrets.
    User,
    /// Zone tokens: GlobalSecrets (private keys on global, public keys on federated zones).
    Zone,
}

/// Name prefix of the GlobalSecrets holding the public half of zone token signing keys.
pub const ZONE_PUBLIC_KEY_PREFIX: &str = "zone-token-signing-public-key";

impl Family {
    /// The secret type holding the keys.
    pub fn rtype(&self) -> ResourceType {
        match self {
            Family::Dataplane { .. } => ResourceType::Secret,
            Family::User | Family::Zone => ResourceType::GlobalSecret,
        }
    }

    /// The mesh of the secrets (empty for global ones).
    pub fn mesh(&self) -> &str {
        match self {
            Family::Dataplane { mesh } => mesh,
            Family::User | Family::Zone => "",
        }
    }

    /// `dataplane-token-signing-key-<mesh>` / `user-token-signing-key` /
    /// `zone-token-signing-key`.
    pub fn key_prefix(&self) -> String {
        match self {
            Family::Dataplane { mesh } => format!("dataplane-token-signing-key-{mesh}"),
            Family::User => "user-token-signing-key".into(),
            Family::Zone => "zone-token-signing-key".into(),
        }
    }

    /// Name of the secret holding only the public half of the key `kid`, for the families
    /// that have one (zone tokens: `zone-token-signing-public-key-<kid>`).
    pub fn public_key_name(&self, kid: u32) -> Option<String> {
        match self {
            Family::Zone => Some(format!("{ZONE_PUBLIC_KEY_PREFIX}-{kid}")),
            Family::Dataplane { .. } | Family::User => None,
        }
    }

    /// Name of the secret holding the key of serial number `kid`.
    pub fn key_name(&self, kid: u32) -> String {
        format!("{}-{kid}", self.key_prefix())
    }

    /// `dataplane-token-revocations-<mesh>` / `user-token-revocations` /
    /// `zone-token-revocations`.
    pub fn revocations_name(&self) -> String {
        match self {
            Family::Dataplane { mesh } => format!("dataplane-token-revocations-{mesh}"),
            Family::User => "user-token-revocations".into(),
            Family::Zone => "zone-token-revocations".into(),
        }
    }

    /// The kid of a key secret of this family, if `name` is one.
    pub fn kid_of(&self, name: &str) -> Option<u32> {
        let rest = name.strip_prefix(&self.key_prefix())?.strip_prefix('-')?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest.parse().ok().filter(|kid| *kid > 0)
    }

    pub(crate) fn key(&self, name: impl Into<String>) -> ResourceKey {
        ResourceKey::new(self.rtype(), self.mesh(), name)
    }

    /// A secret of this family holding `bytes`.
    pub(crate) fn secret(&self, name: impl Into<String>, bytes: &[u8]) -> Resource {
        let data = SecretData::from_bytes(bytes);
        let spec = match self {
            Family::Dataplane { .. } => Spec::Secret(data),
            Family::User | Family::Zone => Spec::GlobalSecret(data),
        };
        Resource::new(name, self.mesh(), spec)
    }
}

/// The decoded bytes of a secret (empty for anything that is not a secret).
pub fn secret_bytes(res: &Resource) -> Vec<u8> {
    match &res.spec {
        Spec::Secret(s) | Spec::GlobalSecret(s) => s.bytes().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads a secret of the family; `None` when it does not exist.
pub(crate) async fn get(
    manager: &ResourceManager,
    family: &Family,
    name: &str,
) -> Result<Option<Resource>, TokenError> {
    match manager.get(&family.key(name)).await {
        Ok(r) => Ok(Some(r)),
        Err(ManagerError::Store(store::Error::NotFound(_))) => Ok(None),
        Err(e) => Err(TokenError::Store(e.to_string())),
    }
}

/// The signing key with the highest kid, with that kid.
pub(crate) async fn latest(
    manager: &ResourceManager,
    family: &Family,
) -> Result<Option<(u32, Resource)>, TokenError> {
    let mesh = match family {
        Family::Dataplane { mesh } => Some(mesh.as_str()),
        Family::User | Family::Zone => None,
    };
    let secrets = manager
        .list(family.rtype(), mesh)
        .await
        .map_err(|e| TokenError::Store(e.to_string()))?;
    Ok(secrets
        .into_iter()
        .filter_map(|s| family.kid_of(&s.meta.name).map(|kid| (kid, s)))
        .max_by_key(|(kid, _)| *kid))
}

/// Creates the family's first signing key (kid 1) unless it has one. Returns whether a key
/// was created. A key created concurrently by someone else counts as existing.
pub(crate) async fn ensure(manager: &ResourceManager, family: &Family) -> Result<bool, TokenError> {
    if latest(manager, family).await?.is_some() {
        return Ok(false);
    }
    let pem = tokio::task::spawn_blocking(generate_pem)
        .await
        .map_err(|e| TokenError::Key(format!("key generation task failed: {e}")))??;
    let secret = family.secret(family.key_name(1), pem.as_bytes());
    match manager.create_internal(secret).await {
        Ok(_) => Ok(true),
        Err(ManagerError::Store(store::Error::AlreadyExists(_))) => Ok(false),
        Err(e) => Err(TokenError::Store(e.to_string())),
    }
}

/// Parses a signing key: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`) PEM.
fn parse_private(pem: &[u8]) -> Result<rsa::PrivateKey, TokenError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| TokenError::Key("the signing key is not PEM text".into()))?;
    rsa::PrivateKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(text))
        .map_err(|e| TokenError::Key(format!("the signing key is not an RSA private key: {e}")))
}

/// The key that signs tokens, from the PEM stored in a signing key secret.
pub fn encoding_key(pem: &[u8]) -> Result<EncodingKey, TokenError> {
    let der = parse_private(pem)?
        .to_pkcs1_der()
        .map_err(|e| TokenError::Key(format!("could not encode the signing key: {e}")))?;
    Ok(EncodingKey::from_rsa_der(der.as_bytes()))
}

/// Whether PEM text holds a public key (`RSA PUBLIC KEY` or `PUBLIC KEY`) rather than a
/// private one.
fn is_public_pem(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with("-----BEGIN RSA PUBLIC KEY-----")
        || text.starts_with("-----BEGIN PUBLIC KEY-----")
}

/// The public key of PEM text: the public half of a private key, or a public key, PKCS#1
/// (`RSA PUBLIC KEY`) or SPKI (`PUBLIC KEY`).
fn parse_public(pem: &[u8]) -> Result<rsa::PublicKey, TokenError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| TokenError::Key("the signing key is not PEM text".into()))?;
    if !is_public_pem(text) {
        return Ok(parse_private(pem)?.to_public_key());
    }
    rsa::PublicKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::PublicKey::from_public_key_pem(text))
        .map_err(|e| {
            TokenError::Key(format!(
                "the public signing key is not an RSA public key: {e}"
            ))
        })
}

/// The public key that verifies tokens, from the PEM stored in a signing key secret (a
/// private key) or in a public key secret.
pub(crate) fn decoding_key(pem: &[u8]) -> Result<DecodingKey, TokenError> {
    let der = parse_public(pem)?
        .to_pkcs1_der()
        .map_err(|e| TokenError::Key(format!("could not encode the public key: {e}")))?;
    Ok(DecodingKey::from_rsa_der(der.as_bytes()))
}

/// The public half of a signing key as PEM `RSA PUBLIC KEY` (PKCS#1), what Kuma stores in
/// `zone-token-signing-public-key-<kid>` for federated zones: the KDS mapping of
/// `zone-token-signing-key-<kid>` (data = [`secret_bytes`] of it) calls this.
pub fn public_key_pem(private_pem: &[u8]) -> Result<String, TokenError> {
    parse_private(private_pem)?
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| TokenError::Key(format!("could not encode the public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kids() {
        let dp = Family::Dataplane {
            mesh: "default".into(),
        };
        assert_eq!(dp.key_name(1), "dataplane-token-signing-key-default-1");
        assert_eq!(dp.revocations_name(), "dataplane-token-revocations-default");
        assert_eq!(
            dp.kid_of("dataplane-token-signing-key-default-12"),
            Some(12)
        );
        assert_eq!(dp.kid_of("dataplane-token-signing-key-default"), None);
        assert_eq!(dp.kid_of("dataplane-token-signing-key-default-x"), None);
        assert_eq!(dp.kid_of("dataplane-token-signing-key-default-0"), None);
        assert_eq!(dp.kid_of("dataplane-token-signing-key-default-1-2"), None);
        assert_eq!(Family::User.key_name(3), "user-token-signing-key-3");
        assert_eq!(Family::User.revocations_name(), "user-token-revocations");
        assert_eq!(Family::User.rtype(), ResourceType::GlobalSecret);
        assert_eq!(Family::Zone.key_name(2), "zone-token-signing-key-2");
        assert_eq!(Family::Zone.revocations_name(), "zone-token-revocations");
        assert_eq!(Family::Zone.rtype(), ResourceType::GlobalSecret);
        assert_eq!(
            Family::Zone.public_key_name(2).as_deref(),
            Some("zone-token-signing-public-key-2")
        );
        assert_eq!(Family::User.public_key_name(2), None);
        assert_eq!(Family::Zone.kid_of("zone-token-signing-key-7"), Some(7));
        // The public keys are not signing keys: issuing never picks them.
        assert_eq!(Family::Zone.kid_of("zone-token-signing-public-key-7"), None);
    }

    #[test]
    fn public_keys_verify_like_their_private_keys() {
        let pem = generate_pem().expect("key");
        let public = public_key_pem(pem.as_bytes()).expect("public");
        assert!(
            public.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"),
            "{public}"
        );
        let from_private = parse_public(pem.as_bytes()).expect("private");
        let from_public = parse_public(public.as_bytes()).expect("public");
        assert_eq!(from_private, from_public);
        // SPKI (`PUBLIC KEY`) as well.
        let spki = rsa::pkcs8::EncodePublicKey::to_public_key_pem(&from_private, LineEnding::LF)
            .expect("spki");
        assert_eq!(parse_public(spki.as_bytes()).expect("spki"), from_private);
        decoding_key(public.as_bytes()).expect("decoding key");
        // A public key cannot sign.
        assert!(matches!(
            encoding_key(public.as_bytes()),
            Err(TokenError::Key(_))
        ));
        assert!(matches!(
            parse_public(b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"),
            Err(TokenError::Key(_))
        ));
    }

    #[test]
    fn generated_key_is_pkcs1_rsa_2048() {
        let pem = generate_pem().expect("key");
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        let key = parse_private(pem.as_bytes()).expect("parses");
        assert_eq!(rsa::traits::PublicKeyParts::size(&key), RSA_BITS / 8);
        encoding_key(pem.as_bytes()).expect("encoding key");
        decoding_key(pem.as_bytes()).expect("decoding key");
        assert!(matches!(
            encoding_key(b"not a key"),
            Err(TokenError::Key(_))
        ));
    }
}
