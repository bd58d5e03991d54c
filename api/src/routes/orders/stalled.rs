//! Resolving a stalled order (admins): re-drive its unapplied commands, or skip the one it
//! is stuck on with a reason. The same actions as `worker orders redrive|skip`.

use axum::{Json, extract::State};
use common::{
    events::Actor,
    stall::{self, ResolveError, Resolved},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::NO_ORDER;
use crate::{
    auth::{AdminUser, CurrentUser},
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath},
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    /// Why the command is given up; kept on the order's timeline.
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub reason: String,
}

/// What the resolution did; the order moves again once the workers apply what was re-sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct StallResolved {
    pub order_id: Uuid,
    /// The command recorded as skipped (skip only).
    pub skipped_seq: Option<i64>,
    /// Unapplied commands published again.
    pub requeued_commands: u64,
}

#[utoipa::path(
    post, path = "/api/orders/{id}/redrive", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Its unapplied commands are published again and the flag is cleared", body = StallResolved),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not stalled (`not_stalled`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn redrive_order(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<StallResolved>> {
    let mut tx = state.pool.begin().await?;
    let resolved = stall::redrive(&mut tx, id, &actor_of(&admin))
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(Json(response(id, resolved)))
}

#[utoipa::path(
    post, path = "/api/orders/{id}/skip", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = SkipRequest,
    responses(
        (status = 200, description = "The command is recorded as skipped; the ones after it are published again", body = StallResolved),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not stalled (`not_stalled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn skip_command(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<SkipRequest>,
) -> ApiResult<Json<StallResolved>> {
    let reason = body.reason.trim();
    Violations::new()
        .length(reason, "reason", 1, 500)
        .finish()?;
    let mut tx = state.pool.begin().await?;
    let resolved = stall::skip(&mut tx, id, &actor_of(&admin), reason)
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(Json(response(id, resolved)))
}

fn actor_of(admin: &CurrentUser) -> Actor {
    Actor::user(admin.id, admin.role)
}

fn refusal(error: ResolveError) -> ApiError {
    match error {
        ResolveError::NotFound => ApiError::NotFound(NO_ORDER),
        ResolveError::NotStalled => ApiError::conflict(
            "not_stalled",
            "The order is not stalled: its commands are being applied.",
        ),
        ResolveError::Database(error) => error.into(),
    }
}

fn response(order_id: Uuid, resolved: Resolved) -> StallResolved {
    StallResolved {
        order_id,
        skipped_seq: resolved.skipped_seq,
        requeued_commands: resolved.requeued_commands,
    }
}
