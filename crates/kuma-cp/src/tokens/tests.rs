//! Issuing and validating tokens on the memory store: the claims and header of issued tokens,
//! every refusal with its reason, key rotation and revocation, and the ADS stream helpers.

use std::sync::Arc;

use base64::Engine;
use kuma_core::store::memory::MemoryStore;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;

struct Env {
    manager: Arc<ResourceManager>,
    issuer: Issuer,
    validator: Validator,
}

/// A manager with meshes `default` (and its signing key) and the user signing key.
async fn env() -> Env {
    let manager = Arc::new(
        ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
            .with_mesh_side_effects(Arc::new(crate::mesh_setup::MeshSetup)),
    );
    manager
        .upsert(Resource::from_wire(json!({"type": "Mesh", "name": "default"}), None).unwrap())
        .await
        .expect("mesh");
    ensure_user_signing_key(&manager).await.expect("user key");
    Env {
        issuer: Issuer::new(manager.clone()),
        validator: Validator::new(manager.clone(), true),
        manager,
    }
}

fn dp(mesh: &str, name: &str, services: &[&str]) -> Resource {
    let inbound: Vec<Value> = services
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"port": 8000 + i, "servicePort": 9000 + i, "tags": {"kuma.io/service": s}}))
        .collect();
    Resource::from_wire(
        json!({"type": "Dataplane", "mesh": mesh, "name": name,
            "networking": {"address": "10.0.0.1", "inbound": inbound}}),
        None,
    )
    .unwrap()
}

fn dp_req(mesh: &str, name: &str) -> DataplaneTokenRequest {
    DataplaneTokenRequest {
        mesh: mesh.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn with_tags(mut req: DataplaneTokenRequest, tag: &str, values: &[&str]) -> DataplaneTokenRequest {
    req.tags
        .get_or_insert_with(Default::default)
        .insert(tag.into(), values.iter().map(|v| v.to_string()).collect());
    req
}

/// Header and claims of a token, unverified.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut part = || {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(it.next().expect("part"))
            .expect("base64url");
        serde_json::from_slice::<Value>(&raw).expect("json")
    };
    (part(), part())
}

/// Signs arbitrary dataplane claims with the current key of `mesh`.
async fn sign_raw(e: &Env, mesh: &str, claims: &DataplaneClaims) -> String {
    e.issuer
        .sign(
            &Family::Dataplane {
                mesh: mesh.to_string(),
            },
            claims,
        )
        .await
        .expect("sign")
}

#[tokio::test]
async fn dataplane_token_format() {
    let e = env().await;
    let req = DataplaneTokenRequest {
        valid_for: "24h".into(),
        workload: "w".into(),
        proxy_type: "dataplane".into(),
        ..with_tags(dp_req("default", "web-1"), "kuma.io/service", &["web"])
    };
    let token = e.issuer.issue_dataplane(&req).await.expect("issue");
    let (header, claims) = parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "1");
    assert_eq!(claims["Name"], "web-1");
    assert_eq!(claims["Mesh"], "default");
    assert_eq!(claims["Tags"], json!({"kuma.io/service": ["web"]}));
    assert_eq!(claims["Type"], "dataplane");
    assert_eq!(claims["Workload"], "w");
    assert!(
        uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok(),
        "{claims}"
    );
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(iat, nbf);
    assert_eq!(exp - iat, 24 * 3600 + 10);
    let now = chrono::Utc::now().timestamp();
    assert!((now - 7..=now - 3).contains(&iat), "iat {iat}, now {now}");
    // Default validity: 10 years.
    let token = e
        .issuer
        .issue_dataplane(&dp_req("default", ""))
        .await
        .expect("issue");
    let (_, claims) = parts(&token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        10 * 365 * 24 * 3600 + 10
    );
}

