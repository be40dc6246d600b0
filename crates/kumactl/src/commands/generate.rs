//! `kumactl generate dataplane-token|user-token|zone-token|signing-key|public-key`.
//!
//! Tokens are issued by the control plane (`POST /tokens/dataplane`, `POST /tokens/user`,
//! `POST /tokens/zone`; admins only) and printed as they come; a signing key is generated locally (RSA-2048,
//! PKCS#1 PEM, the format of the signing key secrets).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use serde_json::json;

use super::{Env, write_out};
use crate::cli::{
    DataplaneTokenArgs, GenerateCommand, SigningKeyFormat, UserTokenArgs, ZoneTokenArgs,
};

/// Size of generated signing keys, in bits (as Kuma's).
const SIGNING_KEY_BITS: usize = 2048;

pub async fn run(env: &mut Env<'_>, what: GenerateCommand) -> Result<()> {
    match what {
        GenerateCommand::DataplaneToken(args) => dataplane_token(env, args).await,
        GenerateCommand::UserToken(args) => user_token(env, args).await,
        GenerateCommand::ZoneToken(args) => zone_token(env, args).await,
        GenerateCommand::PublicKey { signing_key_path } => {
            let pem = std::fs::read(&signing_key_path)
                .with_context(|| format!("could not read a signing key file {signing_key_path}"))?;
            write_out(env.out, &public_key(&pem)?)
        }
        GenerateCommand::SigningKey(args) => {
            let pem = signing_key()?;
            write_out(env.out, &format_signing_key(&pem, args.format))
        }
    }
}

/// `--tag k=v1,v2` (repeatable; values of a repeated key add up).
pub fn parse_tags(raw: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in raw {
        let Some((key, values)) = t.split_once('=') else {
            bail!("--tag {t:?}: expected key=value[,value]");
        };
        let key = key.trim();
        let values: Vec<String> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        if key.is_empty() || values.is_empty() {
            bail!("--tag {t:?}: expected key=value[,value]");
        }
        let slot = tags.entry(key.to_string()).or_default();
        for v in values {
            if !slot.contains(&v) {
                slot.push(v);
            }
        }
    }
    Ok(tags)
}

async fn dataplane_token(env: &mut Env<'_>, args: DataplaneTokenArgs) -> Result<()> {
    let tags = parse_tags(&args.tags)?;
    let mut body = json!({"mesh": env.mesh(args.mesh.as_deref()), "name": args.name});
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    for (key, value) in [
        ("type", &args.proxy_type),
        ("workload", &args.workload),
        ("validFor", &args.valid_for),
    ] {
        if !value.is_empty() {
            body[key] = json!(value);
        }
    }
    let token = env
        .client()?
        .post_text(&["tokens", "dataplane"], &body)
        .await
        .context("could not generate the dataplane token")?;
    write_out(env.out, token.trim_end())
}

async fn user_token(env: &mut Env<'_>, args: UserTokenArgs) -> Result<()> {
    let mut body = json!({"name": args.name, "groups": args.groups});
    if !args.valid_for.is_empty() {
        body["validFor"] = json!(args.valid_for);
    }
    let token = env
        .client()?
        .post_text(&["tokens", "user"], &body)
        .await
        .context("could not generate the user token")?;
    write_out(env.out, token.trim_end())
}

/// Scopes of a zone token, as the control plane knows them; without `--scope`, all of them.
pub const ZONE_SCOPES: [&str; 3] = ["cp", "ingress", "egress"];

/// The `--scope` values to send: all scopes when none is given; unknown ones are refused
/// before anything is sent (Kuma's words).
pub fn zone_scopes(given: &[String]) -> Result<Vec<String>> {
    if given.is_empty() {
        return Ok(ZONE_SCOPES.map(String::from).to_vec());
    }
    let unknown: Vec<&str> = given
        .iter()
        .map(String::as_str)
        .filter(|s| !ZONE_SCOPES.contains(s))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "invalid --scope values: [{}] (supported scopes: [{}])",
            unknown.join(" "),
            ZONE_SCOPES.join(" ")
        );
    }
    Ok(given.to_vec())
}

/// A zone token signed offline (Kuma's `--signing-key-path` / `--kid`): the claims the
/// control plane would issue (`Zone`, `Scope`, `jti`, `iat` = `nbf` = now − 5s, `exp` = now +
/// validity + 5s), RS256 with header `kid`.
pub fn offline_zone_token(
    key_pem: &[u8],
    kid: &str,
    zone: &str,
    scopes: &[String],
    valid_for: std::time::Duration,
) -> Result<String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(key_pem).context("the signing key is not PEM text")?;
    let der = rsa::PrivateKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(text))
        .context("the signing key is not a PEM RSA private key")?
        .to_pkcs1_der()
        .context("could not encode the signing key")?;
    let key = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
    let now = chrono::Utc::now().timestamp() - 5;
    let valid = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = json!({
        "Zone": zone,
        "Scope": scopes,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(valid).saturating_add(10),
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &key).context("could not sign the token")
}

