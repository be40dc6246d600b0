//! Resource CRUD handlers, generic over the type named by the `{ws}` path segment.
//!
//! A path that names no type, or a type of the wrong scope for its position (a global type
//! under `/meshes/{mesh}/`, a mesh-scoped type at `/{ws}/{name}`), is answered 404.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State as AxState};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kuma_core::resource::{DecodeError, Decoded, ResourceKey, Scope};
use kuma_core::validate::Violations;
use kuma_core::{Resource, ResourceType, store};
use serde_json::{Map, Value, json};

use super::auth::{authorize_content, authorize_type, require_admin};
use super::query::ListRequest;
use super::{ApiError, Shared, State};
use crate::manager::ManagerError;
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
    user: &User,
    key: ResourceKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if key.rtype.is_read_only() {
        return Err(crate::manager::ManagerError::ReadOnly(key.rtype).into());
    }
    let body = body.map_err(|r| ApiError::body(&r))?;
    let Decoded { resource, warnings } = decode_put(&key, &body)?;
    authorize_content(user, &resource)?;
    check_workload_label(s, &key, &resource).await?;
    let (_, created) = s.manager.upsert(resource).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(success_body(&warnings))))
}

/// Kuma (Universal zone): a new Dataplane's `kuma.io/workload` label, when set, must be a
/// DNS-1035 label (an update is not checked).
async fn check_workload_label(
    s: &State,
    key: &ResourceKey,
    resource: &Resource,
) -> Result<(), ApiError> {
    let Some(workload) = resource
        .meta
        .labels
        .get(WORKLOAD_LABEL)
        .filter(|w| !w.is_empty())
    else {
        return Ok(());
    };
    let problems = kuma_core::name::dns1035_label_problems(workload);
    if key.rtype != ResourceType::Dataplane || problems.is_empty() {
        return Ok(());
    }
    match s.manager.get(key).await {
        Err(ManagerError::Store(store::Error::NotFound(_))) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Invalid workload label",
            format!(
                "labels[{WORKLOAD_LABEL:?}]: must be a valid DNS-1035 label (at most 63 characters, matching regex [a-z]([-a-z0-9]*[a-z0-9])?): {}",
                problems.join("; ")
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Label naming the workload of a Dataplane.
const WORKLOAD_LABEL: &str = "kuma.io/workload";

/// Kuma's `PUT` success body: `{}`, or `{"warnings": [...]}` when there are any (unknown
/// fields, which Kuma ignores silently and we name; deprecations).
fn success_body(warnings: &[String]) -> Value {
    if warnings.is_empty() {
        json!({})
    } else {
        json!({ "warnings": warnings })
    }
}

/// Decodes and validates the body of `PUT` `key`: everything the handler does before the
/// manager (pure). Kuma's order: the body is decoded as the URL's type (a body that does not
/// decode is a `Bad Request` naming every bad field); then `name` and `mesh` must match the
/// URL's, and every violation of the metadata and the spec is reported at once.
pub fn decode_put(key: &ResourceKey, body: &[u8]) -> Result<Decoded, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::resource_not_json(key.rtype, &e))?;
    let body_str = |f: &str| value.get(f).and_then(Value::as_str).unwrap_or_default();
    let mut url = Violations::new();
    if body_str("name") != key.name {
        url.add("name", "name from the URL has to be the same as in body");
    }
    // New-style types default `mesh` to `default` (Kuma's schema default).
    let body_mesh = match value.get("mesh") {
        None | Some(Value::Null) if key.rtype.is_new_style() => kuma_core::resource::DEFAULT_MESH,
        _ => body_str("mesh"),
    };
    let mesh_mismatch = key.rtype.scope() == Scope::Mesh && body_mesh != key.mesh;
    let decoded = Resource::decode(value, Some(key.rtype));
    let mut rest = match decoded {
        Ok(d) if url.is_empty() && !mesh_mismatch => return Ok(d),
        Ok(_) => Vec::new(),
        Err(DecodeError::Malformed { rtype, errors }) => {
            return Err(ApiError::malformed(rtype.unwrap_or(key.rtype), errors));
        }
        Err(DecodeError::Invalid(e)) => e.violations,
    };
    // Kuma's order: name (URL), type (URL), mesh (URL), then labels and the metadata rules.
    let types = rest.iter().take_while(|v| v.field == "type").count();
    for v in rest.drain(..types) {
        url.add(v.field, v.message);
    }
    if mesh_mismatch {
        url.add("mesh", "mesh from the URL has to be the same as in body");
    }
    for v in rest {
        url.add(v.field, v.message);
    }
    // Invariant: we get here with a URL mismatch recorded or with the decoder's violations
    // (never empty), so there is something to report.
    Err(url
        .into_result()
        .expect_err("a mismatch or a violation was recorded")
        .into())
}

async fn delete(s: &State, user: &User, key: ResourceKey) -> Result<Json<Value>, ApiError> {
    if key.rtype == ResourceType::Mesh && !user.is_admin() {
        // Deleting a Mesh deletes its Secrets, which only admins may touch.
        let secrets = s
            .manager
            .list(ResourceType::Secret, Some(&key.name))
            .await?;
        if !secrets.is_empty() {
            require_admin(
                user,
                &format!(
                    "delete mesh {:?}: it owns {} Secret(s), which would be deleted with it",
                    key.name,
                    secrets.len()
                ),
            )?;
        }
    }
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
    put(&s, &user, ResourceKey::new(rtype, "", name), body).await
}

pub async fn delete_top(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((ws, name)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Global), uri.path(), &user)?;
    delete(&s, &user, ResourceKey::new(rtype, "", name)).await
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
    // Kuma looks the URL's mesh up before anything else: 404 when it does not exist.
    let mesh_key = ResourceKey::new(ResourceType::Mesh, "", &mesh);
    match s.manager.get(&mesh_key).await {
        Err(ManagerError::Store(store::Error::NotFound(_))) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "Failed to retrieve Mesh",
                "Not found",
            ));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    put(&s, &user, ResourceKey::new(rtype, mesh, name), body).await
}

pub async fn delete_in_mesh(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    Path((mesh, ws, name)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let rtype = rtype_at(&ws, Some(Scope::Mesh), uri.path(), &user)?;
    delete(&s, &user, ResourceKey::new(rtype, mesh, name)).await
}
