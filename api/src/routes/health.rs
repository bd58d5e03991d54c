//! `/health`: liveness (no dependencies) and readiness (database and broker).

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
    pub status: &'static str,
    pub database: &'static str,
    pub broker: &'static str,
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
        (status = 200, description = "PostgreSQL and RabbitMQ answer", body = ReadyResponse),
        (status = 503, description = "A dependency is down; `detail` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<ReadyResponse>> {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    let database_up = matches!(
        tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await,
        Ok(Ok(1))
    );
    let broker_up = state.broker.is_connected();
    match (database_up, broker_up) {
        (true, true) => Ok(Json(ReadyResponse {
            status: "ready",
            database: "up",
            broker: "up",
        })),
        (false, true) => Err(ApiError::Unavailable("PostgreSQL is not reachable.")),
        (true, false) => Err(ApiError::Unavailable("RabbitMQ is not reachable.")),
        (false, false) => Err(ApiError::Unavailable(
            "PostgreSQL and RabbitMQ are not reachable.",
        )),
    }
}
