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
        None if s.localhost_is_admin
            && peer.is_some_and(is_loopback)
            && is_direct_local_request(&req) =>
        {
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

/// Whether a request from a loopback peer was made directly by a local client, as Kuma
/// checks before treating it as admin: no proxy headers (`Forwarded`, `X-Forwarded-For`,
/// `X-Real-IP`: a reverse proxy on this host forwards remote callers), a `Host` that is
/// `localhost` or a loopback address (a DNS-rebound name is not), not marked cross-site by
/// the browser (`Sec-Fetch-Site`), and an `Origin`, when present, that is the same loopback
/// origin. A browser on the CP's host thus cannot lend a web page admin rights.
fn is_direct_local_request(req: &Request) -> bool {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    if ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| header(h).is_some_and(|v| !v.is_empty()))
    {
        return false;
    }
    let host = header("host")
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let Some((host_name, _)) = authority("http", &host) else {
        return false;
    };
    if !is_loopback_name(&host_name) {
        return false;
    }
    if !matches!(
        header("sec-fetch-site"),
        None | Some("" | "same-origin" | "none")
    ) {
        return false;
    }
    match header("origin") {
        None | Some("") => true,
        Some(origin) => same_loopback_origin(origin, &host),
    }
}

/// `localhost` or a loopback IP (canonical host names).
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether `origin` (`scheme://host[:port]`, nothing more) is a loopback origin equal to the
/// request's `host` (its port defaulted by the origin's scheme).
fn same_loopback_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let (Some(o), Some(h)) = (authority(scheme, rest), authority(scheme, host)) else {
        return false;
    };
    is_loopback_name(&o.0) && o == h
}

/// `host[:port]` or `[v6][:port]` → (canonical host, port), the port defaulted by `scheme`;
/// `None` for anything else (a path, a query, user info, a bad or empty port).
fn authority(scheme: &str, text: &str) -> Option<(String, u16)> {
    if text.is_empty() || text.contains(['/', '?', '#', '@']) || text.ends_with(':') {
        return None;
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (v6.to_string(), port)
        }
        None => match text.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        },
    };
    let port = match port {
        None => match scheme {
            "https" => 443,
            _ => 80,
        },
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok().filter(|&p| p > 0)?,
        Some(_) => return None,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    };
    Some((host, port))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(host: &str, origin: &str, extra: &[(&str, &str)]) -> bool {
        let mut req = axum::http::Request::builder().uri("/meshes");
        if !host.is_empty() {
            req = req.header("host", host);
        }
        if !origin.is_empty() {
            req = req.header("origin", origin);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        is_direct_local_request(&req.body(axum::body::Body::empty()).unwrap())
    }

    #[test]
    fn direct_local_requests_as_kuma_decides_them() {
        let admin = [
            ("localhost:5681", "", &[][..]),
            ("[::1]", "", &[]),
            ("localhost:5681", "http://localhost:5681", &[]),
            ("127.0.0.1:5681", "http://127.0.0.1:5681", &[]),
            ("LOCALHOST:5681", "http://localhost:5681", &[]),
            ("localhost:80", "http://localhost", &[]),
            ("localhost:443", "https://localhost", &[]),
            ("localhost", "http://localhost:80", &[]),
            ("[::1]:80", "http://[::1]", &[]),
            ("[::1]", "http://[::1]:80", &[]),
            ("localhost:5681", "", &[("sec-fetch-site", "same-origin")]),
            ("localhost:5681", "", &[("sec-fetch-site", "none")]),
        ];
        for (host, origin, extra) in admin {
            assert!(direct(host, origin, extra), "{host} {origin} {extra:?}");
        }
        let refused = [
            ("localhost:5681", "https://evil.com", &[][..]),
            ("localhost:5681", "", &[("sec-fetch-site", "cross-site")]),
            ("localhost:5681", "", &[("sec-fetch-site", "same-site")]),
            ("localhost:5681", "http://127.0.0.1:3000", &[]),
            ("localhost:5681", "http://localhost", &[]),
            ("localhost:5682", "https://localhost", &[]),
            ("localhost", "http://localhost:5681", &[]),
            ("localhost:5681", "", &[("x-forwarded-for", "1.2.3.4")]),
            ("localhost:5681", "", &[("forwarded", "for=1.2.3.4")]),
            ("localhost:5681", "", &[("x-real-ip", "1.2.3.4")]),
            ("api.example.com", "", &[]),
            ("rebound.example.com:5681", "", &[]),
            ("[::1", "", &[]),
            ("localhost:bad", "", &[]),
            ("localhost:", "", &[]),
            ("localhost:5681", "null", &[]),
            ("localhost:5681", "not-a-url", &[]),
            ("localhost:5681", "http://localhost:bad", &[]),
            ("localhost:5681", "http://localhost:5681/path", &[]),
            ("localhost:5681", "http://localhost:5681?x=1", &[]),
            ("localhost:5681", "http://user@localhost:5681", &[]),
            ("", "", &[]),
        ];
        for (host, origin, extra) in refused {
            assert!(!direct(host, origin, extra), "{host} {origin} {extra:?}");
        }
    }
}