#[tokio::test]
async fn issue_requests_are_validated() {
    let e = env().await;
    let err = e
        .issuer
        .issue_dataplane(&DataplaneTokenRequest {
            proxy_type: "gateway".into(),
            valid_for: "1 day".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let TokenError::InvalidRequest(v) = err else {
        panic!("{err}")
    };
    let fields: Vec<&str> = v.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["mesh", "type", "validFor"]);
    assert!(matches!(
        e.issuer.issue_dataplane(&dp_req("nope", "x")).await,
        Err(TokenError::MeshNotFound(m)) if m == "nope"
    ));
    let err = e
        .issuer
        .issue_user(&UserTokenRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn dataplane_token_checks() {
    let e = env().await;
    let web = dp("default", "web-1", &["web"]);
    let v = &e.validator;
    let issue = |req: DataplaneTokenRequest| {
        let issuer = &e.issuer;
        async move { issuer.issue_dataplane(&req).await.expect("issue") }
    };

    // Bound to the name, to the mesh only, to the service.
    for req in [
        dp_req("default", "web-1"),
        dp_req("default", ""),
        with_tags(dp_req("default", ""), "kuma.io/service", &["web", "other"]),
    ] {
        v.validate_dataplane(&issue(req).await, &web)
            .await
            .expect("accepted");
    }
    let mismatch = |r: Result<(), TokenError>, needle: &str| {
        let err = r.unwrap_err();
        assert!(err.is_mismatch(), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    mismatch(
        v.validate_dataplane(&issue(dp_req("default", "web-2")).await, &web)
            .await,
        "proxy name from requestor: web-1 is different than in token: web-2",
    );
    mismatch(
        v.validate_dataplane(
            &issue(with_tags(
                dp_req("default", ""),
                "kuma.io/service",
                &["backend"],
            ))
            .await,
            &web,
        )
        .await,
        "value \"web\" which is not allowed",
    );
    mismatch(
        v.validate_dataplane(
            &issue(with_tags(dp_req("default", ""), "team", &["a"])).await,
            &web,
        )
        .await,
        "dataplane has no tag \"team\" required by the token",
    );
    // Every value of the tag on the proxy must be allowed.
    let two = dp("default", "web-1", &["web", "web-admin"]);
    let only_web = issue(with_tags(
        dp_req("default", ""),
        "kuma.io/service",
        &["web"],
    ))
    .await;
    mismatch(v.validate_dataplane(&only_web, &two).await, "\"web-admin\"");
    let both = issue(with_tags(
        dp_req("default", ""),
        "kuma.io/service",
        &["web", "web-admin"],
    ))
    .await;
    v.validate_dataplane(&both, &two)
        .await
        .expect("both allowed");
    // Workload label.
    let bound = issue(DataplaneTokenRequest {
        workload: "shop".into(),
        ..dp_req("default", "")
    })
    .await;
    mismatch(v.validate_dataplane(&bound, &web).await, "workload");
    let mut labelled = web.clone();
    labelled
        .meta
        .labels
        .insert(WORKLOAD_LABEL.into(), "shop".into());
    v.validate_dataplane(&bound, &labelled)
        .await
        .expect("workload matches");
    // A zone proxy token is not a dataplane token.
    let ingress = issue(DataplaneTokenRequest {
        proxy_type: "ingress".into(),
        ..dp_req("default", "")
    })
    .await;
    mismatch(v.validate_dataplane(&ingress, &web).await, "type ingress");
}

#[tokio::test]
async fn refused_tokens_name_the_reason() {
    let e = env().await;
    e.manager
        .upsert(Resource::from_wire(json!({"type": "Mesh", "name": "other"}), None).unwrap())
        .await
        .expect("mesh other");
    let web = dp("default", "web-1", &["web"]);
    let v = &e.validator;

    // Signed by another mesh's key (same kid).
    let foreign = e
        .issuer
        .issue_dataplane(&dp_req("other", ""))
        .await
        .unwrap();
    let err = v.validate_dataplane(&foreign, &web).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::BadSignature(k) if k == "dataplane-token-signing-key-default-1"),
        "{err}"
    );
    assert!(!err.is_mismatch());

    // A signature that is not canonical base64url (trailing bits set) is malformed in every
    // mesh, with or without a signing key: the refusal does not depend on the mesh.
    let good = e
        .issuer
        .issue_dataplane(&dp_req("default", "web-1"))
        .await
        .unwrap();
    let (head, _) = good.rsplit_once('.').unwrap();
    let bad = format!("{head}.{}B", "A".repeat(341));
    let here = v.validate_dataplane(&bad, &web).await.unwrap_err();
    let there = v
        .validate_dataplane(&bad, &dp("nope", "web-1", &["web"]))
        .await
        .unwrap_err();
    assert!(here.to_string().contains("not base64url"), "{here}");
    assert_eq!(here.public_reason("M"), there.public_reason("M"));

    // Garbage, wrong algorithm, missing kid.
    for (token, want) in [
        ("not-a-jwt", "not a valid JWT"),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjEifQ.e30.c2ln",
            "only RS256",
        ),
        (
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln",
            "no valid kid",
        ),
    ] {
        let err = v.validate_dataplane(token, &web).await.unwrap_err();
        assert!(err.to_string().contains(want), "{token}: {err}");
    }

    // Expired and not yet valid (signed with the right key).
    let now = chrono::Utc::now().timestamp();
    let claims = DataplaneClaims {
        mesh: "default".into(),
        jti: "x".into(),
        iat: now - 100,
        nbf: now - 100,
        exp: now - 10,
        ..Default::default()
    };
    let expired = sign_raw(&e, "default", &claims).await;
    let err = v.validate_dataplane(&expired, &web).await.unwrap_err();
    assert!(matches!(err, TokenError::Expired(_)), "{err}");
    assert!(
        err.to_string().starts_with("the token expired at 20"),
        "{err}"
    );
    let future = sign_raw(
        &e,
        "default",
        &DataplaneClaims {
            nbf: now + 100,
            exp: now + 1000,
            ..claims
        },
    )
    .await;
    let err = v.validate_dataplane(&future, &web).await.unwrap_err();
    assert!(matches!(err, TokenError::NotYetValid(_)), "{err}");

    // A deleted key: the kid names a secret that is gone.
    let token = e
        .issuer
        .issue_dataplane(&dp_req("other", ""))
        .await
        .unwrap();
    let key = Family::Dataplane {
        mesh: "other".into(),
    }
    .key("dataplane-token-signing-key-other-1");
    e.manager.delete(&key).await.expect("delete key");
    let err = v
        .validate_dataplane(&token, &dp("other", "x", &["a"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "Secret of name \"dataplane-token-signing-key-other-1\" in mesh \"other\" is not found"
        ),
        "{err}"
    );
    // No key at all: nothing can be issued.
    let err = e
        .issuer
        .issue_dataplane(&dp_req("other", ""))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NoSigningKey { .. }), "{err}");
}

#[tokio::test]
async fn revocation_and_rotation() {
    let e = env().await;
    let web = dp("default", "web-1", &["web"]);
    let t1 = e
        .issuer
        .issue_dataplane(&dp_req("default", "web-1"))
        .await
        .unwrap();
    let t2 = e
        .issuer
        .issue_dataplane(&dp_req("default", "web-1"))
        .await
        .unwrap();
    let jti = parts(&t1).1["jti"].as_str().unwrap().to_string();
    let list = Family::Dataplane {
        mesh: "default".into(),
    }
    .secret(
        "dataplane-token-revocations-default",
        format!("other-id,{jti}\n").as_bytes(),
    );
    e.manager.upsert(list).await.expect("revocations");
    let err = e.validator.validate_dataplane(&t1, &web).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::Revoked { jti: j, .. } if *j == jti),
        "{err}"
    );
    e.validator
        .validate_dataplane(&t2, &web)
        .await
        .expect("t2 not revoked");

    // Rotation: a key with a higher kid signs new tokens; old ones stay valid while their key
    // exists.
    let family = Family::Dataplane {
        mesh: "default".into(),
    };
    let pem = keys::generate_pem().unwrap();
    e.manager
        .upsert(family.secret(family.key_name(2), pem.as_bytes()))
        .await
        .expect("kid 2");
    let t3 = e
        .issuer
        .issue_dataplane(&dp_req("default", "web-1"))
        .await
        .unwrap();
    assert_eq!(parts(&t3).0["kid"], "2");
    e.validator.validate_dataplane(&t3, &web).await.expect("t3");
    e.validator.validate_dataplane(&t2, &web).await.expect("t2");
}

