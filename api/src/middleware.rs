//! Request plumbing: a request id on every request, response and log line; one canonical
//! form for paths with and without a trailing slash; load shedding (in-flight limit and
//! request timeout); and the security headers every response carries.

use std::time::Instant;

use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{HeaderValue, Method, Uri, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request: the client's `x-request-id` when it is sane, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(Uuid::now_v7().to_string())))
    }
}

/// Only short ids of safe characters are trusted, so a client cannot forge log lines.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Assigns the request id, runs the request inside a span carrying it, logs the outcome
/// and echoes the id in the response.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| acceptable(value))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request finished");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Serves `/x/` as `/x` without a redirect. The docs UI keeps its own slash handling.
pub async fn trim_trailing_slash(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.starts_with("/docs") {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(value) = path_and_query.parse() {
            parts.path_and_query = Some(value);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    next.run(request).await
}

/// Sheds load instead of queueing it: beyond `MAX_IN_FLIGHT_REQUESTS` a request is answered
/// 503 at once, and one running longer than `REQUEST_TIMEOUT_MS` is answered 503 (writes
/// that must finish run detached, see `detach`). Health probes are exempt, so a busy
/// process is not mistaken for a dead one.
pub async fn shed_load(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/health") {
        return next.run(request).await;
    }
    let Ok(_permit) = state.guards.in_flight.clone().try_acquire_owned() else {
        tracing::warn!("in-flight request limit reached; shedding");
        metrics::counter!("orderflow_http_shed_total", "cause" => "in_flight").increment(1);
        return ApiError::Unavailable("The server is at capacity; retry shortly.").into_response();
    };
    let timeout = state.settings.http.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = timeout.as_secs_f64(), "request timed out");
            metrics::counter!("orderflow_http_shed_total", "cause" => "timeout").increment(1);
            ApiError::Unavailable("The request took too long; retry shortly.").into_response()
        }
    }
}

/// Records each routed request's duration by method, matched route (the template, so
/// ids do not multiply the series) and status class.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        // Any other method is a client's invention: one series for all of them.
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "1xx",
    };
    metrics::histogram!(
        "orderflow_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => class
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Exports the request histogram's `5xx` series of every documented operation before its
/// first request: the error-ratio alert (README) then sees the first server error, which a
/// series born with it would hide.
pub fn zero_error_series(document: &utoipa::openapi::OpenApi) {
    for (route, item) in &document.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, _) in operations.iter().filter(|(_, op)| op.is_some()) {
            // Registering the series is enough: it is exported with no samples.
            let _series = metrics::histogram!(
                "orderflow_http_request_duration_seconds",
                "method" => *method,
                "route" => route.clone(),
                "status" => "5xx"
            );
        }
    }
}

/// `X-Content-Type-Options: nosniff` everywhere; `Cache-Control: no-store` on everything
/// under `/api/auth`, whose answers hold tokens and account data.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let auth = request.uri().path().starts_with("/api/auth");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if auth {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
