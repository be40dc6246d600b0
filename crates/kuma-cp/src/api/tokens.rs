//! `POST /tokens/dataplane`, `POST /tokens/user` and `POST /tokens/zone`: issue tokens (admins
//! only). The answer is the raw JWT as `text/plain`, as Kuma's.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::extract::rejection::BytesRejection;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::auth::require_admin;
use super::{ApiError, Shared};
use crate::tokens::{DataplaneTokenRequest, User, UserTokenRequest, ZoneTokenRequest};

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::body(&r))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::malformed_json(&e))
}

fn text(token: String) -> Response {
    ([(CONTENT_TYPE, "text/plain")], token).into_response()
}

/// `POST /tokens/dataplane` with `{"name","mesh","tags","type","workload","validFor"}`.
pub async fn dataplane(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&user, "generate dataplane tokens")?;
    let req: DataplaneTokenRequest = parse(body)?;
    Ok(text(s.issuer.issue_dataplane(&req).await?))
}

/// `POST /tokens/user` with `{"name","groups","validFor"}`.
pub async fn user(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&user, "generate user tokens")?;
    let req: UserTokenRequest = parse(body)?;
    Ok(text(s.issuer.issue_user(&req).await?))
}

/// `POST /tokens/zone` with `{"zone","scope","validFor"}`. A caller that is not an admin gets
/// 403 whatever the body (Kuma's words name the zone when the body has one).
pub async fn zone(
    AxState(s): AxState<Shared>,
    Extension(user): Extension<User>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: Result<ZoneTokenRequest, ApiError> = parse(body);
    let zone = req.as_ref().map(|r| r.zone.as_str()).unwrap_or_default();
    require_admin(&user, &format!("generate zone token for zone '{zone}'"))?;
    Ok(text(s.issuer.issue_zone(&req?).await?))
}
