//! The REST API (Kuma's, port 5681): index, config, type list, resource CRUD for every
//! [`ResourceType`], paged and filtered lists, and Dataplane overviews.
//!
//! Routes (all types resolved from the `{ws}` path segment, aliases included):
//! - `GET /`, `GET /config`, `GET /_resources`, `GET /who-am-i`;
//! - global types: `GET /{ws}`, `GET|PUT|DELETE /{ws}/{name}` (Mesh is `/meshes/{name}`);
//! - mesh-scoped types: `GET /{ws}` (across meshes), `GET /meshes/{mesh}/{ws}`,
//!   `GET|PUT|DELETE /meshes/{mesh}/{ws}/{name}`;
//! - `GET /meshes/{mesh}/dataplanes/_overview` (`dataplanes+insights`) and the single forms;
//! - `GET /zones/_overview` (`zones+insights`) and the single forms;
//! - insights ([`insights`]): `/meshes/{mesh}/service-insights[/{service}]`,
//!   `/service-insights`, `/mesh-insights[/{mesh}]`, `/global-insight`, `/global-insights`;
//! - `GET /meshes/{mesh}/dataplanes/{name}/{xds|stats|clusters}`, the same under
//!   `/zoneingresses/{name}/` and `/zoneegresses/{name}/` ([`inspect`]);
//! - `POST /tokens/dataplane`, `POST /tokens/user`, `POST /tokens/zone` (admins only).
//!
//! Every request but `GET /` is authenticated, and secrets and tokens are for admins only (see
//! [`auth`]). No CORS headers are sent: browsers on other origins cannot use the API.
//!
//! Every failure is an [`ApiError`], turned into Kuma's error body in one place. Writes go
//! through the [`ResourceManager`], so the API applies exactly the rules the manager enforces.
//!
//! Main items: [`State`], [`router`], [`ApiError`].

pub mod auth;
mod error;
pub mod insights;
mod inspect;
mod overview;
mod query;
mod resources;
mod tokens;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, OriginalUri, State as AxState};
use axum::routing::{get, post};
use axum::{Extension, Router};
use axum::{Json, http::Method};
use kuma_core::ResourceType;
use kuma_core::resource::Scope;
use serde_json::{Value, json};

use crate::manager::ResourceManager;
use crate::tokens::{Issuer, User, Validator};

pub use error::ApiError;
pub use resources::decode_put;

/// Largest accepted request body; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    /// Every read and write goes through it.
    pub manager: Arc<ResourceManager>,
    /// Body of `GET /`.
    pub index: Value,
    /// Body of `GET /config`.
    pub config: Value,
    /// Local zone name (used in KRIs).
    pub zone: String,
    /// Issues tokens (`POST /tokens/*`).
    pub issuer: Arc<Issuer>,
    /// Validates the user tokens callers present.
    pub validator: Arc<Validator>,
    /// Callers on a loopback address without credentials are `mesh-system:admin`
    /// (`apiServer.authn.localhostIsAdmin`).
    pub localhost_is_admin: bool,
    /// Per-mesh mTLS errors of the xDS runtime (`GET /mesh-insights/{mesh}`).
    pub mesh_status: crate::xds::MeshStatus,
    /// Service and mesh insights ([`insights`]).
    pub insights: insights::View,
    /// Reads proxies' Envoy admin (`api::inspect`): the mTLS client on a zone, the KDS
    /// forwarder on global.
    pub envoy_admin: Option<Arc<dyn crate::envoy_admin::Admin>>,
}

type Shared = Arc<State>;

