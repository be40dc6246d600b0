//! Tokens (Kuma's JWTs): dataplane tokens, which authenticate data plane proxies to the DP
//! server (`/bootstrap` and the ADS stream), user tokens, which authenticate callers of the
//! REST API, and zone tokens, which authenticate a zone control plane to global (scope `cp`,
//! beyond Kuma OSS) and zone proxies to their zone control plane (scopes `ingress`, `egress`).
//!
//! Format, as Kuma's: RS256, header `kid` = serial number of the signing key, registered claims
//! `jti` (UUID), `iat` = `nbf` = now − 5s, `exp` = now + validity + 5s (10 years by default);
//! custom claims with Kuma's Go field names: dataplane tokens `Name`, `Mesh`, `Tags` (tag → list
//! of allowed values), `Type`, `Workload`; user tokens `Name`, `Groups`; zone tokens `Zone`,
//! `Scope` (list of [`ZoneScope`] names).
//!
//! Keys and revocations live in secrets (see [`keys::Family`]):
//! - dataplane tokens: mesh Secret `dataplane-token-signing-key-<mesh>-<kid>` (created with
//!   every Mesh by the [`ResourceManager`]), revocations in Secret
//!   `dataplane-token-revocations-<mesh>`;
//! - user tokens: GlobalSecret `user-token-signing-key-<kid>`, revocations in GlobalSecret
//!   `user-token-revocations`;
//! - zone tokens: GlobalSecret `zone-token-signing-key-<kid>` (created at start on a global or
//!   standalone CP, [`ensure_zone_signing_key`]); a federated zone holds only
//!   `zone-token-signing-public-key-<kid>` ([`keys::public_key_pem`]), and validation uses
//!   whichever of the two exists for the token's kid; revocations in GlobalSecret
//!   `zone-token-revocations`.
//!
//! A revocation list is the comma-separated `jti`s of revoked tokens; it is read on every
//! validation, so a revoked token is refused from its next use (next bootstrap, next ADS stream,
//! next API request) on.
//!
//! Main items: [`Issuer`], [`Validator`], [`User`], [`ZoneClaims`], [`TokenError`]; for the DP
//! server's ADS stream, [`authorize_registration`] (or its parts [`authenticate_stream`] and
//! [`authorize_takeover`]); for a zone's KDS stream or a zone proxy,
//! [`Validator::authorize_zone`] and [`authenticate_zone_stream`].

pub mod keys;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use kuma_core::resource::{ResourceKey, ResourceType};
use kuma_core::validate::{ValidationError, Violations};
use kuma_core::{Resource, Spec, store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::manager::{ManagerError, ResourceManager};
use keys::Family;

/// Name and group of the all-powerful user.
pub const ADMIN: &str = "mesh-system:admin";
/// Group every authenticated caller is in.
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";
/// GlobalSecret holding the bootstrap admin user token.
pub const ADMIN_TOKEN_SECRET: &str = "admin-user-token";
/// Label a Dataplane carries to bind it to a workload (checked against the `Workload` claim).
pub const WORKLOAD_LABEL: &str = "kuma.io/workload";
/// gRPC metadata key carrying the dataplane token on the ADS stream (raw JWT, no `Bearer`).
pub const AUTHORIZATION_METADATA: &str = "authorization";
/// Validity of a token issued without `validFor`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew allowance: tokens are valid from 5s before issuance to 5s after their validity.
const SKEW_SECS: i64 = 5;
/// Parsed public keys kept at most (keyed by the secret's content, so a rotated key is a miss).
const KEY_CACHE_LIMIT: usize = 256;

/// Kuma's answer when a proxy presents no token while dataplane authentication is on.
pub const DP_TOKEN_REQUIRED: &str = "Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > /path/file' and provide it via --dataplane-token-file=/path/file argument to Kuma DP";

/// Why a token could not be issued or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not a well-formed JWT (or its claims are not the expected ones).
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    /// The token is signed with something else than RS256.
    #[error("the token is signed with {0}; only RS256 tokens are accepted")]
    UnsupportedAlgorithm(String),
    /// The `kid` header is missing or not a serial number.
    #[error("the token has no valid kid header (serial number of its signing key): {0}")]
    InvalidKid(String),
    /// No signing key with the token's kid exists (rotated away, another control plane, or a
    /// memory store that lost its keys on restart).
    #[error("{}", signing_key_not_found(.kid, .secret, .public, .mesh))]
    SigningKeyNotFound {
        /// The token's kid.
        kid: u32,
        /// The secret that would hold it.
        secret: String,
        /// The secret that would hold its public half, for the families that have one.
        public: Option<String>,
        /// Its mesh; empty for a GlobalSecret.
        mesh: String,
    },
    /// The signature does not verify with the key the kid names.
    #[error("the token signature is invalid: it was not signed by the signing key {0:?}")]
    BadSignature(String),
    /// `exp` is in the past.
    #[error("the token expired at {0}")]
    Expired(String),
    /// `nbf` is in the future.
    #[error("the token is not valid yet (not before {0})")]
    NotYetValid(String),
    /// Its `jti` is in the revocation list.
    #[error("the token is revoked (its id {jti} is listed in the secret {secret:?})")]
    Revoked {
        /// The token's id.
        jti: String,
        /// The revocation list.
        secret: String,
    },
    /// A valid token that does not grant what is asked (another proxy name, mesh, tag value,
    /// workload or proxy type).
    #[error("{0}")]
    Mismatch(String),
    /// A request to issue a token is invalid; every violation names its field.
    #[error("invalid token request: {0}")]
    InvalidRequest(ValidationError),
    /// Issuing for a mesh that does not exist.
    #[error("mesh of name {0} is not found")]
    MeshNotFound(String),
    /// There is no key to sign with.
    #[error("there is no signing key: no secret {prefix}-<serial number> exists{}", in_mesh(.mesh))]
    NoSigningKey {
        /// Name prefix of the key secrets.
        prefix: String,
        /// Their mesh; empty for GlobalSecrets.
        mesh: String,
    },
    /// A signing key is unusable, or signing failed.
    #[error("signing key problem: {0}")]
    Key(String),
    /// Keys or revocations could not be read (transient).
    #[error("could not read signing keys or revocations: {0}")]
    Store(String),
}

