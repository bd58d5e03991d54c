//! Status changes and cancellations: checked against the order's projected status, then
//! queued for the workers (202) in one conditional statement. Each gets the order's next
//! sequence number, so workers apply them in the order they were accepted.

use axum::{Json, extract::State, http::StatusCode};
use common::{
    domain::{OrderStatus, status::Initiator},
    events::{Actor, CancelRequested, Envelope, EventType, StatusChangeRequested},
    timeline::EntryKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{NO_ORDER, owner_filter};
use crate::{
    auth::{CurrentUser, StaffUser},
    detach::detached,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, AppPath},
    middleware::RequestId,
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequest {
    /// `processing`, `shipped` (needs a tracking number), `delivered`, `refunded` or `cancelled`.
    pub status: OrderStatus,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub tracking_number: Option<String>,
}

/// A queued command: the worker applies it shortly; follow it in `/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    pub order_id: Uuid,
    pub event_id: Uuid,
    /// The order's status now.
    pub status: OrderStatus,
    /// The status once this command is applied.
    pub requested_status: OrderStatus,
    /// Position of this command in the order's sequence.
    pub seq: i64,
}

#[derive(sqlx::FromRow)]
struct CommandTarget {
    status: OrderStatus,
    projected_status: OrderStatus,
    tracking_number: Option<String>,
    stalled_reason: Option<String>,
    last_seq: i64,
}

#[utoipa::path(
    patch, path = "/api/orders/{id}/status", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = StatusChangeRequest,
    responses(
        (status = 202, description = "Queued for a worker", body = CommandAccepted),
        (status = 403, description = "Customers cannot change status", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Impossible from the projected status (`invalid_transition`), or the order is stalled until staff resolve it (`order_stalled`), or other changes were accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Shipping without a tracking number, or invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_status(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<StatusChangeRequest>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let mut v = Violations::new();
    if let Some(note) = &body.note {
        v.length(note, "note", 0, 1000);
    }
    if let Some(tracking) = &body.tracking_number {
        v.length(tracking.trim(), "tracking_number", 1, 100);
    }
    v.finish()?;
    let command = if body.status == OrderStatus::Cancelled {
        Command::Cancel { reason: body.note }
    } else {
        Command::Change(StatusChangeRequested {
            status: body.status,
            note: body.note,
            tracking_number: body.tracking_number.map(|t| t.trim().to_owned()),
        })
    };
    detached(async move { enqueue(&state, &user, &request_id, id, command).await }).await
}

#[utoipa::path(
    delete, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Cancellation queued for a worker", body = CommandAccepted),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late to cancel (customers: once processing; staff: once shipped), or the order is stalled (`order_stalled`), or other changes were accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    user: CurrentUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let reason = format!("cancelled by {}", user.role.as_str());
    let command = Command::Cancel {
        reason: Some(reason),
    };
    detached(async move { enqueue(&state, &user, &request_id, id, command).await }).await
}

enum Command {
    Change(StatusChangeRequested),
    Cancel { reason: Option<String> },
}

impl Command {
    fn metric_label(&self) -> &'static str {
        match self {
            Command::Change(_) => "status_change",
            Command::Cancel { .. } => "cancel",
        }
    }
}

/// Queues `command` and counts the answer by command and outcome.
async fn enqueue(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    order_id: Uuid,
    command: Command,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let label = command.metric_label();
    let result = write_command(state, user, request_id, order_id, command).await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(ApiError::Conflict { .. } | ApiError::Validation(_)) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("orderflow_order_commands_total", "command" => label, "outcome" => outcome)
        .increment(1);
    result
}

/// How often a command is re-read and re-checked after another command for the same order
/// was accepted between its read and its write.
const MAX_RACES: usize = 8;

/// Queues a command in one statement, only if the order is still as it was read (same
/// sequence number, not stalled): its `last_seq` is the version the check was made against.
const QUEUE_COMMAND_SQL: &str = "WITH bumped AS (
         UPDATE orders SET projected_status = $2, last_seq = $3, updated_at = now()
         WHERE id = $1 AND last_seq = $3 - 1 AND stalled_at IS NULL
         RETURNING id
     ), logged AS (
         INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq)
         SELECT $4, id, $5, $6, $2, $7, $8, $9, $3 FROM bumped
     ), queued AS (
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT $10, id, $3, $11, $12 FROM bumped
     )
     SELECT count(*) FROM bumped";

