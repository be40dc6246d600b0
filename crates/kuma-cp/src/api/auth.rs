//! Access control of the API: who the caller is (authentication, a middleware in front of
//! every route) and what it may do (authorization, checked by the handlers where the resource
//! type is resolved).
//!
//! Authentication, in order:
//! - `GET /` (the index) ignores credentials entirely;
//! - `Authorization: Bearer <user token>` → the user the token names, plus the group
//!   `mesh-system:authenticated`; an invalid token is answered 401 even from localhost (an
//!   explicit credential always wins);
//! - no `Authorization` header, peer on a loopback address and `localhostIsAdmin` →
//!   `mesh-system:admin`;
//! - anything else → 401.
//!
//! Authorization: secrets (Secret, GlobalSecret, single or listed) and `/tokens/*` need the
//! user or group `mesh-system:admin` (403 otherwise), and so do a Mesh whose CA data sources
//! read files of the control plane's host (`file:`) and the deletion of a Mesh that owns
//! Secrets (they would go with it); everything else is open to any authenticated user.
//!
//! The peer address comes from [`ConnectInfo`]; a request without it (served without
//! `into_make_service_with_connect_info`) is never treated as local.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kuma_core::resource::Spec;
use kuma_core::{Resource, ResourceType};

use super::{ApiError, Shared};
use crate::tokens::User;

const BEARER: &str = "Bearer ";

/// The middleware: identifies the caller and stores the [`User`] in the request extensions.
pub async fn authenticate(AxState(s): AxState<Shared>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/" {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let user = match header {
        Some(value) => {
            let token = value
                .get(..BEARER.len())
                .filter(|scheme| scheme.eq_ignore_ascii_case(BEARER))
                .map(|_| value[BEARER.len()..].trim());
            let Some(token) = token else {
                return ApiError::unauthenticated(
                    "Invalid authentication data",
                    "unsupported Authorization header: send `Authorization: Bearer <user token>`",
                )
                .into_response();
            };
            match s.validator.validate_user(token).await {
                Ok(u) => u.authenticated(),
                Err(e) if e.is_transient() => return ApiError::from(e).into_response(),
                Err(e) => {
                    tracing::info!(reason = %e, ?peer, "API authentication rejected");
                    return ApiError::unauthenticated("Invalid authentication data", e.to_string())
                        .into_response();
                }
            }
        }
        None if s.localhost_is_admin && peer.is_some_and(is_loopback) => {
            User::admin().authenticated()
        }
        None => {
            return ApiError::unauthenticated(
                "Unauthenticated",
                "authentication is required: send `Authorization: Bearer <user token>` (generate one with `kumactl generate user-token`)",
            )
            .into_response();
        }
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// Whether the peer is on this host (IPv4-mapped IPv6 loopback included).
fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// Whether `rtype` is only for admins.
pub fn is_admin_type(rtype: ResourceType) -> bool {
    matches!(rtype, ResourceType::Secret | ResourceType::GlobalSecret)
}

/// 403 unless `user` may access resources of `rtype`.
pub fn authorize_type(user: &User, rtype: ResourceType) -> Result<(), ApiError> {
    if is_admin_type(rtype) && !user.is_admin() {
        return Err(denied(user, &format!("access resources of type {rtype}")));
    }
    Ok(())
}

/// 403 unless `user` may store `res` as it is: a Mesh whose CA data sources read files of the
/// control plane's host (`file:`) would let its writer read any file the control plane can
/// (keys, tokens), so only admins may write one.
pub fn authorize_content(user: &User, res: &Resource) -> Result<(), ApiError> {
    if user.is_admin() {
        return Ok(());
    }
    if let Spec::Mesh(mesh) = &res.spec
        && let Some(field) = mesh.host_file_sources().first()
    {
        return Err(denied(
            user,
            &format!("use a data source that reads a file of the control plane's host ({field})"),
        ));
    }
    Ok(())
}

/// 403 unless `user` is an admin; `what` says what was attempted.
pub fn require_admin(user: &User, what: &str) -> Result<(), ApiError> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(denied(user, what))
    }
}

fn denied(user: &User, what: &str) -> ApiError {
    ApiError::access_denied(format!(
        "user {:?} (groups {:?}) cannot {what}: only the user or group {} can",
        user.name,
        user.groups,
        crate::tokens::ADMIN
    ))
}
