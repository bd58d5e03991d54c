//! `POST /api/auth/stream-ticket`: a single-use ticket for opening a live stream from a
//! browser's `EventSource`, which cannot send the `Authorization` header.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::CurrentUser,
    error::{ApiResult, Problem},
    live::tickets,
    state::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTicket {
    /// Put it in the stream's URL as `?ticket=`; good for one stream.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(
    post, path = "/api/auth/stream-ticket", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 201, description = "A ticket good for one stream within 60 seconds", body = StreamTicket),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream_ticket(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<(StatusCode, Json<StreamTicket>)> {
    let mut conn = state.pool.acquire().await?;
    let (ticket, expires_at) = tickets::issue(&mut conn, &user).await?;
    Ok((
        StatusCode::CREATED,
        Json(StreamTicket { ticket, expires_at }),
    ))
}