fn in_mesh(mesh: &str) -> String {
    if mesh.is_empty() {
        String::new()
    } else {
        format!(" in mesh {mesh:?}")
    }
}

fn signing_key_not_found(kid: &u32, secret: &str, public: &Option<String>, mesh: &str) -> String {
    let what = if let Some(public) = public {
        format!("Neither GlobalSecret {secret:?} nor GlobalSecret {public:?} is found")
    } else if mesh.is_empty() {
        format!("GlobalSecret of name {secret:?} is not found")
    } else {
        format!("Secret of name {secret:?} in mesh {mesh:?} is not found")
    };
    format!(
        "there is no signing key with serial number {kid}. {what}. If signing key was rotated, regenerate the token (a control plane with the memory store generates new keys on every start)"
    )
}

impl TokenError {
    /// A valid token presented for something it does not grant (→ 403 / PermissionDenied);
    /// the other refusals mean the token itself is not acceptable (→ 401 / Unauthenticated).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, TokenError::Mismatch(_))
    }

    /// A failure of the control plane rather than of the token (→ 503 / Unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Store(_))
    }

    /// What a proxy is told when its dataplane token for `mesh` is refused. A missing signing
    /// key and a bad signature read alike, so the answer does not tell whether `mesh` exists
    /// or which key serials it has; the full reason goes to the control plane's log.
    pub fn public_reason(&self, mesh: &str) -> String {
        match self {
            TokenError::SigningKeyNotFound { .. } | TokenError::BadSignature(_) => format!(
                "the token signature does not verify with any dataplane token signing key of mesh {mesh:?}"
            ),
            e => e.to_string(),
        }
    }

    /// What a zone control plane or zone proxy is told when its zone token is refused: the
    /// same words whatever check failed (signature, expiry, revocation, scope, zone), so a
    /// peer learns nothing about the keys, the revocation list or other zones; a failure of
    /// the control plane itself says so. The full reason ([`Display`](std::fmt::Display)) is
    /// for the control plane's log.
    pub fn public_zone_reason(&self) -> &'static str {
        if self.is_transient() {
            "the zone token could not be checked now: the control plane cannot read its signing keys"
        } else {
            "the zone token is not valid for this control plane"
        }
    }
}

/// An API caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// `mesh-system:admin` in group `mesh-system:admin` (localhost callers, the bootstrap token).
    pub fn admin() -> Self {
        Self {
            name: ADMIN.into(),
            groups: vec![ADMIN.into()],
        }
    }

    /// Whether the user may read secrets and issue tokens: named, or in the group,
    /// `mesh-system:admin`.
    pub fn is_admin(&self) -> bool {
        self.name == ADMIN || self.groups.iter().any(|g| g == ADMIN)
    }

    /// The user with the `mesh-system:authenticated` group added (as Kuma does for every
    /// authenticated caller).
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// Claims of a dataplane token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DataplaneClaims {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Mesh", default)]
    mesh: String,
    /// Go encodes an empty map as `null`.
    #[serde(rename = "Tags", default)]
    tags: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "Type", default)]
    proxy_type: String,
    #[serde(rename = "Workload", default)]
    workload: String,
    #[serde(default)]
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// Claims of a user token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserClaims {
    #[serde(rename = "Name", default)]
    name: String,
    /// Go encodes an empty list as `null`.
    #[serde(rename = "Groups", default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

trait Claims: DeserializeOwned {
    fn jti(&self) -> &str;
}

impl Claims for DataplaneClaims {
    fn jti(&self) -> &str {
        &self.jti
    }
}

impl Claims for UserClaims {
    fn jti(&self) -> &str {
        &self.jti
    }
}

/// What a zone token may authenticate (its `Scope` claim lists their names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneScope {
    /// The zone control plane itself, on its KDS connection to global (beyond Kuma OSS).
    Cp,
    /// A ZoneIngress proxy of the zone (Kuma's `ingress`).
    Ingress,
    /// A ZoneEgress proxy of the zone (Kuma's `egress`).
    Egress,
}

impl ZoneScope {
    /// Every scope, in the order names are listed; what `kumactl generate zone-token` asks
    /// for without `--scope`.
    pub const ALL: [ZoneScope; 3] = [ZoneScope::Cp, ZoneScope::Ingress, ZoneScope::Egress];

