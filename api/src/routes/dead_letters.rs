//! `/api/dead-letters` (admins): the messages workers could not apply, read from the
//! dead-letter queue without taking them off it, and re-driven to the workers. A
//! dead-lettered command also stalls its order (see `/api/orders?stalled=true`); here are
//! the letters themselves, including those that name no order at all.

use std::sync::Arc;

use axum::{Json, extract::State};
use common::dead_letters::{self, DeadLetter, Selection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AdminUser,
    detach::detached,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppQuery},
    state::AppState,
};

/// Letters listed at most per request.
const MAX_LIST: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letters))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeadLettersParams {
    /// 1 to 200 (default 50), oldest first.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// Which letters to re-drive: the ones named, or all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Message ids (each letter's `message_id`, the event id).
    #[schema(max_items = 1000)]
    pub message_ids: Option<Vec<String>>,
    /// `true`: every letter in the queue.
    pub all: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redriven {
    /// Letters published back to the workers.
    pub redriven: usize,
}

#[utoipa::path(
    get, path = "/api/dead-letters", tag = "operations", security(("bearer" = [])),
    params(ListDeadLettersParams),
    responses(
        (status = 200, description = "Dead letters, oldest first, with why each was dead-lettered; they stay in the queue", body = Vec<DeadLetter>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "RabbitMQ cannot be reached, or another dead-letter operation is running", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    _: AdminUser,
    AppQuery(params): AppQuery<ListDeadLettersParams>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 200"));
    }
    let settings = state.settings.clone();
    let letters = exclusively(
        &state,
        async move { dead_letters::list(&settings, limit).await },
    )
    .await?;
    Ok(Json(letters))
}

#[utoipa::path(
    post, path = "/api/dead-letters/redrive", tag = "operations", security(("bearer" = [])),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "The letters were published back to the workers (each removed from the dead-letter queue once the broker confirmed its copy)", body = Redriven),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither `message_ids` nor `all: true`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "RabbitMQ cannot be reached, or another dead-letter operation is running", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn redrive_dead_letters(
    State(state): State<AppState>,
    _: AdminUser,
    AppJson(body): AppJson<RedriveRequest>,
) -> ApiResult<Json<Redriven>> {
    let selection = match (body.all, body.message_ids) {
        (Some(true), None) => Selection::All,
        (None | Some(false), Some(ids)) if !ids.is_empty() && ids.len() <= 1_000 => {
            Selection::MessageIds(ids)
        }
        _ => {
            return Err(ApiError::invalid(
                "message_ids",
                "name 1 to 1,000 message ids, or send `all: true` alone",
            ));
        }
    };
    let settings = state.settings.clone();
    // Finishes even if the client hangs up: a letter is removed only once its copy is safe,
    // and stopping halfway would leave the two counts of "re-driven" to guess.
    let redriven = exclusively(&state, async move {
        dead_letters::redrive(&settings, selection).await
    })
    .await?;
    Ok(Json(Redriven { redriven }))
}

/// Runs a dead-letter operation (its own broker connection) on its own task, one at a
/// time per process: a second one meanwhile gets 503 rather than another connection.
async fn exclusively<T: Send + 'static>(
    state: &AppState,
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> ApiResult<T> {
    let Ok(permit) = Arc::clone(&state.guards.dead_letters).try_acquire_owned() else {
        return Err(ApiError::Unavailable(
            "Another dead-letter operation is running; retry shortly.",
        ));
    };
    detached(async move {
        let _permit = permit;
        work.await.map_err(|error| {
            tracing::warn!(error = format!("{error:#}"), "dead-letter operation failed");
            ApiError::Unavailable("RabbitMQ cannot be reached; retry shortly.")
        })
    })
    .await
}
