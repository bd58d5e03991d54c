//! The one error type of the HTTP layer, rendered as RFC 9457 `application/problem+json`.
//!
//! Variants carry only client-safe text; `Internal` keeps its cause for the log and answers
//! with an opaque 500.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid input field, named by its JSON path (`items[0].quantity`).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document, as sent to clients.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem (`/problems/validation`).
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Machine-readable reason (`price_changed`, `email_taken`, …).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict ({code}): {detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            detail: detail.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(self) -> Problem {
        let status = self.status();
        let (code, detail, errors) = match self {
            ApiError::BadRequest(detail) => ("malformed_request", detail, vec![]),
            ApiError::Validation(errors) => (
                "validation_failed",
                "The request has invalid fields; see `errors`.".to_owned(),
                errors,
            ),
            ApiError::Unauthorized(detail) => ("unauthorized", detail.to_owned(), vec![]),
            ApiError::Forbidden(detail) => ("forbidden", detail.to_owned(), vec![]),
            ApiError::NotFound(detail) => ("not_found", detail.to_owned(), vec![]),
            ApiError::MethodNotAllowed => (
                "method_not_allowed",
                "This path does not accept that method.".to_owned(),
                vec![],
            ),
            ApiError::Conflict { code, detail } => (code, detail, vec![]),
            ApiError::PayloadTooLarge => (
                "payload_too_large",
                "The request body is larger than this server accepts.".to_owned(),
                vec![],
            ),
            ApiError::UnsupportedMediaType(detail) => {
                ("unsupported_media_type", detail.to_owned(), vec![])
            }
            ApiError::TooManyRequests { retry_after_secs } => (
                "rate_limited",
                format!("Too many attempts; retry in {retry_after_secs} seconds."),
                vec![],
            ),
            ApiError::Unavailable(detail) => ("unavailable", detail.to_owned(), vec![]),
            ApiError::Internal(_) => (
                "internal_error",
                "Something went wrong on our side; it has been logged.".to_owned(),
                vec![],
            ),
        };
        Problem {
            problem_type: format!("/problems/{}", code.replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            code,
            errors,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// A database that cannot be reached is a 503 the client may retry; anything else is a bug.
    fn from(error: sqlx::Error) -> Self {
        // 57014: statement timeout; 55P03: lock wait timeout; 40001/40P01: serialization or deadlock.
        let overloaded = matches!(
            &error,
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("57014" | "55P03" | "40001" | "40P01"))
        );
        // Class 22 (data exception): a value PostgreSQL cannot store, such as a NUL character
        // in text. That is the client's input, not our fault.
        let unstorable = matches!(
            &error,
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22"))
        );
        if unstorable {
            tracing::info!(error = %error, "input refused by the database");
            return ApiError::invalid(
                "",
                "a value cannot be stored (out of range, or holds a NUL character)",
            );
        }
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::Unavailable("The database is unavailable; retry shortly.")
            }
            other if overloaded => {
                tracing::warn!(error = %other, "database busy");
                ApiError::Unavailable("The database is busy; retry shortly.")
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("database error")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let unauthorized = matches!(self, ApiError::Unauthorized(_));
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after_secs } => {
                metrics::counter!("orderflow_http_rate_limited_total").increment(1);
                Some(retry_after_secs.to_string())
            }
            ApiError::Unavailable(_) => Some("1".to_owned()),
            _ => None,
        };
        let mut response = (status, problem_json(&self.problem())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="orderflow""#),
            );
        }
        if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

fn problem_json(problem: &Problem) -> String {
    serde_json::to_string(problem).unwrap_or_else(|_| {
        r#"{"type":"/problems/internal-error","title":"Internal Server Error","status":500}"#
            .to_owned()
    })
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// The name of the violated constraint, when `error` is a unique violation.
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}