    /// `cp`, `ingress`, `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneScope::Cp => "cp",
            ZoneScope::Ingress => "ingress",
            ZoneScope::Egress => "egress",
        }
    }

    /// The scope of a name; `None` for anything else (exact, lower case).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for ZoneScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a valid zone token says: the zone it identifies and what it may authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneClaims {
    /// The `Zone` claim; empty in a token bound to no zone (Kuma allows it for zone proxies;
    /// [`Validator::authorize_zone`] refuses it where the token must name the zone).
    pub zone: String,
    /// The known scopes of the `Scope` claim (names this control plane does not know grant
    /// nothing and are dropped).
    pub scopes: BTreeSet<ZoneScope>,
}

impl ZoneClaims {
    /// Whether the token may authenticate `scope`.
    pub fn allows(&self, scope: ZoneScope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Claims of a zone token as Kuma encodes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ZoneTokenClaims {
    #[serde(rename = "Zone", default)]
    zone: String,
    /// Go encodes an empty list as `null`.
    #[serde(rename = "Scope", default)]
    scope: Option<Vec<String>>,
    #[serde(default)]
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

impl Claims for ZoneTokenClaims {
    fn jti(&self) -> &str {
        &self.jti
    }
}

/// `POST /tokens/dataplane` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataplaneTokenRequest {
    /// Proxy name the token is bound to; empty = any.
    pub name: String,
    /// Mesh (required).
    pub mesh: String,
    /// Tags the proxy must carry, each with its allowed values.
    pub tags: Option<BTreeMap<String, Vec<String>>>,
    /// `dataplane`, `ingress`, `egress` or empty.
    #[serde(rename = "type")]
    pub proxy_type: String,
    /// Value of the proxy's `kuma.io/workload` label; empty = any.
    pub workload: String,
    /// Go duration (`24h`, `720h`); empty = 10 years.
    pub valid_for: String,
}

/// `POST /tokens/user` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserTokenRequest {
    /// User name (required).
    pub name: String,
    /// Groups.
    pub groups: Option<Vec<String>>,
    /// Go duration; empty = 10 years.
    pub valid_for: String,
}

/// `POST /tokens/zone` body (Kuma's `ZoneTokenRequest`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZoneTokenRequest {
    /// Zone the token identifies (required).
    pub zone: String,
    /// Scopes, each `cp`, `ingress` or `egress` (required, at least one).
    pub scope: Option<Vec<String>>,
    /// Go duration (`24h`, `720h`); empty = 10 years.
    pub valid_for: String,
}

/// Parses `validFor` (empty = [`DEFAULT_VALIDITY`]), recording a violation when invalid.
fn validity(raw: &str, errs: &mut Violations) -> Duration {
    if raw.trim().is_empty() {
        return DEFAULT_VALIDITY;
    }
    match crate::config::parse_duration(raw) {
        Ok(d) if d.is_zero() => {
            errs.add("validFor", "must be greater than 0");
            Duration::ZERO
        }
        Ok(d) => d,
        Err(e) => {
            errs.add("validFor", format!("is invalid: {e}"));
            Duration::ZERO
        }
    }
}

/// Registered claims of a token issued now: `(jti, iat = nbf, exp)`.
fn registered(valid_for: Duration) -> (String, i64, i64) {
    let now = chrono::Utc::now().timestamp();
    let valid = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
    (
        uuid::Uuid::new_v4().to_string(),
        now - SKEW_SECS,
        now.saturating_add(valid).saturating_add(SKEW_SECS),
    )
}

/// Issues tokens, signing each with the newest key of its family.
pub struct Issuer {
    manager: Arc<ResourceManager>,
}

impl Issuer {
    pub fn new(manager: Arc<ResourceManager>) -> Self {
        Self { manager }
    }

