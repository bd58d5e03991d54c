//! Registering, changing and removing webhook endpoints, and rotating their secrets.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use common::webhooks::{EVENT_TYPES, generate_secret};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::AdminUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath, AppQuery},
    pagination::{Page, page_request},
    state::AppState,
    validation::Violations,
};

use super::{EndpointResponse, NO_ENDPOINT, endpoint_columns, find, target::check_target};

/// Endpoints at most; each event fans out to every one of them.
const MAX_ENDPOINTS: i64 = 50;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Where deliveries are POSTed: http(s), a public host (or one in `WEBHOOK_ALLOWED_HOSTS`).
    #[schema(max_length = 2048, format = "uri")]
    pub url: String,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `order.created`, `order.status_changed`, `order.cancelled`; empty or absent: all.
    pub event_types: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    #[schema(max_length = 2048, format = "uri")]
    pub url: Option<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Enabling clears the reason it was disabled and its run of failures.
    pub enabled: Option<bool>,
}

/// An endpoint just created, with the secret to verify its deliveries: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpointResponse {
    #[serde(flatten)]
    pub endpoint: EndpointResponse,
    /// `whsec_…`; store it now, it is not shown again.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecretResponse {
    /// The new `whsec_…` secret; shown this once.
    pub secret: String,
    /// Until then deliveries carry signatures by the old secret too.
    pub previous_secret_expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEndpointsParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
}

fn check_fields(description: Option<&str>, event_types: Option<&[String]>) -> ApiResult<()> {
    let mut violations = Violations::new();
    if let Some(description) = description {
        violations.length(description, "description", 0, 500);
    }
    for (i, kind) in event_types.unwrap_or_default().iter().enumerate() {
        violations.check(
            EVENT_TYPES.contains(&kind.as_str()),
            &format!("event_types[{i}]"),
            "must be order.created, order.status_changed or order.cancelled",
        );
    }
    violations.finish()
}

fn distinct(types: Option<Vec<String>>) -> Option<Vec<String>> {
    types.map(|mut types| {
        types.sort();
        types.dedup();
        types
    })
}

#[utoipa::path(
    post, path = "/api/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateEndpointRequest,
    responses(
        (status = 201, description = "Created; the secret is in this response only", body = CreatedEndpointResponse),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already 50 endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL (or a private address), description or event type", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    _: AdminUser,
    AppJson(body): AppJson<CreateEndpointRequest>,
) -> ApiResult<(StatusCode, Json<CreatedEndpointResponse>)> {
    check_fields(body.description.as_deref(), body.event_types.as_deref())?;
    let url = check_target(&body.url, &state.settings.webhooks.allowed_hosts).await?;
    let secret = generate_secret();
    let mut tx = state.pool.begin().await?;
    // Serialises creations, so the limit holds under concurrent requests.
    sqlx::query("LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_ENDPOINTS {
        return Err(ApiError::conflict(
            "too_many_endpoints",
            format!("There are already {MAX_ENDPOINTS} webhook endpoints; delete one first."),
        ));
    }
    let endpoint: EndpointResponse = sqlx::query_as(concat!(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, secret)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        endpoint_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(url)
    .bind(body.description.unwrap_or_default().trim())
    .bind(distinct(body.event_types).unwrap_or_default())
    .bind(body.enabled.unwrap_or(true))
    .bind(&secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpointResponse { endpoint, secret }),
    ))
}

#[utoipa::path(
    get, path = "/api/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(ListEndpointsParams),
    responses(
        (status = 200, description = "Endpoints, newest first", body = Page<EndpointResponse>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    _: AdminUser,
    AppQuery(params): AppQuery<ListEndpointsParams>,
) -> ApiResult<Json<Page<EndpointResponse>>> {
    let page = page_request(params.page, params.size)?;
    let mut conn = state.pool.acquire().await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&mut *conn)
        .await?;
    let items = sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
    ))
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(Page::new(items, total, page)))
}

#[utoipa::path(
    get, path = "/api/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "OK", body = EndpointResponse),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<EndpointResponse>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(find(&mut conn, id).await?))
}

#[utoipa::path(
    put, path = "/api/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = UpdateEndpointRequest,
    responses(
        (status = 200, description = "OK", body = EndpointResponse),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL (or a private address), description or event type", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<UpdateEndpointRequest>,
) -> ApiResult<Json<EndpointResponse>> {
    check_fields(body.description.as_deref(), body.event_types.as_deref())?;
    let url = match &body.url {
        Some(url) => Some(check_target(url, &state.settings.webhooks.allowed_hosts).await?),
        None => None,
    };
    let endpoint = sqlx::query_as(concat!(
        "UPDATE webhook_endpoints SET
             url = coalesce($2, url),
             description = coalesce($3, description),
             event_types = coalesce($4, event_types),
             enabled = coalesce($5, enabled),
             disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
             failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
             updated_at = now()
         WHERE id = $1 RETURNING ",
        endpoint_columns!()
    ))
    .bind(id)
    .bind(url)
    .bind(body.description.as_deref().map(str::trim))
    .bind(distinct(body.event_types))
    .bind(body.enabled)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound(NO_ENDPOINT))?;
    Ok(Json(endpoint))
}

#[utoipa::path(
    delete, path = "/api/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted, with its delivery log"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound(NO_ENDPOINT));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The new secret, shown this once; the old one keeps signing until `previous_secret_expires_at`", body = RotatedSecretResponse),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<RotatedSecretResponse>> {
    let secret = generate_secret();
    let overlap = state.settings.webhooks.secret_overlap;
    let previous_secret_expires_at = sqlx::query_scalar(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,
             previous_secret_expires_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 RETURNING previous_secret_expires_at",
    )
    .bind(id)
    .bind(&secret)
    .bind(overlap.as_secs_f64())
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound(NO_ENDPOINT))?;
    tracing::info!(endpoint_id = %id, "webhook secret rotated");
    Ok(Json(RotatedSecretResponse {
        secret,
        previous_secret_expires_at,
    }))
}
