//! API errors and the one place they become HTTP responses, in Kuma's error body:
//! `{"type":"/std-errors","status","title","detail","invalid_parameters":[{"field","reason"}],
//! "details","causes":[{"field","message"}]}` (the last two are Kuma's deprecated copies).

use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kuma_core::ResourceType;
use kuma_core::store;
use kuma_core::validate::{ValidationError, Violation};
use serde_json::json;

use crate::manager::ManagerError;
use crate::tokens::TokenError;

/// A failed request: status, a short title, a detail and the offending fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    /// Fields of the request that are wrong, with why.
    pub invalid: Vec<Violation>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            title: title.into(),
            detail: detail.into(),
            invalid: Vec::new(),
        }
    }

    /// Adds an offending field.
    pub fn with_field(mut self, field: impl Into<String>, reason: impl Into<String>) -> Self {
        self.invalid.push(Violation {
            field: field.into(),
            message: reason.into(),
        });
        self
    }

    /// 400 for a resource (or request) that breaks validation rules, as Kuma answers it:
    /// title `Could not process a resource`, detail `Resource is not valid`, every violation
    /// in `invalid_parameters`.
    pub fn validation(e: ValidationError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Could not process a resource".into(),
            detail: "Resource is not valid".into(),
            invalid: e.violations,
        }
    }

    /// 400 for a body that does not decode as its type (a wrong JSON type, an unknown enum
    /// value): Kuma's `Bad Request` / `invalid <Type> object: "<error>"`; beyond Kuma, every
    /// offending field is also listed in `invalid_parameters`.
    pub fn malformed(rtype: ResourceType, e: ValidationError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Bad Request".into(),
            detail: format!("invalid {rtype} object: {:?}", e.summary()),
            invalid: e.violations,
        }
    }

    /// 400 for a bad query parameter.
    pub fn bad_parameter(title: &str, field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(StatusCode::BAD_REQUEST, title, format!("{field}: {reason}"))
            .with_field(field, reason)
    }

    /// 400 for a body that is not JSON (serde's message names line and column).
    pub fn malformed_json(e: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Invalid JSON",
            format!("cannot parse the request body as JSON: {e}"),
        )
    }

    /// 400 for a resource body that is not JSON, in Kuma's words: `Bad Request`,
    /// `invalid <Type> object: "<error>"` (serde's error names line and column).
    pub fn resource_not_json(rtype: ResourceType, e: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("invalid {rtype} object: {:?}", e.to_string()),
        )
    }

    /// The body could not be read: too large (413) or broken.
    pub fn body(rejection: &BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "Request body too large",
                format!(
                    "the request body exceeds the limit of {} bytes",
                    super::MAX_BODY_BYTES
                ),
            )
        } else {
            Self::new(status, "Invalid request body", rejection.body_text())
        }
    }

    /// 401: no acceptable credentials.
    pub fn unauthenticated(title: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, title, detail)
    }

    /// 403: the caller may not do this.
    pub fn access_denied(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Access Denied", detail)
    }

    /// 404 for a path that names no endpoint or no resource type.
    pub fn unknown_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no API endpoint at {path}"),
        )
    }

    /// 405 for a method the path does not support.
    pub fn method_not_allowed(method: &Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            format!("{method} is not supported on {path}"),
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e)
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Validation(v) => Self::validation(v),
            ManagerError::MeshNotFound(mesh) => Self::new(
                StatusCode::BAD_REQUEST,
                "Mesh is not found",
                format!("mesh of name {mesh} is not found"),
            )
            .with_field("mesh", format!("mesh of name {mesh} is not found")),
            ManagerError::ReadOnly(t) => Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!("{t} is read-only: only the control plane writes it"),
            ),
            ManagerError::NotInThisMode(detail) => Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                detail.to_string(),
            ),
            ManagerError::Store(e) => e.into(),
            e @ ManagerError::MeshSetup { .. } => {
                tracing::warn!(error = %e, "mesh written but not set up");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::InvalidRequest(v) => Self {
                status: StatusCode::BAD_REQUEST,
                title: "Invalid request".into(),
                detail: v.summary(),
                invalid: v.violations,
            },
            TokenError::MeshNotFound(mesh) => ManagerError::MeshNotFound(mesh).into(),
            e @ (TokenError::NoSigningKey { .. } | TokenError::SigningKeyNotFound { .. }) => {
                Self::new(
                    StatusCode::NOT_FOUND,
                    "Signing key not found",
                    e.to_string(),
                )
            }
            e @ TokenError::Store(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                e.to_string(),
            ),
            e @ TokenError::Key(_) => {
                tracing::warn!(error = %e, "could not issue a token");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Could not issue a token",
                    e.to_string(),
                )
            }
            // A token presented by a caller was refused.
            e => Self::unauthenticated("Invalid authentication data", e.to_string()),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        let (status, title) = match &e {
            store::Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            store::Error::AlreadyExists(_) => (StatusCode::CONFLICT, "Resource already exists"),
            store::Error::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            store::Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Store unavailable"),
            store::Error::Invalid(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "store failure answered {status}");
        }
        Self::new(status, title, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let invalid: Vec<_> = self
            .invalid
            .iter()
            .map(|v| json!({"field": v.field, "reason": v.message}))
            .collect();
        let causes: Vec<_> = self
            .invalid
            .iter()
            .map(|v| json!({"field": v.field, "message": v.message}))
            .collect();
        let body = json!({
            "type": "/std-errors",
            "status": self.status.as_u16(),
            "title": self.title,
            "detail": self.detail,
            "invalid_parameters": invalid,
            "details": self.detail,
            "causes": causes,
        });
        (self.status, axum::Json(body)).into_response()
    }
}