#[tokio::test]
async fn user_tokens() {
    let e = env().await;
    let token = e
        .issuer
        .issue_user(&UserTokenRequest {
            name: "alice".into(),
            groups: Some(vec!["team-a".into()]),
            valid_for: "1h".into(),
        })
        .await
        .unwrap();
    let (header, claims) = parts(&token);
    assert_eq!(header["kid"], "1");
    assert_eq!(claims["Name"], "alice");
    assert_eq!(claims["Groups"], json!(["team-a"]));
    let user = e.validator.validate_user(&token).await.expect("valid");
    assert_eq!(
        user,
        User {
            name: "alice".into(),
            groups: vec!["team-a".into()]
        }
    );
    assert!(!user.is_admin());
    assert_eq!(
        user.authenticated().groups,
        ["team-a", "mesh-system:authenticated"]
    );
    // A dataplane token is not a user token (another key signs it).
    let dp_token = e
        .issuer
        .issue_dataplane(&dp_req("default", ""))
        .await
        .unwrap();
    assert!(matches!(
        e.validator.validate_user(&dp_token).await,
        Err(TokenError::BadSignature(_))
    ));
    // The admin token is created once, for mesh-system:admin.
    assert!(e.issuer.ensure_admin_token().await.unwrap());
    assert!(!e.issuer.ensure_admin_token().await.unwrap());
    let secret = e
        .manager
        .get(&Family::User.key(ADMIN_TOKEN_SECRET))
        .await
        .unwrap();
    let admin_token = String::from_utf8(keys::secret_bytes(&secret)).unwrap();
    let admin = e.validator.validate_user(&admin_token).await.unwrap();
    assert_eq!(admin, User::admin());
    assert!(admin.is_admin());
    // Revoked user tokens.
    let jti = parts(&token).1["jti"].as_str().unwrap().to_string();
    e.manager
        .upsert(Family::User.secret("user-token-revocations", jti.as_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        e.validator.validate_user(&token).await,
        Err(TokenError::Revoked { .. })
    ));
}

