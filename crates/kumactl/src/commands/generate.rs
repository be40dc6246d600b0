//! `kumactl generate dataplane-token|user-token|zone-token|signing-key`.
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

async fn zone_token(env: &mut Env<'_>, args: ZoneTokenArgs) -> Result<()> {
    let body = json!({
        "zone": args.zone,
        "scope": zone_scopes(&args.scopes)?,
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
