//! Resource CRUD handlers, generic over the type named by the `{ws}` path segment.
//!
//! A path that names no type, or a type of the wrong scope for its position (a global type
//! under `/meshes/{mesh}/`, a mesh-scoped type at `/{ws}/{name}`), is answered 404.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State as AxState};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kuma_core::resource::{ResourceKey, Scope};
use kuma_core::validate::Violations;
use kuma_core::{Resource, ResourceType};
use serde_json::{Map, Value, json};

use super::auth::authorize_type;
use super::query::ListRequest;
use super::{ApiError, Shared, State};
use crate::tokens::User;

/// The type at `ws` if `user` may access it; 404 for no such type, 403 for a type the user
/// may not access.
fn rtype_at(
    ws: &str,
    scope: Option<Scope>,
    path: &str,
    user: &User,
) -> Result<ResourceType, ApiError> {
    let rtype = ResourceType::from_ws_path(ws)
        .filter(|t| scope.is_none_or(|s| t.scope() == s))
        .ok_or_else(|| ApiError::unknown_path(path))?;
    authorize_type(user, rtype)?;
    Ok(rtype)
}

/// The wire shape of a stored resource, with `kri` after the metadata when the type has one.
pub fn wire(res: &Resource, zone: &str) -> Value {
    let wire = res.to_wire();
    let Some(kri) = res.kri(zone) else {
        return wire;
    };
    let Value::Object(fields) = wire else {
        return wire;
    };
    let anchor = if fields.contains_key("labels") {
        "labels"
    } else {
        "modificationTime"
    };
    let mut out = Map::new();
    for (k, v) in fields {
        let at_anchor = k == anchor;
        out.insert(k, v);
        if at_anchor {
            out.insert("kri".into(), Value::String(kri.clone()));
        }
    }
    Value::Object(out)
}

async fn list(
    s: &State,
    rtype: ResourceType,
    mesh: Option<&str>,
    req: &ListRequest,
) -> Result<Json<Value>, ApiError> {
    let page = req.page()?;
    let filter = req.filter(rtype == ResourceType::Dataplane)?;
    let items: Vec<Value> = s
        .manager
        .list(rtype, mesh)
        .await?
        .iter()
        .filter(|r| filter.matches(r))
        .map(|r| wire(r, &s.zone))
        .collect();
    Ok(Json(req.paginate(items, page)))
}

async fn get(s: &State, key: ResourceKey) -> Result<Json<Value>, ApiError> {
    let res = s.manager.get(&key).await?;
    Ok(Json(wire(&res, &s.zone)))
}

async fn put(
    s: &State,
    key: ResourceKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if key.rtype.is_read_only() {
        return Err(crate::manager::ManagerError::ReadOnly(key.rtype).into());
    }
    let body = body.map_err(|r| ApiError::body(&r))?;
    let res = decode_put(&key, &body)?;
    let (_, created) = s.manager.upsert(res).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "warnings": [] }))))
}

/// Decodes and validates the body of `PUT` `key`: everything the handler does before the
/// manager (pure; the fuzz target `resource_json` drives it). The body is JSON; its `name`
/// and `mesh`, when given, must match the URL's; every problem is reported at once.
pub fn decode_put(key: &ResourceKey, body: &[u8]) -> Result<Resource, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    let mut errs = Violations::new();
    if let Some(Value::String(n)) = value.get("name")
        && *n != key.name
    {
        errs.add(
            "name",
            format!(
                "name from the URL has to be the same as in body: {:?} != {n:?}",
                key.name
            ),
        );
    }
    if key.rtype.scope() == Scope::Mesh
        && let Some(Value::String(m)) = value.get("mesh")
        && *m != key.mesh
    {
        errs.add(
            "mesh",
            format!(
                "mesh from the URL has to be the same as in body: {:?} != {m:?}",
                key.mesh
            ),
        );
    }
    let res = match Resource::from_wire(value, Some(key.rtype)) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.extend("", e);
            None
        }
    };
    errs.into_result()?;
    let Some(res) = res else {
        // Invariant: `from_wire` failing recorded violations, so `into_result` returned.
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "resource parsing failed without a reason",
        ));
    };
    Ok(res)
}

async fn delete(s: &State, key: ResourceKey) -> Result<Json<Value>, ApiError> {
    s.manager.delete(&key).await?;
    Ok(Json(json!({})))
}

/// `GET /{ws}`: a global type, or a mesh-scoped type across meshes.
pub async fn list_top(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path(ws): Path<String>,
    OriginalUri(uri): OriginalUri,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, None, uri.path(), &user)?;
    list(&s, rtype, None, &req).await
}

/// `GET /meshes/{mesh}/{ws}`.
pub async fn list_in_mesh(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((mesh, ws)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Mesh), uri.path(), &user)?;
    list(&s, rtype, Some(&mesh), &req).await
}

pub async fn get_top(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((ws, name)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Global), uri.path(), &user)?;
    get(&s, ResourceKey::new(rtype, "", name)).await
}

pub async fn put_top(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((ws, name)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Global), uri.path(), &user)?;
    put(&s, ResourceKey::new(rtype, "", name), body).await
}

pub async fn delete_top(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((ws, name)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Global), uri.path(), &user)?;
    delete(&s, ResourceKey::new(rtype, "", name)).await
}

pub async fn get_in_mesh(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((mesh, ws, name)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Mesh), uri.path(), &user)?;
    get(&s, ResourceKey::new(rtype, mesh, name)).await
}

pub async fn put_in_mesh(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((mesh, ws, name)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Mesh), uri.path(), &user)?;
    put(&s, ResourceKey::new(rtype, mesh, name), body).await
}

pub async fn delete_in_mesh(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((mesh, ws, name)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Mesh), uri.path(), &user)?;
    delete(&s, ResourceKey::new(rtype, mesh, name)).await
}