fn metadata(values: &[&str]) -> MetadataMap {
    let mut m = MetadataMap::new();
    for v in values {
        m.append(AUTHORIZATION_METADATA, MetadataValue::try_from(*v).unwrap());
    }
    m
}

#[tokio::test]
async fn stream_authentication() {
    let e = env().await;
    let web = dp("default", "web-1", &["web"]);
    let token = e
        .issuer
        .issue_dataplane(&with_tags(
            dp_req("default", ""),
            "kuma.io/service",
            &["web"],
        ))
        .await
        .unwrap();
    authenticate_stream(&e.validator, &metadata(&[&token]), &web)
        .await
        .expect("accepted");
    for (md, code, needle) in [
        (
            metadata(&[]),
            Code::Unauthenticated,
            "Dataplane Token is required",
        ),
        (
            metadata(&[&token, &token]),
            Code::Unauthenticated,
            "exactly one",
        ),
        (
            metadata(&["garbage"]),
            Code::Unauthenticated,
            "not a valid JWT",
        ),
        (
            metadata(&[&format!("Bearer {token}")]),
            Code::Unauthenticated,
            "not a valid JWT",
        ),
    ] {
        let st = authenticate_stream(&e.validator, &md, &web)
            .await
            .unwrap_err();
        assert_eq!(st.code(), code, "{st:?}");
        assert!(st.message().contains(needle), "{st:?}");
    }
    let backend = dp("default", "backend-1", &["backend"]);
    let st = authenticate_stream(&e.validator, &metadata(&[&token]), &backend)
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");

    // Takeover: the token accepted for the new resource must also accept the stored one.
    authorize_takeover(&e.validator, &token, &web)
        .await
        .expect("same service may replace");
    let st = authorize_takeover(&e.validator, &token, &backend)
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(
        st.message().contains("already exists") && st.message().contains("backend-1"),
        "{st:?}"
    );

    // Both in one call, as the ADS registration uses it.
    authorize_registration(&e.validator, &metadata(&[&token]), &web, Some(&web))
        .await
        .expect("same service");
    let st = authorize_registration(&e.validator, &metadata(&[&token]), &web, Some(&backend))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    let st = authorize_registration(&e.validator, &metadata(&[]), &web, None)
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);

    // Authentication off: everything passes.
    let open = Validator::new(e.manager.clone(), false);
    authenticate_stream(&open, &metadata(&[]), &backend)
        .await
        .expect("no auth");
    authorize_takeover(&open, "garbage", &backend)
        .await
        .expect("no auth");
    authorize_registration(&open, &metadata(&[]), &web, Some(&backend))
        .await
        .expect("no auth");
}

/// An [`Env`] with the zone token signing key as well.
async fn zone_env() -> Env {
    let e = env().await;
    assert!(ensure_zone_signing_key(&e.manager).await.expect("zone key"));
    assert!(!ensure_zone_signing_key(&e.manager).await.expect("again"));
    e
}

fn zone_req(zone: &str, scope: &[&str]) -> ZoneTokenRequest {
    ZoneTokenRequest {
        zone: zone.into(),
        scope: Some(scope.iter().map(|s| s.to_string()).collect()),
        valid_for: "24h".into(),
    }
}