    /// A dataplane token for the request (Kuma's `POST /tokens/dataplane`).
    pub async fn issue_dataplane(&self, req: &DataplaneTokenRequest) -> Result<String, TokenError> {
        let mut errs = Violations::new();
        if req.mesh.is_empty() {
            errs.add("mesh", "cannot be empty");
        }
        if !matches!(
            req.proxy_type.as_str(),
            "" | "dataplane" | "ingress" | "egress"
        ) {
            errs.add("type", "must be one of dataplane, ingress, egress");
        }
        for (tag, values) in req.tags.iter().flatten() {
            if tag.is_empty() {
                errs.add("tags", "tag names cannot be empty");
            }
            if values.is_empty() {
                errs.add(format!("tags[{tag:?}]"), "must have at least one value");
            }
        }
        let valid_for = validity(&req.valid_for, &mut errs);
        errs.into_result().map_err(TokenError::InvalidRequest)?;
        let mesh_key = ResourceKey::new(ResourceType::Mesh, "", &req.mesh);
        match self.manager.get(&mesh_key).await {
            Ok(_) => {}
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                return Err(TokenError::MeshNotFound(req.mesh.clone()));
            }
            Err(e) => return Err(TokenError::Store(e.to_string())),
        }
        let (jti, iat, exp) = registered(valid_for);
        let claims = DataplaneClaims {
            name: req.name.clone(),
            mesh: req.mesh.clone(),
            tags: Some(req.tags.clone().unwrap_or_default()),
            proxy_type: req.proxy_type.clone(),
            workload: req.workload.clone(),
            jti,
            iat,
            nbf: iat,
            exp,
        };
        let family = Family::Dataplane {
            mesh: req.mesh.clone(),
        };
        self.sign(&family, &claims).await
    }

    /// A user token (Kuma's `POST /tokens/user`).
    pub async fn issue_user(&self, req: &UserTokenRequest) -> Result<String, TokenError> {
        let mut errs = Violations::new();
        if req.name.is_empty() {
            errs.add("name", "cannot be empty");
        }
        let valid_for = validity(&req.valid_for, &mut errs);
        errs.into_result().map_err(TokenError::InvalidRequest)?;
        let (jti, iat, exp) = registered(valid_for);
        let claims = UserClaims {
            name: req.name.clone(),
            groups: Some(req.groups.clone().unwrap_or_default()),
            jti,
            iat,
            nbf: iat,
            exp,
        };
        self.sign(&Family::User, &claims).await
    }

    /// A zone token (Kuma's `POST /tokens/zone`), signed with the newest
    /// `zone-token-signing-key-<kid>`. `zone` is required and must be a valid zone name (a
    /// DNS-1123 label, as `multizone.zone.name`; a token bound to no zone would let its holder
    /// pick its zone); `scope` must list at least one known scope (Kuma answers a
    /// missing one `cannot be empty`; an empty list, which Kuma accepts and which would grant
    /// nothing, is refused alike). Duplicates are dropped; the claim keeps the request's order.
    pub async fn issue_zone(&self, req: &ZoneTokenRequest) -> Result<String, TokenError> {
        let mut errs = Violations::new();
        // The rule of `multizone.zone.name`: a token for any other name identifies no zone.
        if let Some(problem) = kuma_core::name::name_problem(&req.zone, false) {
            errs.add("zone", problem);
        }
        let mut scope: Vec<String> = Vec::new();
        match req.scope.as_deref() {
            None | Some([]) => errs.add("scope", "cannot be empty"),
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if ZoneScope::parse(name).is_none() {
                        errs.add(
                            format!("scope[{i}]"),
                            format!(
                                "unknown scope {name:?}: must be one of {}",
                                ZoneScope::ALL.map(ZoneScope::as_str).join(", ")
                            ),
                        );
                    } else if !scope.contains(name) {
                        scope.push(name.clone());
                    }
                }
            }
        }
        let valid_for = validity(&req.valid_for, &mut errs);
        errs.into_result().map_err(TokenError::InvalidRequest)?;
        let (jti, iat, exp) = registered(valid_for);
        let claims = ZoneTokenClaims {
            zone: req.zone.clone(),
            scope: Some(scope),
            jti,
            iat,
            nbf: iat,
            exp,
        };
        self.sign(&Family::Zone, &claims).await
    }

    /// Creates the GlobalSecret `admin-user-token` (a 10-year token of [`User::admin`]) unless
    /// it exists. Returns whether it was created.
    pub async fn ensure_admin_token(&self) -> Result<bool, TokenError> {
        let family = Family::User;
        if keys::get(&self.manager, &family, ADMIN_TOKEN_SECRET)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let admin = User::admin();
        let token = self
            .issue_user(&UserTokenRequest {
                name: admin.name,
                groups: Some(admin.groups),
                valid_for: String::new(),
            })
            .await?;
        let secret = family.secret(ADMIN_TOKEN_SECRET, token.as_bytes());
        match self.manager.create_internal(secret).await {
            Ok(_) => Ok(true),
            Err(ManagerError::Store(store::Error::AlreadyExists(_))) => Ok(false),
            Err(e) => Err(TokenError::Store(e.to_string())),
        }
    }

    async fn sign<C: Serialize>(&self, family: &Family, claims: &C) -> Result<String, TokenError> {
        let Some((kid, secret)) = keys::latest(&self.manager, family).await? else {
            return Err(TokenError::NoSigningKey {
                prefix: family.key_prefix(),
                mesh: family.mesh().to_string(),
            });
        };
        let key = keys::encoding_key(&keys::secret_bytes(&secret))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &key)
            .map_err(|e| TokenError::Key(format!("could not sign the token: {e}")))
    }
}

/// Creates the first dataplane token signing key of `mesh` unless it has one (on every Mesh
/// write, by [`crate::mesh_setup`]). Returns whether a key was created.
pub async fn ensure_dataplane_signing_key(
    manager: &ResourceManager,
    mesh: &str,
) -> Result<bool, TokenError> {
    keys::ensure(
        manager,
        &Family::Dataplane {
            mesh: mesh.to_string(),
        },
    )
    .await
}

/// Creates the first user token signing key unless one exists.
pub async fn ensure_user_signing_key(manager: &ResourceManager) -> Result<bool, TokenError> {
    keys::ensure(manager, &Family::User).await
}

/// Creates the first zone token signing key (GlobalSecret `zone-token-signing-key-1`) unless
/// one exists. Called at start on a global CP and on a standalone zone CP; not on a federated
/// zone, which validates with the public keys global sends it. Returns whether a key was
/// created.
pub async fn ensure_zone_signing_key(manager: &ResourceManager) -> Result<bool, TokenError> {
    keys::ensure(manager, &Family::Zone).await
}

