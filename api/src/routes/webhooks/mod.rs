//! `/api/webhooks`: admins register endpoints that receive signed order events, rotate
//! their secrets, read each endpoint's delivery log and re-send deliveries.

mod deliveries;
mod endpoints;
mod target;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            endpoints::list_endpoints,
            endpoints::create_endpoint
        ))
        .routes(routes!(
            endpoints::get_endpoint,
            endpoints::update_endpoint,
            endpoints::delete_endpoint
        ))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::resend_delivery))
        .routes(routes!(deliveries::resend_failed))
}

/// An endpoint as admins see it; its secret is shown only when created or rotated.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct EndpointResponse {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// The event types it receives; empty means every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why the system switched it off (`410 Gone`, failing too long), if it did.
    pub disabled_reason: Option<String>,
    /// When its current run of failed attempts began; `null` while deliveries succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until then deliveries are signed with the previous secret too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! endpoint_columns {
    () => {
        "id, url, description, event_types, enabled, disabled_reason, failing_since,
         CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
             AS previous_secret_expires_at,
         created_at, updated_at"
    };
}
use endpoint_columns;

const NO_ENDPOINT: &str = "No such webhook endpoint.";

async fn find(conn: &mut PgConnection, id: Uuid) -> ApiResult<EndpointResponse> {
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound(NO_ENDPOINT))
}