fn scopes(list: &[ZoneScope]) -> BTreeSet<ZoneScope> {
    list.iter().copied().collect()
}

#[tokio::test]
async fn zone_token_format() {
    let e = zone_env().await;
    let token = e
        .issuer
        .issue_zone(&zone_req("zone-2", &["cp", "ingress", "cp"]))
        .await
        .expect("issue");
    let (header, claims) = parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "1");
    assert_eq!(claims["Zone"], "zone-2");
    assert_eq!(claims["Scope"], json!(["cp", "ingress"]));
    assert!(
        uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok(),
        "{claims}"
    );
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 24 * 3600 + 10);
    let got = e.validator.validate_zone(&token).await.expect("valid");
    assert_eq!(
        got,
        ZoneClaims {
            zone: "zone-2".into(),
            scopes: scopes(&[ZoneScope::Cp, ZoneScope::Ingress]),
        }
    );
    // The signing key is Kuma's GlobalSecret.
    let key = e
        .manager
        .get(&Family::Zone.key("zone-token-signing-key-1"))
        .await
        .expect("zone-token-signing-key-1");
    assert_eq!(key.rtype(), ResourceType::GlobalSecret);
    assert!(keys::secret_bytes(&key).starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
}

#[tokio::test]
async fn zone_token_requests_are_validated() {
    let e = zone_env().await;
    let fields = |err: TokenError| {
        let TokenError::InvalidRequest(v) = err else {
            panic!("{err}")
        };
        v.violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect::<Vec<_>>()
    };
    let err = e
        .issuer
        .issue_zone(&ZoneTokenRequest {
            valid_for: "1 day".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let got = fields(err);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], "zone: cannot be empty");
    assert_eq!(got[1], "scope: cannot be empty");
    assert!(got[2].starts_with("validFor: is invalid"), "{got:?}");
    let err = e
        .issuer
        .issue_zone(&zone_req("Zone_1", &["cp"]))
        .await
        .unwrap_err();
    let got = fields(err);
    assert!(
        got[0].starts_with("zone: must be a valid DNS-1123 label"),
        "{got:?}"
    );
    let err = e.issuer.issue_zone(&zone_req("z", &[])).await.unwrap_err();
    assert_eq!(fields(err), ["scope: cannot be empty"]);
    let err = e
        .issuer
        .issue_zone(&zone_req("z", &["cp", "CP", "admin"]))
        .await
        .unwrap_err();
    assert_eq!(
        fields(err),
        [
            "scope[1]: unknown scope \"CP\": must be one of cp, ingress, egress",
            "scope[2]: unknown scope \"admin\": must be one of cp, ingress, egress"
        ]
    );
    let err = e
        .issuer
        .issue_zone(&ZoneTokenRequest {
            valid_for: "0s".into(),
            ..zone_req("z", &["cp"])
        })
        .await
        .unwrap_err();
    assert_eq!(fields(err), ["validFor: must be greater than 0"]);
    // Without a signing key (a federated zone) nothing is issued.
    let plain = env().await;
    let err = plain
        .issuer
        .issue_zone(&zone_req("z", &["cp"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::NoSigningKey { prefix, .. } if prefix == "zone-token-signing-key"),
        "{err}"
    );
}

#[tokio::test]
async fn zone_token_scope_and_zone_checks() {
    let e = zone_env().await;
    let v = &e.validator;
    let cp = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    let ingress = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["ingress", "egress"]))
        .await
        .unwrap();

    // Global authenticating a zone CP: identity from the token.
    let got = v
        .authorize_zone(&cp, ZoneScope::Cp, None)
        .await
        .expect("cp");
    assert_eq!(got.zone, "zone-1");
    // A zone proxy on its zone CP.
    v.authorize_zone(&ingress, ZoneScope::Ingress, Some("zone-1"))
        .await
        .expect("ingress");
    v.authorize_zone(&ingress, ZoneScope::Egress, Some("zone-1"))
        .await
        .expect("egress");

    let mismatch = |r: Result<ZoneClaims, TokenError>, needle: &str| {
        let err = r.unwrap_err();
        assert!(err.is_mismatch(), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(
            err.public_zone_reason(),
            "the zone token is not valid for this control plane"
        );
    };
    // Wrong scope, both ways.
    mismatch(
        v.authorize_zone(&ingress, ZoneScope::Cp, None).await,
        "token cannot be used to authenticate zone entity (cp is out of token's scope: [\"ingress\", \"egress\"])",
    );
    mismatch(
        v.authorize_zone(&cp, ZoneScope::Ingress, Some("zone-1"))
            .await,
        "ingress is out of token's scope",
    );
    // Another zone's token.
    mismatch(
        v.authorize_zone(&ingress, ZoneScope::Ingress, Some("zone-2"))
            .await,
        "zone from requestor: zone-2 is different than in token: zone-1",
    );
    mismatch(
        v.authorize_zone(&cp, ZoneScope::Cp, Some("zone-2")).await,
        "zone from requestor: zone-2",
    );
    // A token naming no zone (Kuma's kumactl can sign one offline): any zone for a zone
    // proxy, as Kuma; never the identity of a zone CP.
    let now = chrono::Utc::now().timestamp();
    let anyzone = e
        .issuer
        .sign(
            &Family::Zone,
            &ZoneTokenClaims {
                scope: Some(vec!["cp".into(), "ingress".into(), "future".into()]),
                jti: "any".into(),
                iat: now - 5,
                nbf: now - 5,
                exp: now + 60,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = v
        .authorize_zone(&anyzone, ZoneScope::Ingress, Some("zone-7"))
        .await
        .expect("unbound ingress token");
    // Unknown scope names are dropped.
    assert_eq!(got.scopes, scopes(&[ZoneScope::Cp, ZoneScope::Ingress]));
    mismatch(
        v.authorize_zone(&anyzone, ZoneScope::Cp, None).await,
        "names no zone",
    );
    // A zone name no zone can have (signed offline) identifies no zone CP.
    let odd = e
        .issuer
        .sign(
            &Family::Zone,
            &ZoneTokenClaims {
                zone: "../Zone 1".into(),
                scope: Some(vec!["cp".into()]),
                jti: "odd".into(),
                iat: now - 5,
                nbf: now - 5,
                exp: now + 60,
            },
        )
        .await
        .unwrap();
    mismatch(
        v.authorize_zone(&odd, ZoneScope::Cp, None).await,
        "cannot identify a zone control plane: it must be a valid DNS-1123 label",
    );
    // Go's null scope grants nothing.
    let null_scope = e
        .issuer
        .sign(
            &Family::Zone,
            &ZoneTokenClaims {
                zone: "zone-1".into(),
                scope: None,
                jti: "null".into(),
                iat: now - 5,
                nbf: now - 5,
                exp: now + 60,
            },
        )
        .await
        .unwrap();
    mismatch(
        v.authorize_zone(&null_scope, ZoneScope::Cp, None).await,
        "out of token's scope: []",
    );
}

#[tokio::test]
async fn refused_zone_tokens() {
    let e = zone_env().await;
    let v = &e.validator;
    let now = chrono::Utc::now().timestamp();
    let claims = ZoneTokenClaims {
        zone: "zone-1".into(),
        scope: Some(vec!["cp".into()]),
        jti: "x".into(),
        iat: now - 100,
        nbf: now - 100,
        exp: now - 10,
    };
    let public = |err: &TokenError| {
        assert_eq!(
            err.public_zone_reason(),
            "the zone token is not valid for this control plane",
            "{err}"
        );
    };

    // Expired.
    let expired = e.issuer.sign(&Family::Zone, &claims).await.unwrap();
    let err = v
        .authorize_zone(&expired, ZoneScope::Cp, None)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Expired(_)), "{err}");
    public(&err);

    // Revoked (Kuma's list: comma-separated ids, trailing newline allowed).
    let token = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    let other = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    let jti = parts(&token).1["jti"].as_str().unwrap().to_string();
    e.manager
        .upsert(Family::Zone.secret("zone-token-revocations", format!("a,{jti}\n").as_bytes()))
        .await
        .unwrap();
    let err = v
        .authorize_zone(&token, ZoneScope::Cp, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::Revoked { secret, .. } if secret == "zone-token-revocations"),
        "{err}"
    );
    public(&err);
    v.authorize_zone(&other, ZoneScope::Cp, None)
        .await
        .expect("not revoked");

    // Signed by another control plane's key (same kid).
    let foreign = zone_env().await;
    let theirs = foreign
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    let err = v
        .authorize_zone(&theirs, ZoneScope::Cp, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::BadSignature(k) if k == "zone-token-signing-key-1"),
        "{err}"
    );
    public(&err);
    // A dataplane token and a user token are not zone tokens (other keys).
    let dp_token = e
        .issuer
        .issue_dataplane(&dp_req("default", ""))
        .await
        .unwrap();
    assert!(matches!(
        v.validate_zone(&dp_token).await,
        Err(TokenError::BadSignature(_))
    ));

    // A kid with no key, private or public.
    let family = Family::Zone;
    let pem = keys::generate_pem().unwrap();
    e.manager
        .upsert(family.secret(family.key_name(9), pem.as_bytes()))
        .await
        .unwrap();
    let nine = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    assert_eq!(parts(&nine).0["kid"], "9");
    v.validate_zone(&nine).await.expect("kid 9");
    e.manager
        .delete(&family.key(family.key_name(9)))
        .await
        .unwrap();
    let err = v.validate_zone(&nine).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "Neither GlobalSecret \"zone-token-signing-key-9\" nor GlobalSecret \"zone-token-signing-public-key-9\" is found"
        ),
        "{err}"
    );
    public(&err);
    // Tokens of kid 1 are still accepted.
    v.validate_zone(&other).await.expect("kid 1");
}

