//! `token`: attacker-controlled tokens against `kuma_cp::tokens::Validator`, with real
//! RSA-2048 signing keys (generated once per process by the mesh set-up, as in production)
//! on the memory store. The first byte picks the mode, the rest is its input:
//!
//! - 0: the raw token, for a Dataplane (`validate_dataplane`) and as a user token;
//! - 1: `<header JSON> NUL <claims JSON>`, base64url-encoded and signed with a real key,
//!   so that claims parsing and matching are reached;
//! - 2: `<claims JSON>` under a valid header (`RS256`, `kid` 1), signed with a real key;
//!
//! (in modes 1 and 2 the mode byte's high bit picks the user key instead of the mesh's: one
//! RSA signature per run keeps the target fast; claims that mention `Zone` or `Scope` are
//! also signed with the zone token signing key and checked as a zone token);
//! - 3: a `POST /tokens/dataplane` body; a token issued for it must validate, or be refused
//!   only because it is for another proxy;
//! - 4: a `POST /tokens/user` body; a token issued for it must name its user.
//!
//! Invariants: no store error; a token that authenticates the Dataplane `default/web-1`
//! (tags `kuma.io/service: web`, `version: v1`) names no other proxy, is not expired and not
//! revoked; a zone token accepted for a zone CP (scope `cp`, identity from the token) names a
//! zone and lists `cp`, one accepted for an ingress of `zone-1` lists `ingress` and names
//! `zone-1` or no zone, neither expired nor revoked; error messages render.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use kuma_core::Resource;
use kuma_core::resource::{ResourceKey, ResourceType};
use kuma_core::store::memory::MemoryStore;
use kuma_cp::manager::ResourceManager;
use kuma_cp::mesh_setup::MeshSetup;
use kuma_cp::tokens::{
    self, DataplaneTokenRequest, Issuer, TokenError, UserTokenRequest, Validator, ZoneScope, keys,
};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The `jti` listed in the mesh's revocation list.
const REVOKED: &str = "revoked-jti";

struct Env {
    rt: Runtime,
    issuer: Issuer,
    validator: Validator,
    dataplane: Resource,
    dataplane_key: EncodingKey,
    user_key: EncodingKey,
    zone_key: EncodingKey,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let manager = Arc::new(
            ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
                .with_mesh_side_effects(Arc::new(MeshSetup)),
        );
        let dataplane = Resource::from_wire(
            json!({"type": "Dataplane", "mesh": "default", "name": "web-1",
                "labels": {"kuma.io/workload": "web"},
                "networking": {"address": "10.0.0.1", "inbound": [{"port": 8080,
                    "servicePort": 80, "tags": {"kuma.io/service": "web", "version": "v1"}}]}}),
            None,
        )
        .expect("a valid Dataplane");
        let revocations = Resource::from_wire(
            json!({"type": "Secret", "mesh": "default",
                "name": "dataplane-token-revocations-default",
                "data": base64::engine::general_purpose::STANDARD
                    .encode(format!("other,{REVOKED}"))}),
            None,
        )
        .expect("a valid Secret");
        let zone_revocations = Resource::from_wire(
            json!({"type": "GlobalSecret", "name": "zone-token-revocations",
                "data": base64::engine::general_purpose::STANDARD.encode(format!("other,{REVOKED}"))}),
            None,
        )
        .expect("a valid GlobalSecret");
        let (dataplane_key, user_key, zone_key) = rt.block_on(async {
            let mesh = Resource::from_wire(json!({"type": "Mesh", "name": "default"}), None)
                .expect("a valid Mesh");
            manager.upsert(mesh).await.expect("the mesh and its key");
            tokens::ensure_user_signing_key(&manager)
                .await
                .expect("the user key");
            tokens::ensure_zone_signing_key(&manager)
                .await
                .expect("the zone key");
            manager
                .upsert_internal(zone_revocations)
                .await
                .expect("the zone revocations");
            manager
                .upsert_internal(dataplane.clone())
                .await
                .expect("the dataplane");
            manager
                .upsert_internal(revocations)
                .await
                .expect("the revocations");
            let key = |rtype, mesh: &str, name: &str| {
                let key = ResourceKey::new(rtype, mesh, name);
                let manager = &manager;
                async move {
                    let secret = manager.get(&key).await.expect("a signing key");
                    keys::encoding_key(&keys::secret_bytes(&secret)).expect("an RSA key")
                }
            };
            (
                key(
                    ResourceType::Secret,
                    "default",
                    "dataplane-token-signing-key-default-1",
                )
                .await,
                key(ResourceType::GlobalSecret, "", "user-token-signing-key-1").await,
                key(ResourceType::GlobalSecret, "", "zone-token-signing-key-1").await,
            )
        });
        Env {
            rt,
            issuer: Issuer::new(manager.clone()),
            validator: Validator::new(manager, true),
            dataplane,
            dataplane_key,
            user_key,
            zone_key,
        }
    })
}

/// `<header>.<claims>.<signature>` from raw JSON parts, signed with `key`.
fn sign(header: &[u8], claims: &[u8], key: &EncodingKey) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::RS256).expect("signs");
    format!("{message}.{signature}")
}