/// Validates tokens against the stored keys and revocation lists.
pub struct Validator {
    manager: Arc<ResourceManager>,
    dataplane_auth: bool,
    /// Public keys parsed from signing key secrets, keyed by the secret's base64 data.
    keys: Mutex<HashMap<String, DecodingKey>>,
}

impl Validator {
    /// `dataplane_auth`: whether proxies must present a dataplane token
    /// (`dpServer.authn.dpProxy.type: dpToken`); user tokens are validated either way.
    pub fn new(manager: Arc<ResourceManager>, dataplane_auth: bool) -> Self {
        Self {
            manager,
            dataplane_auth,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether proxies must authenticate with a dataplane token.
    pub fn dataplane_auth_enabled(&self) -> bool {
        self.dataplane_auth
    }

    /// Checks that `token` authenticates `dataplane` (Kuma's Universal authenticator): signed
    /// by a key of the Dataplane's mesh, valid now, not revoked; then every claim that is set
    /// must match: `Name`, `Mesh`, each tag of `Tags` must be on the Dataplane with all of its
    /// values allowed, `Workload` equal to the `kuma.io/workload` label, `Type` `dataplane`.
    pub async fn validate_dataplane(
        &self,
        token: &str,
        dataplane: &Resource,
    ) -> Result<(), TokenError> {
        let family = Family::Dataplane {
            mesh: dataplane.meta.mesh.clone(),
        };
        let claims: DataplaneClaims = self.verify(token, &family).await?;
        check_dataplane(&claims, dataplane)
    }

    /// The first check of a proxy's token, made before anything about the proxy is looked
    /// up: a dataplane token of `mesh` (its signing key, not expired, not revoked) that, when
    /// it names a proxy, names `name`. An unknown name and a bad token thus get the same
    /// answer; [`Self::validate_dataplane`] checks the rest against the Dataplane.
    pub async fn authenticate_dataplane(
        &self,
        token: &str,
        mesh: &str,
        name: &str,
    ) -> Result<(), TokenError> {
        let family = Family::Dataplane {
            mesh: mesh.to_string(),
        };
        let claims: DataplaneClaims = self.verify(token, &family).await?;
        check_identity(&claims, mesh, name)
    }

    /// The user a user token names, when the token is valid and not revoked.
    pub async fn validate_user(&self, token: &str) -> Result<User, TokenError> {
        let claims: UserClaims = self.verify(token, &Family::User).await?;
        if claims.name.is_empty() {
            return Err(TokenError::Malformed("the token names no user".into()));
        }
        Ok(User {
            name: claims.name,
            groups: claims.groups.unwrap_or_default(),
        })
    }

    /// What a zone token says, when it is signed by a zone token signing key of this control
    /// plane (the private `zone-token-signing-key-<kid>` or, on a federated zone, the public
    /// `zone-token-signing-public-key-<kid>`), valid now (same skew rules as every token) and
    /// not listed in `zone-token-revocations`. Scope and zone are not checked: see
    /// [`Self::authorize_zone`].
    pub async fn validate_zone(&self, token: &str) -> Result<ZoneClaims, TokenError> {
        let claims: ZoneTokenClaims = self.verify(token, &Family::Zone).await?;
        Ok(ZoneClaims {
            zone: claims.zone,
            scopes: claims
                .scope
                .iter()
                .flatten()
                .filter_map(|s| ZoneScope::parse(s))
                .collect(),
        })
    }

    /// A zone token that may authenticate `scope` for `zone`: [`Self::validate_zone`], then
    /// the token must list `scope`, and
    /// - with `zone: Some(z)` (a zone proxy on the zone CP of `z`): a token naming a zone must
    ///   name `z` (a token naming none is accepted, as Kuma does);
    /// - with `zone: None` (global authenticating a zone CP, whose identity comes from the
    ///   token only): the token must name a zone, by a valid zone name (DNS-1123 label).
    ///
    /// A refusal of a valid token is [`TokenError::Mismatch`]; tell the peer only
    /// [`TokenError::public_zone_reason`] and log the error itself.
    pub async fn authorize_zone(
        &self,
        token: &str,
        scope: ZoneScope,
        zone: Option<&str>,
    ) -> Result<ZoneClaims, TokenError> {
        let claims = self.validate_zone(token).await?;
        check_zone(&claims, scope, zone)?;
        Ok(claims)
    }

    async fn verify<C: Claims>(&self, token: &str, family: &Family) -> Result<C, TokenError> {
        let token = token.trim();
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(describe(&e)))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let kid: u32 = match header.kid.as_deref() {
            None => return Err(TokenError::InvalidKid("missing".into())),
            Some(k) => k
                .parse()
                .map_err(|_| TokenError::InvalidKid(format!("{k:?} is not a number")))?,
        };
        well_formed::<C>(token)?;
        let (secret_name, secret) = match self.signing_key(family, kid).await? {
            Some(found) => found,
            None => {
                return Err(TokenError::SigningKeyNotFound {
                    kid,
                    secret: family.key_name(kid),
                    public: family.public_key_name(kid),
                    mesh: family.mesh().to_string(),
                });
            }
        };
        let key = self.decoding_key(&secret)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let claims = match jsonwebtoken::decode::<C>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                return Err(match e.kind() {
                    K::InvalidSignature => TokenError::BadSignature(secret_name),
                    K::ExpiredSignature => TokenError::Expired(claim_time(token, "exp")),
                    K::ImmatureSignature => TokenError::NotYetValid(claim_time(token, "nbf")),
                    _ => TokenError::Malformed(describe(&e)),
                });
            }
        };
        self.check_revoked(family, claims.jti()).await?;
        Ok(claims)
    }

    /// The secret holding the key `kid` of the family, with its name: the signing key, else
    /// (zone tokens on a federated zone) its public half.
    async fn signing_key(
        &self,
        family: &Family,
        kid: u32,
    ) -> Result<Option<(String, Resource)>, TokenError> {
        let name = family.key_name(kid);
        if let Some(secret) = keys::get(&self.manager, family, &name).await? {
            return Ok(Some((name, secret)));
        }
        let Some(public) = family.public_key_name(kid) else {
            return Ok(None);
        };
        Ok(keys::get(&self.manager, family, &public)
            .await?
            .map(|secret| (public, secret)))
    }

    fn decoding_key(&self, secret: &Resource) -> Result<DecodingKey, TokenError> {
        let cache_key = match &secret.spec {
            Spec::Secret(s) | Spec::GlobalSecret(s) => s.data.clone(),
            _ => String::new(),
        };
        if let Some(k) = self.cache().get(&cache_key) {
            return Ok(k.clone());
        }
        let key = keys::decoding_key(&keys::secret_bytes(secret))?;
        let mut cache = self.cache();
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(cache_key, key.clone());
        Ok(key)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, DecodingKey>> {
        // A panic while holding the lock cannot leave the map inconsistent: use it anyway.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn check_revoked(&self, family: &Family, jti: &str) -> Result<(), TokenError> {
        let name = family.revocations_name();
        let Some(list) = keys::get(&self.manager, family, &name).await? else {
            return Ok(());
        };
        let bytes = keys::secret_bytes(&list);
        let text = String::from_utf8_lossy(&bytes);
        if !jti.is_empty() && text.split(',').any(|id| id.trim() == jti) {
            return Err(TokenError::Revoked {
                jti: jti.to_string(),
                secret: name,
            });
        }
        Ok(())
    }
}