#[tokio::test]
async fn federated_zone_validates_with_the_public_key_only() {
    let global = zone_env().await;
    let token = global
        .issuer
        .issue_zone(&zone_req("zone-1", &["ingress"]))
        .await
        .unwrap();
    // The zone gets only the public half, as the KDS mapping writes it.
    let private = global
        .manager
        .get(&Family::Zone.key("zone-token-signing-key-1"))
        .await
        .unwrap();
    let public_pem = keys::public_key_pem(&keys::secret_bytes(&private)).unwrap();
    let zone = env().await;
    zone.manager
        .upsert(Family::Zone.secret("zone-token-signing-public-key-1", public_pem.as_bytes()))
        .await
        .unwrap();
    let got = zone
        .validator
        .authorize_zone(&token, ZoneScope::Ingress, Some("zone-1"))
        .await
        .expect("validated with the public key");
    assert_eq!(got.zone, "zone-1");
    // The zone cannot issue with a public key.
    assert!(matches!(
        zone.issuer
            .issue_zone(&zone_req("zone-1", &["ingress"]))
            .await,
        Err(TokenError::NoSigningKey { .. })
    ));
    // Revocations synced from global apply.
    let jti = parts(&token).1["jti"].as_str().unwrap().to_string();
    zone.manager
        .upsert(Family::Zone.secret("zone-token-revocations", jti.as_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        zone.validator.validate_zone(&token).await,
        Err(TokenError::Revoked { .. })
    ));
    // A public key that is not the signer's.
    let other = keys::public_key_pem(keys::generate_pem().unwrap().as_bytes()).unwrap();
    let zone2 = env().await;
    zone2
        .manager
        .upsert(Family::Zone.secret("zone-token-signing-public-key-1", other.as_bytes()))
        .await
        .unwrap();
    let err = zone2.validator.validate_zone(&token).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::BadSignature(k) if k == "zone-token-signing-public-key-1"),
        "{err}"
    );
}

