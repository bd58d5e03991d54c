//! `/health`: liveness (no dependencies) and readiness. Ready means orders can be accepted,
//! which needs PostgreSQL only: with RabbitMQ down they wait in the outbox, so the api
//! stays in rotation and says `degraded`.

use std::time::Duration;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ApiResult, Problem},
    state::AppState,
};

const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`, or `degraded` while the broker is down (orders are still accepted and
    /// published once it is back).
    pub status: &'static str,
    /// Always `up` in a 200 answer.
    pub database: &'static str,
    /// `up` or `down`.
    pub broker: &'static str,
    /// The RabbitMQ node this process publishes through (no credentials), while up.
    pub broker_node: Option<String>,
}

#[utoipa::path(
    get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is up", body = LiveResponse))
)]
pub async fn live() -> Json<LiveResponse> {
    Json(LiveResponse {
        status: "ok",
        service: "orderflow-api",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(
    get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "PostgreSQL answers, so orders are accepted; `broker` says \
            whether RabbitMQ does too (`status` is `degraded` when not)", body = ReadyResponse),
        (status = 503, description = "PostgreSQL is not reachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<ReadyResponse>> {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    let database_up = matches!(
        tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await,
        Ok(Ok(1))
    );
    if !database_up {
        return Err(ApiError::Unavailable("PostgreSQL is not reachable."));
    }
    let broker_node = state.broker.node();
    let broker_up = broker_node.is_some();
    Ok(Json(ReadyResponse {
        status: if broker_up { "ready" } else { "degraded" },
        database: "up",
        broker: if broker_up { "up" } else { "down" },
        broker_node,
    }))
}