/// Reads the order, checks the command against it, and queues it in one conditional
/// statement: two round trips and no transaction. A command that raced another for the
/// same order is read and checked again, so sequence numbers still follow acceptance.
async fn write_command(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    order_id: Uuid,
    command: Command,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let target = match &command {
        Command::Change(change) => change.status,
        Command::Cancel { .. } => OrderStatus::Cancelled,
    };
    let needs_tracking = match &command {
        Command::Change(change) => {
            target.requires_tracking_number() && change.tracking_number.is_none()
        }
        Command::Cancel { .. } => false,
    };
    let actor = Actor {
        user_id: Some(user.id),
        role: user.role.as_str().to_owned(),
    };
    let (kind, event_type, reason, payload) = match command {
        Command::Change(change) => (
            EntryKind::StatusChangeRequested,
            EventType::StatusChangeRequested,
            change.note.clone(),
            serde_json::to_value(change),
        ),
        Command::Cancel { reason } => (
            EntryKind::CancelRequested,
            EventType::CancelRequested,
            reason.clone(),
            serde_json::to_value(CancelRequested { reason }),
        ),
    };
    let payload = payload.map_err(anyhow::Error::from)?;
    for _ in 0..MAX_RACES {
        let order: CommandTarget = sqlx::query_as(
            "SELECT status, projected_status, tracking_number, stalled_reason, last_seq FROM orders
             WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2)",
        )
        .bind(order_id)
        .bind(owner_filter(user))
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound(NO_ORDER))?;
        check(&order, target, user, needs_tracking)?;
        let seq = order.last_seq + 1;
        let envelope = Envelope::new(
            event_type,
            order_id,
            seq,
            actor.clone(),
            request_id,
            payload.clone(),
        );
        let body = serde_json::to_value(&envelope).map_err(anyhow::Error::from)?;
        let queued: i64 = sqlx::query_scalar(QUEUE_COMMAND_SQL)
            .bind(order_id)
            .bind(target)
            .bind(seq)
            .bind(Uuid::now_v7())
            .bind(kind.as_str())
            .bind(order.projected_status)
            .bind(actor.user_id)
            .bind(&actor.role)
            .bind(&reason)
            .bind(envelope.event_id)
            .bind(event_type.routing_key())
            .bind(body)
            .fetch_one(&state.pool)
            .await?;
        if queued == 1 {
            return Ok(accepted(state, order_id, &envelope, order.status, target));
        }
    }
    Err(ApiError::conflict(
        "concurrent_change",
        "Other changes to this order were accepted at the same moment; retry.",
    ))
}

/// Whether `user` may ask for `target` now, judged against the order as read.
fn check(
    order: &CommandTarget,
    target: OrderStatus,
    user: &CurrentUser,
    needs_tracking: bool,
) -> ApiResult<()> {
    if let Some(reason) = &order.stalled_reason {
        // Customers learn that staff are on it, not the internal reason.
        let detail = if user.role.is_staff() {
            format!("The order is stalled ({reason}); re-drive or skip its command first.")
        } else {
            "The order is being reviewed by the store; changes are paused until then.".to_owned()
        };
        return Err(ApiError::conflict("order_stalled", detail));
    }
    if let Err(refusal) = order
        .projected_status
        .transition(target, Initiator::User(user.role))
    {
        return Err(ApiError::conflict(
            "invalid_transition",
            refusal.to_string(),
        ));
    }
    if needs_tracking && order.tracking_number.is_none() {
        return Err(ApiError::invalid(
            "tracking_number",
            "is required to mark an order shipped",
        ));
    }
    Ok(())
}

fn accepted(
    state: &AppState,
    order_id: Uuid,
    envelope: &Envelope,
    status: OrderStatus,
    target: OrderStatus,
) -> (StatusCode, Json<CommandAccepted>) {
    let seq = envelope.seq;
    state.outbox_wake.notify_one();
    tracing::info!(%order_id, seq, requested = %target, "order command queued");
    (
        StatusCode::ACCEPTED,
        Json(CommandAccepted {
            order_id,
            event_id: envelope.event_id,
            status,
            requested_status: target,
            seq,
        }),
    )
}