#[tokio::test]
async fn zone_stream_authentication() {
    let e = zone_env().await;
    let cp = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["cp"]))
        .await
        .unwrap();
    let ingress = e
        .issuer
        .issue_zone(&zone_req("zone-1", &["ingress"]))
        .await
        .unwrap();
    for md in [metadata(&[&cp]), metadata(&[&format!("Bearer {cp}")])] {
        let got = authenticate_zone_stream(&e.validator, &md, ZoneScope::Cp, None)
            .await
            .expect("accepted");
        assert_eq!(got.zone, "zone-1");
    }
    let refused = "authentication failed: the zone token is not valid for this control plane";
    // Bad token, wrong scope, wrong zone: one answer.
    for (md, zone) in [
        (metadata(&["garbage"]), None),
        (metadata(&[&ingress]), None),
        (metadata(&[&cp]), Some("zone-2")),
    ] {
        let st = authenticate_zone_stream(&e.validator, &md, ZoneScope::Cp, zone)
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
        assert_eq!(st.message(), refused);
    }
    for (md, needle) in [
        (metadata(&[]), "a zone token is required"),
        (metadata(&[&cp, &cp]), "exactly one"),
    ] {
        let st = authenticate_zone_stream(&e.validator, &md, ZoneScope::Cp, None)
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
        assert!(st.message().contains(needle), "{st:?}");
    }
}
