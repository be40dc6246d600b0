//! Signing keys: RSA-2048 private keys, PEM `RSA PRIVATE KEY` (PKCS#1), stored base64 in the
//! `data` of a secret named `<prefix>-<kid>`. The kid (serial number) is a positive integer; new
//! tokens are signed with the highest one, so a key is rotated by adding `kid + 1` and later
//! deleting the old one.
//!
//! [`Family`] names where the keys and the revocation list of one kind of token live.

use jsonwebtoken::{DecodingKey, EncodingKey};
use kuma_core::resource::{ResourceKey, ResourceType, SecretData};
use kuma_core::store;
use kuma_core::{Resource, Spec};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use rsa::pkcs8::DecodePrivateKey;

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
}

impl Family {
    /// The secret type holding the keys.
    pub fn rtype(&self) -> ResourceType {
        match self {
            Family::Dataplane { .. } => ResourceType::Secret,
            Family::User => ResourceType::GlobalSecret,
        }
    }

    /// The mesh of the secrets (empty for global ones).
    pub fn mesh(&self) -> &str {
        match self {
            Family::Dataplane { mesh } => mesh,
            Family::User => "",
        }
    }

    /// `dataplane-token-signing-key-<mesh>` / `user-token-signing-key`.
    pub fn key_prefix(&self) -> String {
        match self {
            Family::Dataplane { mesh } => format!("dataplane-token-signing-key-{mesh}"),
            Family::User => "user-token-signing-key".into(),
        }
    }

    /// Name of the secret holding the key of serial number `kid`.
    pub fn key_name(&self, kid: u32) -> String {
        format!("{}-{kid}", self.key_prefix())
    }

    /// `dataplane-token-revocations-<mesh>` / `user-token-revocations`.
    pub fn revocations_name(&self) -> String {
        match self {
            Family::Dataplane { mesh } => format!("dataplane-token-revocations-{mesh}"),
            Family::User => "user-token-revocations".into(),
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
            Family::User => Spec::GlobalSecret(data),
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
        Family::User => None,
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

/// The public key that verifies tokens, from the PEM stored in a signing key secret.
pub(crate) fn decoding_key(pem: &[u8]) -> Result<DecodingKey, TokenError> {
    let der = parse_private(pem)?
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| TokenError::Key(format!("could not encode the public key: {e}")))?;
    Ok(DecodingKey::from_rsa_der(der.as_bytes()))
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
