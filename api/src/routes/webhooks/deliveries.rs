//! An endpoint's delivery log (every attempt with its time, status, latency and the first
//! bytes of the answer) and re-sending: one delivery, or every failed one since a time.

use std::collections::HashMap;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath, AppQuery},
    pagination::{Page, page_request},
    state::AppState,
};

use super::find;

/// Attempts shown per delivery, the latest.
const ATTEMPTS_SHOWN: i64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    Succeeded,
    /// Its retries are spent, or the endpoint answered 410 Gone.
    Failed,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AttemptResponse {
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status; `null` when no answer came (refused address, connection error, timeout).
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    /// The first 1 KiB of the answer's body.
    pub response_excerpt: String,
    /// What went wrong when there was no answer.
    pub error: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub event_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryResponse {
    /// The event's id, sent as `webhook-id`.
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: Uuid,
    pub status: DeliveryStatus,
    /// Attempts in its current schedule (a re-send starts a new one).
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Its latest attempts, oldest first.
    #[sqlx(skip)]
    pub attempt_log: Vec<AttemptResponse>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveriesParams {
    /// Only deliveries in this state.
    pub status: Option<DeliveryStatus>,
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendFailedRequest {
    /// Failed deliveries of events since this time are sent again.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResendFailedResponse {
    /// Deliveries queued again.
    pub resent: u64,
}

macro_rules! delivery_columns {
    () => {
        "event_id, event_type, order_id, status, attempts,
         CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
         last_attempt_at, created_at"
    };
}

#[utoipa::path(
    get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path), ListDeliveriesParams),
    responses(
        (status = 200, description = "Deliveries, newest first, each with its latest attempts", body = Page<DeliveryResponse>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
    AppQuery(params): AppQuery<ListDeliveriesParams>,
) -> ApiResult<Json<Page<DeliveryResponse>>> {
    let page = page_request(params.page, params.size)?;
    let mut conn = state.pool.acquire().await?;
    find(&mut conn, id).await?;
    macro_rules! filter {
        () => {
            " FROM webhook_deliveries WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)"
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", filter!()))
        .bind(id)
        .bind(params.status)
        .fetch_one(&mut *conn)
        .await?;
    let mut deliveries: Vec<DeliveryResponse> = sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        filter!(),
        " ORDER BY created_at DESC, event_id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(id)
    .bind(params.status)
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    attach_attempts(&mut conn, id, &mut deliveries).await?;
    Ok(Json(Page::new(deliveries, total, page)))
}

async fn attach_attempts(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    deliveries: &mut [DeliveryResponse],
) -> sqlx::Result<()> {
    let events: Vec<Uuid> = deliveries.iter().map(|d| d.event_id).collect();
    let attempts: Vec<AttemptResponse> = sqlx::query_as(
        "SELECT event_id, attempted_at, response_status, latency_ms, response_excerpt, error
         FROM (SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY id DESC) AS latest
               FROM webhook_attempts WHERE endpoint_id = $1 AND event_id = ANY($2)) a
         WHERE latest <= $3 ORDER BY id",
    )
    .bind(endpoint_id)
    .bind(events)
    .bind(ATTEMPTS_SHOWN)
    .fetch_all(conn)
    .await?;
    let mut by_event: HashMap<Uuid, Vec<AttemptResponse>> = HashMap::new();
    for attempt in attempts {
        by_event.entry(attempt.event_id).or_default().push(attempt);
    }
    for delivery in deliveries {
        delivery.attempt_log = by_event.remove(&delivery.event_id).unwrap_or_default();
    }
    Ok(())
}

/// Refuses re-sending to a disabled endpoint: the deliveries would only wait.
async fn enabled_endpoint(conn: &mut PgConnection, id: Uuid) -> ApiResult<()> {
    if find(conn, id).await?.enabled {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "endpoint_disabled",
            "The endpoint is disabled; enable it first, then re-send.",
        ))
    }
}

#[utoipa::path(
    post, path = "/api/webhooks/{id}/deliveries/{event_id}/resend", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("event_id" = Uuid, Path)),
    responses(
        (status = 202, description = "Queued with a fresh retry schedule and the same `webhook-id`", body = DeliveryResponse),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint or delivery", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is disabled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resend_delivery(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath((id, event_id)): AppPath<(Uuid, Uuid)>,
) -> ApiResult<(StatusCode, Json<DeliveryResponse>)> {
    let mut conn = state.pool.acquire().await?;
    enabled_endpoint(&mut conn, id).await?;
    let mut delivery: DeliveryResponse = sqlx::query_as(concat!(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE endpoint_id = $1 AND event_id = $2 RETURNING ",
        delivery_columns!()
    ))
    .bind(id)
    .bind(event_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("No such delivery."))?;
    attach_attempts(&mut conn, id, std::slice::from_mut(&mut delivery)).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

#[utoipa::path(
    post, path = "/api/webhooks/{id}/deliveries/resend-failed", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = ResendFailedRequest,
    responses(
        (status = 202, description = "Every failed delivery of an event since `since` queued again", body = ResendFailedResponse),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`since` missing or not RFC 3339", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resend_failed(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<ResendFailedRequest>,
) -> ApiResult<(StatusCode, Json<ResendFailedResponse>)> {
    let mut conn = state.pool.acquire().await?;
    enabled_endpoint(&mut conn, id).await?;
    let resent = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE endpoint_id = $1 AND status = 'failed' AND created_at >= $2",
    )
    .bind(id)
    .bind(body.since)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((StatusCode::ACCEPTED, Json(ResendFailedResponse { resent })))
}