/// A JWT parsing error in words (the library's own `Display` of some is a bare variant name).
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "expected three base64url parts separated by dots".into(),
        K::Base64(err) => format!("a part is not base64url: {err}"),
        K::Json(err) => format!("the header or the claims are not the expected JSON: {err}"),
        K::Utf8(err) => format!("a part is not UTF-8: {err}"),
        K::MissingRequiredClaim(c) => format!("the claim {c:?} is missing"),
        _ => e.to_string(),
    }
}

/// A time claim of an (already verified) token, as RFC 3339, for error messages.
fn claim_time(token: &str, claim: &str) -> String {
    jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
        .ok()
        .and_then(|c| c.get(claim).and_then(serde_json::Value::as_i64))
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| kuma_core::resource::format_time(&t))
        .unwrap_or_else(|| "an unknown time".into())
}

/// Every tag of a Dataplane with all its values (inbound tags and gateway tags).
fn dataplane_tags(dp: &kuma_core::resource::Dataplane) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for inbound in dp.inbounds() {
        for (k, v) in &inbound.tags {
            out.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    for (k, v) in dp.gateway().into_iter().flat_map(|g| &g.tags) {
        out.entry(k.clone()).or_default().insert(v.clone());
    }
    out
}

/// The name and mesh a token is bound to (when it is) are those of the proxy.
fn check_identity(claims: &DataplaneClaims, mesh: &str, name: &str) -> Result<(), TokenError> {
    if !claims.name.is_empty() && claims.name != name {
        return Err(TokenError::Mismatch(format!(
            "proxy name from requestor: {name} is different than in token: {}",
            claims.name
        )));
    }
    if !claims.mesh.is_empty() && claims.mesh != mesh {
        return Err(TokenError::Mismatch(format!(
            "proxy mesh from requestor: {mesh} is different than in token: {}",
            claims.mesh
        )));
    }
    Ok(())
}

fn check_dataplane(claims: &DataplaneClaims, res: &Resource) -> Result<(), TokenError> {
    let Spec::Dataplane(dp) = &res.spec else {
        return Err(TokenError::Mismatch(format!(
            "a dataplane token cannot authenticate a {}",
            res.rtype()
        )));
    };
    check_identity(claims, &res.meta.mesh, &res.meta.name)?;
    if !matches!(claims.proxy_type.as_str(), "" | "dataplane") {
        return Err(TokenError::Mismatch(format!(
            "the token is for proxies of type {}, not for a dataplane",
            claims.proxy_type
        )));
    }
    let dp_tags = dataplane_tags(dp);
    for (tag, allowed) in claims.tags.iter().flatten() {
        let Some(values) = dp_tags.get(tag) else {
            return Err(TokenError::Mismatch(format!(
                "dataplane has no tag {tag:?} required by the token"
            )));
        };
        if let Some(value) = values.iter().find(|v| !allowed.contains(v)) {
            return Err(TokenError::Mismatch(format!(
                "dataplane contains tag {tag:?} with value {value:?} which is not allowed with this token. Allowed values in token are {allowed:?}"
            )));
        }
    }
    if !claims.workload.is_empty() {
        let label = res.meta.labels.get(WORKLOAD_LABEL);
        if label != Some(&claims.workload) {
            return Err(TokenError::Mismatch(format!(
                "proxy workload from requestor: {} is different than in token: {}",
                label.map_or("(no kuma.io/workload label)", String::as_str),
                claims.workload
            )));
        }
    }
    Ok(())
}

/// The token of an ADS stream: exactly one `authorization` metadata value, the raw JWT.
pub fn stream_token(metadata: &MetadataMap) -> Result<String, Status> {
    let values: Vec<_> = metadata.get_all(AUTHORIZATION_METADATA).iter().collect();
    match values.as_slice() {
        [] => Err(Status::unauthenticated(format!(
            "authentication failed: the stream carries no {AUTHORIZATION_METADATA} metadata. {DP_TOKEN_REQUIRED}"
        ))),
        [one] => match one.to_str().map(str::trim) {
            Ok(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(Status::unauthenticated(format!(
                "authentication failed: the {AUTHORIZATION_METADATA} metadata is empty or not ASCII"
            ))),
        },
        many => Err(Status::unauthenticated(format!(
            "authentication failed: exactly one {AUTHORIZATION_METADATA} metadata value is expected, got {}",
            many.len()
        ))),
    }
}

/// The gRPC status of a refused token of a proxy of `mesh` (the full reason is logged).
fn grpc_status(e: &TokenError, mesh: &str) -> Status {
    tracing::info!(reason = %e, mesh, "ADS stream refused: dataplane token");
    let msg = format!("authentication failed: {}", e.public_reason(mesh));
    if e.is_transient() {
        Status::unavailable(msg)
    } else if e.is_mismatch() {
        Status::permission_denied(msg)
    } else {
        Status::unauthenticated(msg)
    }
}

/// Authenticates an ADS stream for `dataplane` (the resource from the node metadata, or the
/// stored one): a no-op when dataplane authentication is off; otherwise the stream's single
/// `authorization` metadata value must be a dataplane token that
/// [`Validator::validate_dataplane`] accepts. Errors: `Unauthenticated` (no/invalid token),
/// `PermissionDenied` (a valid token for another proxy), `Unavailable` (store failure).
pub async fn authenticate_stream(
    validator: &Validator,
    metadata: &MetadataMap,
    dataplane: &Resource,
) -> Result<(), Status> {
    if !validator.dataplane_auth_enabled() {
        return Ok(());
    }
    let token = stream_token(metadata)?;
    validator
        .validate_dataplane(&token, dataplane)
        .await
        .map_err(|e| grpc_status(&e, &dataplane.meta.mesh))
}

/// The first check of a new ADS stream, before its Dataplane is looked up: a no-op when
/// dataplane authentication is off; otherwise the stream's token must be a dataplane token of
/// `mesh` for the proxy `name` ([`Validator::authenticate_dataplane`]), so that an unknown
/// name and a bad token are refused alike.
pub async fn authenticate_stream_identity(
    validator: &Validator,
    metadata: &MetadataMap,
    mesh: &str,
    name: &str,
) -> Result<(), Status> {
    if !validator.dataplane_auth_enabled() {
        return Ok(());
    }
    let token = stream_token(metadata)?;
    validator
        .authenticate_dataplane(&token, mesh, name)
        .await
        .map_err(|e| grpc_status(&e, mesh))
}

/// Takeover guard: when a Dataplane with the registering proxy's name already exists, the
/// proxy's token must also authenticate the *existing* resource, so that a token for one
/// service cannot replace another service's proxy. A no-op when dataplane authentication is
/// off. Errors: `PermissionDenied` naming the existing Dataplane, `Unavailable` on store
/// failure.
pub async fn authorize_takeover(
    validator: &Validator,
    token: &str,
    existing: &Resource,
) -> Result<(), Status> {
    if !validator.dataplane_auth_enabled() {
        return Ok(());
    }
    match validator.validate_dataplane(token, existing).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(grpc_status(&e, &existing.meta.mesh)),
        Err(e) => Err(Status::permission_denied(takeover_refusal(existing, &e))),
    }
}

/// Everything the ADS registration needs, in one call: a no-op when dataplane authentication
/// is off; otherwise the stream's token must authenticate `dataplane` (the resource the proxy
/// registers, or the stored one in the indirect lifecycle) and, when given, the `existing`
/// stored Dataplane of the same name (takeover guard). Statuses as [`authenticate_stream`] and
/// [`authorize_takeover`].
pub async fn authorize_registration(
    validator: &Validator,
    metadata: &MetadataMap,
    dataplane: &Resource,
    existing: Option<&Resource>,
) -> Result<(), Status> {
    if !validator.dataplane_auth_enabled() {
        return Ok(());
    }
    let token = stream_token(metadata)?;
    validator
        .validate_dataplane(&token, dataplane)
        .await
        .map_err(|e| grpc_status(&e, &dataplane.meta.mesh))?;
    match existing {
        Some(existing) => authorize_takeover(validator, &token, existing).await,
        None => Ok(()),
    }
}

/// The one check of a zone proxy (ZoneIngress, ZoneEgress) on `/bootstrap` and on its ADS
/// stream: `token` must be a zone token of scope `scope` (`ingress` or `egress`) for
/// `local_zone` (or for no zone). A no-op when proxy authentication is off
/// (`dpServer.authn.dpProxy.type: none`). Returns why the token is refused.
///
/// The token must be a zone token (issued by this CP when standalone, by global for a
/// federated zone, checked with its public key), of the proxy's scope (`ingress` or
/// `egress`), and name this zone if it names one. The returned reason is the same for every
/// refusal (the full one goes to the log).
pub async fn authenticate_zone_proxy(
    validator: &Validator,
    token: &str,
    scope: &str,
    local_zone: &str,
) -> Result<(), String> {
    if !validator.dataplane_auth_enabled() {
        return Ok(());
    }
    let Some(scope) = ZoneScope::parse(scope) else {
        return Err(format!("no zone token scope for a proxy of type {scope:?}"));
    };
    if token.is_empty() {
        return Err("a zone token is required".into());
    }
    validator
        .authorize_zone(token, scope, Some(local_zone))
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::warn!(error = %e, %scope, "zone proxy token refused");
            e.public_zone_reason().to_string()
        })
}

