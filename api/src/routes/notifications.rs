//! `/api/notifications`: what the workers told the signed-in user about their orders.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppPath, AppQuery},
    pagination::{Page, page_request},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct NotificationResponse {
    pub id: Uuid,
    pub order_id: Option<Uuid>,
    /// e.g. `order_confirmed`, `order_shipped`.
    pub kind: String,
    pub message: String,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListNotificationsParams {
    /// 1 to 10,000.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<i64>,
    /// 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
    /// Only notifications not yet marked read.
    pub unread: Option<bool>,
}

macro_rules! notification_columns {
    () => {
        "id, order_id, kind, message, read_at, created_at"
    };
}

#[utoipa::path(
    get, path = "/api/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListNotificationsParams),
    responses((status = 200, description = "The caller's notifications, newest first", body = Page<NotificationResponse>))
)]
pub async fn list_notifications(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(params): AppQuery<ListNotificationsParams>,
) -> ApiResult<Json<Page<NotificationResponse>>> {
    let page = page_request(params.page, params.size)?;
    let unread_only = params.unread.unwrap_or(false);
    let mut conn = state.pool.acquire().await?;
    macro_rules! filter {
        () => {
            " FROM notifications WHERE user_id = $1 AND ($2 = false OR read_at IS NULL)"
        };
    }
    let total: i64 = sqlx::query_scalar(concat!("SELECT count(*)", filter!()))
        .bind(user.id)
        .bind(unread_only)
        .fetch_one(&mut *conn)
        .await?;
    let items = sqlx::query_as(concat!(
        "SELECT ",
        notification_columns!(),
        filter!(),
        " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user.id)
    .bind(unread_only)
    .bind(page.size)
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(Page::new(items, total, page)))
}

#[utoipa::path(
    post, path = "/api/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "OK", body = NotificationResponse),
        (status = 404, description = "No such notification of the caller", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mark_read(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<NotificationResponse>> {
    let notification = sqlx::query_as(concat!(
        "UPDATE notifications SET read_at = COALESCE(read_at, now()) WHERE id = $1 AND user_id = $2 RETURNING ",
        notification_columns!()
    ))
    .bind(id)
    .bind(user.id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("No such notification."))?;
    Ok(Json(notification))
}

#[utoipa::path(
    post, path = "/api/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 204, description = "Every notification of the caller is marked read"))
)]
pub async fn mark_all_read(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<StatusCode> {
    sqlx::query("UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL")
        .bind(user.id)
        .execute(&state.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