/// The claims of a token, unverified. Lossy: the JWT library accepts bytes that are not
/// UTF-8 in claims it ignores, which a strict parse would refuse.
fn claims(token: &str) -> Value {
    let part = token.trim().split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_str(&String::from_utf8_lossy(&b)).ok())
        .unwrap_or(Value::Null)
}

fn check_refusal(e: &TokenError) {
    assert!(!e.is_transient(), "a store error on the memory store: {e}");
    let _ = e.to_string();
}

/// Validates `token` for `default/web-1` and as a user token; returns whether it
/// authenticated the Dataplane.
fn validate(env: &Env, token: &str) -> bool {
    let dataplane = env
        .rt
        .block_on(env.validator.validate_dataplane(token, &env.dataplane));
    match &dataplane {
        Ok(()) => {
            let c = claims(token);
            for (claim, own) in [("Name", "web-1"), ("Mesh", "default"), ("Workload", "web")] {
                let v = c[claim].as_str().unwrap_or_default();
                assert!(
                    v.is_empty() || v == own,
                    "a token for {claim} {v:?} authenticated {own}"
                );
            }
            assert_ne!(
                c["jti"].as_str(),
                Some(REVOKED),
                "a revoked token authenticated"
            );
            let exp = c["exp"].as_f64().expect("an exp claim");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64();
            assert!(exp >= now.floor(), "an expired token authenticated");
        }
        Err(e) => check_refusal(e),
    }
    match env.rt.block_on(env.validator.validate_user(token)) {
        Ok(user) => assert!(!user.name.is_empty(), "a user token for nobody"),
        Err(e) => check_refusal(&e),
    }
    validate_zone(env, token);
    dataplane.is_ok()
}

fn not_expired_nor_revoked(c: &Value, what: &str) {
    assert_ne!(c["jti"].as_str(), Some(REVOKED), "a revoked {what}");
    let exp = c["exp"].as_f64().expect("an exp claim");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(exp >= now.floor(), "an expired {what}");
}

fn scopes(c: &Value) -> Vec<&str> {
    c["Scope"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Checks `token` as a zone token: for a zone CP on global and for an ingress of `zone-1`.
fn validate_zone(env: &Env, token: &str) {
    let c = claims(token);
    match env
        .rt
        .block_on(env.validator.authorize_zone(token, ZoneScope::Cp, None))
    {
        Ok(got) => {
            assert!(!got.zone.is_empty(), "a zone CP token naming no zone");
            assert_eq!(c["Zone"].as_str(), Some(got.zone.as_str()));
            assert!(
                scopes(&c).contains(&"cp"),
                "a token without scope cp for a CP"
            );
            not_expired_nor_revoked(&c, "zone CP token");
        }
        Err(e) => {
            check_refusal(&e);
            assert_eq!(
                e.public_zone_reason(),
                "the zone token is not valid for this control plane"
            );
        }
    }
    match env.rt.block_on(
        env.validator
            .authorize_zone(token, ZoneScope::Ingress, Some("zone-1")),
    ) {
        Ok(got) => {
            assert!(
                got.zone.is_empty() || got.zone == "zone-1",
                "a token of zone {:?} for zone-1",
                got.zone
            );
            assert!(
                scopes(&c).contains(&"ingress"),
                "a token without scope ingress"
            );
            not_expired_nor_revoked(&c, "zone ingress token");
        }
        Err(e) => check_refusal(&e),
    }
}

/// Whether fuzzed claims look like a zone token's (then they are also signed with the zone key).
fn mentions_zone(claims: &[u8]) -> bool {
    claims.windows(4).any(|w| w == b"Zone") || claims.windows(5).any(|w| w == b"Scope")
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let env = env();
    let key = if mode & 0x80 == 0 {
        &env.dataplane_key
    } else {
        &env.user_key
    };
    match (mode & 0x7f) % 5 {
        0 => {
            validate(env, &String::from_utf8_lossy(rest));
        }
        1 => {
            let (header, claims) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            validate(env, &sign(header, claims, key));
            if mentions_zone(claims) {
                validate_zone(env, &sign(header, claims, &env.zone_key));
            }
        }
        2 => {
            let header = br#"{"alg":"RS256","kid":"1","typ":"JWT"}"#;
            validate(env, &sign(header, rest, key));
            if mentions_zone(rest) {
                validate_zone(env, &sign(header, rest, &env.zone_key));
            }
        }
        3 => {
            let Ok(req) = serde_json::from_slice::<DataplaneTokenRequest>(rest) else {
                return;
            };
            match env.rt.block_on(env.issuer.issue_dataplane(&req)) {
                Ok(token) => {
                    let result = env
                        .rt
                        .block_on(env.validator.validate_dataplane(&token, &env.dataplane));
                    if let Err(e) = result {
                        assert!(
                            e.is_mismatch(),
                            "a token issued for {req:?} is refused: {e}"
                        );
                    }
                }
                Err(e) => check_refusal(&e),
            }
        }
        _ => {
            let Ok(req) = serde_json::from_slice::<UserTokenRequest>(rest) else {
                return;
            };
            match env.rt.block_on(env.issuer.issue_user(&req)) {
                Ok(token) => {
                    let user = env
                        .rt
                        .block_on(env.validator.validate_user(&token))
                        .unwrap_or_else(|e| panic!("a token issued for {req:?} is refused: {e}"));
                    assert_eq!(user.name, req.name);
                }
                Err(e) => check_refusal(&e),
            }
        }
    }
}