async fn zone_token(env: &mut Env<'_>, args: ZoneTokenArgs) -> Result<()> {
    let scopes = zone_scopes(&args.scopes)?;
    if let Some(path) = &args.signing_key_path {
        let Some(kid) = args.kid.as_deref() else {
            bail!("--kid is required when --signing-key-path is used");
        };
        let valid_for = kuma_core::duration::parse(&args.valid_for).map_err(|e| {
            anyhow::anyhow!(
                "invalid argument {:?} for \"--valid-for\" flag: {e}",
                args.valid_for
            )
        })?;
        let pem = std::fs::read(path).with_context(|| format!("could not read {path}"))?;
        let token = offline_zone_token(&pem, kid, &args.zone, &scopes, valid_for)?;
        return write_out(env.out, &token);
    }
    if args.kid.is_some() {
        // Kuma's words.
        bail!("--kid cannot be used when --signing-key-path is used");
    }
    let body = json!({
        "zone": args.zone,
        "scope": scopes,
        "validFor": args.valid_for,
    });
    let token = env
        .client()?
        .post_text(&["tokens", "zone"], &body)
        .await
        .context("failed to generate a zone token")?;
    write_out(env.out, token.trim_end())
}

/// The key as `--format` asks: the PEM text, or (Kuma's default) its standard base64 without a
/// trailing newline, ready for a Secret's `data` (`kumactl apply --var key=$(kumactl generate
/// signing-key)` with `data: {{ key }}`).
pub fn format_signing_key(pem: &str, format: SigningKeyFormat) -> String {
    use base64::Engine as _;
    match format {
        SigningKeyFormat::Pem => pem.to_string(),
        SigningKeyFormat::PemBase64 => base64::engine::general_purpose::STANDARD.encode(pem),
    }
}

/// The public half of a PEM private signing key, as PEM `RSA PUBLIC KEY` (PKCS#1), what
/// Kuma's `generate public-key` prints.
pub fn public_key(private_pem: &[u8]) -> Result<String> {
    use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
    let text = std::str::from_utf8(private_pem)
        .ok()
        .filter(|t| t.contains("PRIVATE KEY-----"))
        .ok_or_else(|| anyhow::anyhow!("provided file is not a PEM-encoded signing key"))?;
    let key = rsa::PrivateKey::from_pkcs1_pem(text)
        .or_else(|_| rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(text))
        .context("could not extract public key")?;
    key.to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .context("could not extract public key")
}

/// A new RSA-2048 private key, PKCS#1 PEM.
pub fn signing_key() -> Result<String> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, SIGNING_KEY_BITS)
        .context("could not generate an RSA key")?;
    Ok(key
        .to_pkcs1_pem(LineEnding::LF)
        .context("could not encode the RSA key")?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_formats() {
        assert_eq!(
            format_signing_key("TEST", SigningKeyFormat::PemBase64),
            "VEVTVA=="
        );
        assert_eq!(
            format_signing_key("TEST\n", SigningKeyFormat::Pem),
            "TEST\n"
        );
    }

    #[test]
    fn offline_zone_tokens_carry_the_claims_of_the_control_plane() {
        use base64::Engine as _;
        let pem = signing_key().unwrap();
        let scopes = ["cp".to_string()];
        let token = offline_zone_token(
            pem.as_bytes(),
            "3",
            "zone-1",
            &scopes,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let part = |i: usize| -> serde_json::Value {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(i).unwrap())
                .unwrap();
            serde_json::from_slice(&raw).unwrap()
        };
        assert_eq!(part(0)["alg"], "RS256");
        assert_eq!(part(0)["kid"], "3");
        let c = part(1);
        assert_eq!(c["Zone"], "zone-1");
        assert_eq!(c["Scope"], json!(["cp"]));
        assert_eq!(c["iat"], c["nbf"]);
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3600 + 10
        );
        // And it verifies with the key's public half.
        let public = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(
            &rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_pem(pem.as_str())
                .map(|k: rsa::PrivateKey| k.to_public_key())
                .unwrap(),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_nbf = true;
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_rsa_der(public.as_bytes()),
            &v,
        )
        .expect("verifies");
        assert!(
            offline_zone_token(
                b"not a key",
                "1",
                "z",
                &scopes,
                std::time::Duration::from_secs(1)
            )
            .is_err()
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(zone_scopes(&[]).unwrap(), ["cp", "ingress", "egress"]);
        let given = ["ingress".to_string()];
        assert_eq!(zone_scopes(&given).unwrap(), ["ingress"]);
        let bad = ["cp", "admin", "CP"].map(String::from);
        assert_eq!(
            zone_scopes(&bad).unwrap_err().to_string(),
            "invalid --scope values: [admin CP] (supported scopes: [cp ingress egress])"
        );
    }

    #[test]
    fn tags() {
        let raw = ["kuma.io/service=web,web-admin", "team=a", "team=b,a"].map(String::from);
        let tags = parse_tags(&raw).unwrap();
        assert_eq!(tags["kuma.io/service"], ["web", "web-admin"]);
        assert_eq!(tags["team"], ["a", "b"]);
        for bad in ["novalue", "=x", "k=", "k=,"] {
            assert!(parse_tags(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