/// Why a proxy may not replace an existing Dataplane.
pub fn takeover_refusal(existing: &Resource, e: &TokenError) -> String {
    format!(
        "a Dataplane {:?} already exists in mesh {:?} and the presented token does not authenticate it, so it cannot be replaced: {e}",
        existing.meta.name, existing.meta.mesh
    )
}

/// The scope and zone checks of [`Validator::authorize_zone`], with Kuma's words.
fn check_zone(claims: &ZoneClaims, scope: ZoneScope, zone: Option<&str>) -> Result<(), TokenError> {
    if !claims.allows(scope) {
        let scopes: Vec<&str> = claims.scopes.iter().map(|s| s.as_str()).collect();
        return Err(TokenError::Mismatch(format!(
            "token cannot be used to authenticate zone entity ({scope} is out of token's scope: {scopes:?})"
        )));
    }
    match zone {
        Some(zone) if !claims.zone.is_empty() && claims.zone != zone => {
            Err(TokenError::Mismatch(format!(
                "zone from requestor: {zone} is different than in token: {}",
                claims.zone
            )))
        }
        None if claims.zone.is_empty() => Err(TokenError::Mismatch(
            "the token names no zone, so it cannot identify a zone control plane".into(),
        )),
        // A token signed offline may carry any text: it identifies a zone only if it could
        // name one.
        None => match kuma_core::name::name_problem(&claims.zone, false) {
            Some(problem) => Err(TokenError::Mismatch(format!(
                "the token's zone {:?} cannot identify a zone control plane: it {problem}",
                claims.zone
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Authenticates a gRPC stream (a zone CP's KDS stream on global: `scope` [`ZoneScope::Cp`],
/// `zone` `None`) with the zone token in its single `authorization` metadata value (the raw
/// JWT, or `Bearer <jwt>`): [`Validator::authorize_zone`]. Every refusal is `Unauthenticated`
/// with the same message ([`TokenError::public_zone_reason`]; a missing or repeated
/// `authorization` says so), a store failure `Unavailable`; the full reason is logged.
pub async fn authenticate_zone_stream(
    validator: &Validator,
    metadata: &MetadataMap,
    scope: ZoneScope,
    zone: Option<&str>,
) -> Result<ZoneClaims, Status> {
    let values: Vec<_> = metadata.get_all(AUTHORIZATION_METADATA).iter().collect();
    let token = match values.as_slice() {
        [] => {
            return Err(Status::unauthenticated(format!(
                "authentication failed: a zone token is required in the {AUTHORIZATION_METADATA} metadata"
            )));
        }
        [one] => one.to_str().map(str::trim).unwrap_or_default(),
        many => {
            return Err(Status::unauthenticated(format!(
                "authentication failed: exactly one {AUTHORIZATION_METADATA} metadata value is expected, got {}",
                many.len()
            )));
        }
    };
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    validator
        .authorize_zone(token, scope, zone)
        .await
        .map_err(|e| zone_grpc_status(&e, scope, zone))
}

/// The gRPC status of a refused zone token (the full reason is logged, not sent).
pub fn zone_grpc_status(e: &TokenError, scope: ZoneScope, zone: Option<&str>) -> Status {
    tracing::info!(reason = %e, %scope, zone = zone.unwrap_or(""), "zone token refused");
    let msg = format!("authentication failed: {}", e.public_zone_reason());
    if e.is_transient() {
        Status::unavailable(msg)
    } else {
        Status::unauthenticated(msg)
    }
}

/// Checks a token's claims and signature encoding before any key is looked up, so a
/// malformed token is refused with the same words whether or not its mesh or key exists
/// (otherwise a signature that is not canonical base64url would be "not a valid JWT" in a mesh
/// with that key and "does not verify" in every other).
fn well_formed<C: Claims>(token: &str) -> Result<(), TokenError> {
    use base64::Engine;
    jsonwebtoken::dangerous::insecure_decode_claims::<C>(token)
        .map_err(|e| TokenError::Malformed(describe(&e)))?;
    let signature = token.rsplit_once('.').map_or("", |(_, s)| s);
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| TokenError::Malformed(format!("the signature is not base64url: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests;
