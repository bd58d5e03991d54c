//! The Orderflow HTTP API: `app` builds the router from state; `serve` runs it until shutdown.

pub mod accounts;
pub mod application;
pub mod auth;
#[cfg(test)]
mod bench_scripts;
pub mod cli;
pub mod console;
pub mod detach;
pub mod error;
pub mod extract;
pub mod housekeeping;
pub mod idempotency;
pub mod live;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod routes;
pub mod state;
pub mod validation;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, header},
};
use common::config::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{error::ApiError, state::AppState};

/// The OpenAPI document and the routes it describes.
fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::router())
        .split_for_parts();
    openapi::add_common_responses(&mut document);
    (routes, document)
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (routes, openapi) = documented_routes();
    middleware::zero_error_series(&openapi);
    let body_limit = state.settings.http.body_limit_bytes;
    let cors = cors_layer(&state.settings);
    let shed_load = axum::middleware::from_fn_with_state(state.clone(), middleware::shed_load);
    // Without a listener of its own, `/metrics` is served here (undocumented: it is for
    // Prometheus, not API clients).
    let metrics = if state.settings.metrics.api_addr.is_none() {
        common::metrics::router()
    } else {
        Router::new()
    };
    let inner = routes
        .route("/", axum::routing::get(root))
        .merge(console::router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { ApiError::NotFound("No such route.") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .with_state(state)
        .merge(metrics);
    // Layers of an outer router run before routing, so the path is trimmed before it is
    // matched. The last layer added runs first: every answer, a shed one included, gets a
    // request id and the security headers.
    Router::new()
        .fallback_service(inner)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(middleware::trim_trailing_slash))
        .layer(shed_load)
        .layer(cors)
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn(middleware::request_context))
}

/// CORS from `CORS_ORIGINS` (validated at start-up). Credentials are never allowed: tokens
/// travel in the `Authorization` header, so `*` never meets cookies.
fn cors_layer(settings: &Settings) -> CorsLayer {
    let origins = &settings.http.cors_origins;
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(middleware::REQUEST_ID_HEADER),
        ])
        .expose_headers([HeaderName::from_static(middleware::REQUEST_ID_HEADER)])
}

/// Serves `app(state)` on `listener` until `shutdown` fires, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Open streams end as shutdown begins: a graceful stop waits for every response body.
    let streams_end = state.streams_end.clone();
    // The peer address feeds the per-client limits (see `auth::ClientIp`).
    let app = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            streams_end.cancel();
        })
        .await
}

/// `GET /`: where to find the docs and the console.
async fn root() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "service": "orderflow-api", "docs": "/docs", "openapi": "/openapi.json", "console": "/console/" }),
    )
}