/// The API as an axum router, ready to serve (or to nest under a base path).
pub fn router(state: State) -> Router {
    let shared = Arc::new(state);
    Router::new()
        .route("/", get(index))
        .route("/config", get(config))
        .route("/_resources", get(resource_types))
        .route("/who-am-i", get(who_am_i))
        .route("/{ws}", get(resources::list_top))
        .route(
            "/{ws}/{name}",
            get(resources::get_top)
                .put(resources::put_top)
                .delete(resources::delete_top),
        )
        .route("/meshes/{mesh}/{ws}", get(resources::list_in_mesh))
        .route(
            "/meshes/{mesh}/{ws}/{name}",
            get(resources::get_in_mesh)
                .put(resources::put_in_mesh)
                .delete(resources::delete_in_mesh),
        )
        .route("/meshes/{mesh}/dataplanes/_overview", get(overview::list))
        .route("/meshes/{mesh}/dataplanes+insights", get(overview::list))
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_overview",
            get(overview::get_one),
        )
        .route(
            "/meshes/{mesh}/dataplanes+insights/{name}",
            get(overview::get_one),
        )
        .route("/zones/_overview", get(overview::list_zones))
        .route("/zones+insights", get(overview::list_zones))
        .route("/zones/{name}/_overview", get(overview::get_zone))
        .route("/zones+insights/{name}", get(overview::get_zone))
        .route("/zoneingresses/_overview", get(zi_list))
        .route("/zoneingresses+insights", get(zi_list))
        .route("/zoneingresses/{name}/_overview", get(zi_one))
        .route("/zoneingresses+insights/{name}", get(zi_one))
        .route("/zoneegresses/_overview", get(ze_list))
        .route("/zoneegressoverviews", get(ze_list))
        .route("/zoneegresses+insights", get(ze_list))
        .route("/zoneegresses/{name}/_overview", get(ze_one))
        .route("/zoneegressoverviews/{name}", get(ze_one))
        .route("/zoneegresses+insights/{name}", get(ze_one))
        .route("/mesh-insights", get(insights::list_meshes))
        .route("/mesh-insights/{mesh}", get(insights::get_mesh))
        .route("/service-insights", get(insights::list_all))
        .route(
            "/meshes/{mesh}/service-insights",
            get(insights::list_in_mesh),
        )
        .route(
            "/meshes/{mesh}/service-insights/{service}",
            get(insights::get_service),
        )
        .route("/global-insight", get(insights::global))
        .route("/global-insights", get(insights::global_counts))
        .route(
            "/meshes/{mesh}/dataplanes/{name}/{kind}",
            get(inspect::dataplane),
        )
        .route("/zoneingresses/{name}/{kind}", get(inspect::zone_ingress))
        .route("/zoneegresses/{name}/{kind}", get(inspect::zone_egress))
        .route("/tokens/dataplane", post(tokens::dataplane))
        .route("/tokens/user", post(tokens::user))
        .route("/tokens/zone", post(tokens::zone))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn zi_list(
    AxState(s): AxState<Shared>,
    req: query::ListRequest,
) -> Result<Json<Value>, ApiError> {
    overview::ZoneProxy::Ingress.list(s, req).await
}

async fn zi_one(
    AxState(s): AxState<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    overview::ZoneProxy::Ingress.get_one(s, name).await
}

async fn ze_list(
    AxState(s): AxState<Shared>,
    req: query::ListRequest,
) -> Result<Json<Value>, ApiError> {
    overview::ZoneProxy::Egress.list(s, req).await
}

async fn ze_one(
    AxState(s): AxState<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    overview::ZoneProxy::Egress.get_one(s, name).await
}

async fn index(AxState(s): AxState<Shared>) -> Json<Value> {
    Json(s.index.clone())
}

async fn config(AxState(s): AxState<Shared>) -> Json<Value> {
    Json(s.config.clone())
}

/// `GET /who-am-i`: the authenticated caller.
async fn who_am_i(Extension(user): Extension<User>) -> Json<Value> {
    Json(json!({"name": user.name, "groups": user.groups}))
}

/// `GET /_resources`: every type with its path, scope and whether the API can write it.
async fn resource_types() -> Json<Value> {
    let resources: Vec<Value> = ResourceType::ALL
        .into_iter()
        .filter(|t| t.is_exposed())
        .map(|t| {
            let mut v = json!({
                "name": t.name(),
                "path": t.ws_path(),
                "scope": match t.scope() {
                    Scope::Mesh => "Mesh",
                    Scope::Global => "Global",
                },
                "readOnly": t.is_read_only(),
                "policy": t.is_new_style(),
            });
            if let Some(short) = t.short_name() {
                v["shortName"] = json!(short);
            }
            v
        })
        .collect();
    Json(json!({ "resources": resources }))
}

async fn unknown_path(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::unknown_path(uri.path())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::method_not_allowed(&method, uri.path())
}
