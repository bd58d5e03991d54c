//! Status changes, cancellations, money commands and parcels: checked against the order's
//! projected state, then queued for the workers (202) in one conditional statement. Each gets the
//! order's next sequence number, so workers apply them in the order they were accepted.

use std::collections::HashMap;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use common::{
    domain::{
        ActorKind, FulfillmentStatus, Money, OrderStatus, Payment, PaymentStatus,
        fulfillment::{self, LineQuantity, LineUnits, UnitsError},
    },
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
    idempotency::{self, Created, IdempotencyKey},
    middleware::RequestId,
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequest {
    /// `processing`, `shipped` (needs a tracking number), `delivered` or `cancelled`; an order
    /// becomes `refunded` once refunds give back everything captured.
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
    /// The parcel the command ships or updates (`/api/orders/{id}/fulfillments/{fulfillment_id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulfillment_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct CommandTarget {
    status: OrderStatus,
    projected_status: OrderStatus,
    tracking_number: Option<String>,
    stalled_reason: Option<String>,
    last_seq: i64,
    total_amount_minor: i64,
    amount_authorized_minor: i64,
    amount_captured_minor: i64,
    refunds_accepted_minor: i64,
    /// For a parcel or cancelled units: the order's lines, `taken` being what accepted
    /// parcels and cancellations claimed.
    #[sqlx(skip)]
    lines: Vec<LineUnits>,
    /// For cancelled units: each line's unit price.
    #[sqlx(skip)]
    prices: HashMap<Uuid, i64>,
    /// For a parcel's update: its status now, if the order has it.
    #[sqlx(skip)]
    parcel: Option<FulfillmentStatus>,
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
    v.check(
        body.status != OrderStatus::PartiallyShipped,
        "status",
        "is set by shipping parcels (POST /api/orders/{id}/fulfillments)",
    );
    v.finish()?;
    let queued = if body.status == OrderStatus::Cancelled {
        Queued::cancel(body.note)?
    } else {
        let tracking_number = body.tracking_number.map(|t| t.trim().to_owned());
        Queued {
            kind: EntryKind::StatusChangeRequested,
            event_type: EventType::StatusChangeRequested,
            reason: body.note.clone(),
            asks: Asks::Status {
                to: body.status,
                needs_tracking: body.status.requires_tracking_number() && tracking_number.is_none(),
            },
            payload: json(StatusChangeRequested {
                status: body.status,
                note: body.note,
                tracking_number,
            })?,
        }
    };
    detached(async move { enqueue(&state, &user, &request_id, id, queued, None).await }).await
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
    let queued = Queued::cancel(Some(format!("cancelled by {}", user.role.as_str())))?;
    detached(async move { enqueue(&state, &user, &request_id, id, queued, None).await }).await
}

/// A command about to take an order's next `seq`: its timeline entry, its event, and what
/// it asks of the order.
pub(super) struct Queued {
    pub kind: EntryKind,
    pub event_type: EventType,
    pub reason: Option<String>,
    pub payload: serde_json::Value,
    pub asks: Asks,
}

/// What a command asks of an order, checked before it is queued.
pub(super) enum Asks {
    /// A status change (cancellation included); `needs_tracking` when shipping without a
    /// tracking number in the request.
    Status {
        to: OrderStatus,
        needs_tracking: bool,
    },
    /// Money received by hand: at most what is still to pay.
    Receipt(Money),
    /// Money given back: at most what is captured and not yet refunded or being refunded.
    Refund(Money),
    /// Take now what the provider holds: something must be authorised and not captured.
    Capture,
    /// Ship a parcel: the order is being prepared or partly shipped, and each line fits
    /// what is not claimed yet.
    Parcel { id: Uuid, lines: Vec<LineQuantity> },
    /// Record what became of a parcel the order has.
    ParcelUpdate { id: Uuid, status: FulfillmentStatus },
    /// Cancel some units: the order allows it for the user, each line fits what is not
    /// claimed yet, and no more is captured than the order would come to.
    CancelUnits(Vec<LineQuantity>),
}

impl Asks {
    fn parcel_id(&self) -> Option<Uuid> {
        match self {
            Asks::Parcel { id, .. } | Asks::ParcelUpdate { id, .. } => Some(*id),
            _ => None,
        }
    }
}

impl Queued {
    fn cancel(reason: Option<String>) -> ApiResult<Queued> {
        Ok(Queued {
            kind: EntryKind::CancelRequested,
            event_type: EventType::CancelRequested,
            reason: reason.clone(),
            asks: Asks::Status {
                to: OrderStatus::Cancelled,
                needs_tracking: false,
            },
            payload: json(CancelRequested { reason })?,
        })
    }

    fn metric_label(&self) -> &'static str {
        match self.event_type {
            EventType::CancelRequested => "cancel",
            EventType::PaymentRecorded => "payment",
            EventType::RefundRequested => "refund",
            EventType::CaptureRequested => "capture",
            EventType::FulfillmentRequested => "fulfillment",
            EventType::FulfillmentUpdateRequested => "fulfillment_update",
            EventType::UnitsCancelRequested => "units_cancel",
            _ => "status_change",
        }
    }
}

/// An order has a line per product; a parcel or cancellation names each at most once.
const MAX_LINES: usize = 100;

/// Checks that a parcel's or a cancellation's `lines` are not more than an order can have;
/// returns the units they name, in words for the timeline ("1 unit", "3 units").
pub(super) fn units_named(v: &mut Violations, lines: &[LineQuantity]) -> String {
    v.check(lines.len() <= MAX_LINES, "lines", "holds at most 100 lines");
    match lines.iter().map(|line| line.quantity.max(0)).sum::<i32>() {
        1 => "1 unit".to_owned(),
        units => format!("{units} units"),
    }
}

/// A payload as the envelope carries it.
pub(super) fn json(payload: impl Serialize) -> ApiResult<serde_json::Value> {
    Ok(serde_json::to_value(payload).map_err(anyhow::Error::from)?)
}

/// Queues `queued` (storing the answer for `key` in the same transaction, when there is
/// one) and counts the answer by command and outcome.
pub(super) async fn enqueue(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    order_id: Uuid,
    queued: Queued,
    key: Option<&IdempotencyKey>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let label = queued.metric_label();
    let result = write_command(state, user, request_id, order_id, queued, key).await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(ApiError::Conflict { .. } | ApiError::Validation(_)) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("orderflow_order_commands_total", "command" => label, "outcome" => outcome)
        .increment(1);
    result
}

/// Queues `queued` once per `Idempotency-Key` (when the request `headers` carry one): the
/// same key with the same body (`raw`) replays the first answer.
pub(super) async fn enqueue_once(
    state: AppState,
    user: CurrentUser,
    request_id: String,
    order_id: Uuid,
    queued: Queued,
    headers: &HeaderMap,
    raw: &serde_json::Value,
) -> ApiResult<Response> {
    let queuing = idempotency::once(state.pool.clone(), user.id, headers, raw, |key| {
        let state = state.clone();
        async move { enqueue(&state, &user, &request_id, order_id, queued, key.as_ref()).await }
    });
    Ok(match queuing.await? {
        Created::Replayed(response) => response,
        Created::New(accepted) => accepted.into_response(),
    })
}

/// How often a command is re-read and re-checked after another command for the same order
/// was accepted between its read and its write.
const MAX_RACES: usize = 8;

/// Queues a command in one statement, only if the order is still as it was read (same
/// sequence number, not stalled): its `last_seq` is the version the check was made against.
/// A refund (`$13`, 0 for other commands) also counts against what may still be refunded,
/// and is not queued when that would exceed what is captured. A parcel claims its units of
/// the order's lines (`$14`, `$15`; empty for other commands): the next parcel is checked
/// against what is left unclaimed, and the lines' checks refuse a claim beyond a line's
/// quantity.
const QUEUE_COMMAND_SQL: &str = "WITH bumped AS (
         UPDATE orders SET projected_status = $2, last_seq = $3, updated_at = now(),
             refunds_accepted_minor = refunds_accepted_minor + $13
         WHERE id = $1 AND last_seq = $3 - 1 AND stalled_at IS NULL
           AND amount_captured_minor - refunds_accepted_minor >= $13
         RETURNING id
     ), logged AS (
         INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq)
         SELECT $4, id, $5, $6, $2, $7, $8, $9, $3 FROM bumped
     ), queued AS (
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT $10, id, $3, $11, $12 FROM bumped
     ), claimed AS (
         UPDATE order_items i SET quantity_claimed = i.quantity_claimed + u.quantity
         FROM unnest($14::uuid[], $15::int[]) AS u(id, quantity), bumped
         WHERE i.id = u.id AND i.order_id = bumped.id
     )
     SELECT count(*) FROM bumped";

/// Reads the order, checks the command against it, and queues it in one conditional
/// statement: two round trips and no transaction (one, with an `Idempotency-Key`). A
/// command that raced another for the same order is read and checked again, so sequence
/// numbers still follow acceptance.
async fn write_command(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    order_id: Uuid,
    queued: Queued,
    key: Option<&IdempotencyKey>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let actor = Actor::user(user.id, user.role);
    let refund = match queued.asks {
        Asks::Refund(amount) => amount.minor(),
        _ => 0,
    };
    let claims: &[LineQuantity] = match &queued.asks {
        Asks::Parcel { lines, .. } | Asks::CancelUnits(lines) => lines,
        _ => &[],
    };
    for _ in 0..MAX_RACES {
        let mut order: CommandTarget = sqlx::query_as(
            "SELECT status, projected_status, tracking_number, stalled_reason, last_seq,
                    total_amount_minor, amount_authorized_minor, amount_captured_minor,
                    refunds_accepted_minor
             FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2)",
        )
        .bind(order_id)
        .bind(owner_filter(user))
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound(NO_ORDER))?;
        // Read after the order: a parcel accepted since then changed its `last_seq`, so
        // the statement below would not queue this one on stale lines.
        match &queued.asks {
            Asks::Parcel { .. } | Asks::CancelUnits(_) => {
                (order.lines, order.prices) = order_lines(state, order_id).await?;
            }
            Asks::ParcelUpdate { id, .. } => {
                order.parcel = parcel_status(state, order_id, *id).await?;
            }
            _ => {}
        }
        let target = check(&order, &queued.asks, user)?;
        let seq = order.last_seq + 1;
        let envelope = Envelope::new(
            queued.event_type,
            order_id,
            seq,
            actor.clone(),
            request_id,
            queued.payload.clone(),
        );
        let body = serde_json::to_value(&envelope).map_err(anyhow::Error::from)?;
        let statement = sqlx::query_scalar(QUEUE_COMMAND_SQL)
            .bind(order_id)
            .bind(target)
            .bind(seq)
            .bind(Uuid::now_v7())
            .bind(queued.kind.as_str())
            .bind(order.projected_status)
            .bind(actor.user_id)
            .bind(actor.role.as_str())
            .bind(&queued.reason)
            .bind(envelope.event_id)
            .bind(queued.event_type.routing_key())
            .bind(body)
            .bind(refund)
            .bind(claims.iter().map(|line| line.item_id).collect::<Vec<_>>())
            .bind(claims.iter().map(|line| line.quantity).collect::<Vec<_>>());
        let parcel = queued.asks.parcel_id();
        let answer = |state| accepted(state, order_id, &envelope, order.status, target, parcel);
        match key {
            None => {
                let queued: i64 = statement.fetch_one(&state.pool).await?;
                if queued == 1 {
                    return Ok(answer(state));
                }
            }
            Some(key) => {
                let mut tx = state.pool.begin().await?;
                let queued: i64 = statement.fetch_one(&mut *tx).await?;
                if queued == 1 {
                    let (status, Json(response)) = answer(state);
                    idempotency::complete(&mut tx, user.id, Some(key), status, &response).await?;
                    tx.commit().await?;
                    return Ok((status, Json(response)));
                }
            }
        }
    }
    Err(ApiError::conflict(
        "concurrent_change",
        "Other changes to this order were accepted at the same moment; retry.",
    ))
}

/// The order's lines, with what accepted parcels and cancellations claimed of them, and
/// their unit prices.
async fn order_lines(
    state: &AppState,
    order_id: Uuid,
) -> ApiResult<(Vec<LineUnits>, HashMap<Uuid, i64>)> {
    let rows: Vec<(Uuid, String, i32, i32, i64)> = sqlx::query_as(
        "SELECT id, product_sku, quantity, quantity_claimed, unit_price_minor
         FROM order_items WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_all(&state.pool)
    .await?;
    let prices = rows.iter().map(|row| (row.0, row.4)).collect();
    let lines = rows
        .into_iter()
        .map(|(item_id, sku, quantity, taken, _)| LineUnits {
            item_id,
            sku,
            quantity,
            taken,
        })
        .collect();
    Ok((lines, prices))
}

/// The status of the order's parcel `id`, if it has one.
async fn parcel_status(
    state: &AppState,
    order_id: Uuid,
    id: Uuid,
) -> ApiResult<Option<FulfillmentStatus>> {
    Ok(
        sqlx::query_scalar("SELECT status FROM fulfillments WHERE id = $1 AND order_id = $2")
            .bind(id)
            .bind(order_id)
            .fetch_optional(&state.pool)
            .await?,
    )
}

/// Units (a parcel, a cancellation) that do not fit the order's lines, as the field they
/// are wrong in.
fn units_refusal(refusal: fulfillment::Refusal) -> ApiError {
    let field = match (refusal.line, &refusal.error) {
        (None, _) => "lines".to_owned(),
        (Some(i), UnitsError::UnknownLine | UnitsError::Repeated) => {
            format!("lines[{i}].item_id")
        }
        (Some(i), _) => format!("lines[{i}].quantity"),
    };
    ApiError::invalid(field, refusal.error.to_string())
}

/// Whether `user` may ask for `asks` now, judged against the order as read; the order's
/// projected status once it is applied.
fn check(order: &CommandTarget, asks: &Asks, user: &CurrentUser) -> ApiResult<OrderStatus> {
    if let Some(reason) = &order.stalled_reason {
        // Customers learn that staff are on it, not the internal reason.
        let detail = if user.role.is_staff() {
            format!("The order is stalled ({reason}); re-drive or skip its command first.")
        } else {
            "The order is being reviewed by the store; changes are paused until then.".to_owned()
        };
        return Err(ApiError::conflict("order_stalled", detail));
    }
    match *asks {
        Asks::Status { to, needs_tracking } => {
            if let Err(refusal) = order
                .projected_status
                .transition(to, ActorKind::User(user.role))
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
            Ok(to)
        }
        Asks::Receipt(amount) => {
            if order.projected_status == OrderStatus::Cancelled {
                return Err(ApiError::conflict(
                    "order_cancelled",
                    "A cancelled order takes no payment.",
                ));
            }
            let outstanding =
                Money::from_minor(order.total_amount_minor - order.amount_captured_minor);
            if amount > outstanding {
                return Err(ApiError::conflict(
                    "payment_exceeds_outstanding",
                    format!("{amount} is more than the {outstanding} still to pay."),
                ));
            }
            Ok(order.projected_status)
        }
        Asks::Capture => {
            if order.amount_authorized_minor <= order.amount_captured_minor
                || order.projected_status == OrderStatus::Cancelled
            {
                return Err(ApiError::conflict(
                    "nothing_to_capture",
                    "No authorised payment is held for this order.",
                ));
            }
            Ok(order.projected_status)
        }
        Asks::Parcel { ref lines, .. } => {
            let from = order.projected_status;
            if !from.ships_parcels() {
                return Err(ApiError::conflict(
                    "invalid_transition",
                    format!("An order that is {from} ships no parcels; it must be processing."),
                ));
            }
            fulfillment::check_units(&order.lines, lines).map_err(units_refusal)?;
            Ok(fulfillment::status_once_taken(&order.lines, lines))
        }
        Asks::CancelUnits(ref lines) => {
            let from = order.projected_status;
            if !from.cancels_units(ActorKind::User(user.role)) {
                let who = if user.role.is_staff() {
                    "until its last unit ships"
                } else {
                    "while it is confirmed"
                };
                return Err(ApiError::conflict(
                    "invalid_transition",
                    format!("Units of an order that is {from} cannot be cancelled; only {who}."),
                ));
            }
            fulfillment::check_units(&order.lines, lines).map_err(units_refusal)?;
            let value: i64 = lines
                .iter()
                .map(|line| order.prices[&line.item_id] * i64::from(line.quantity))
                .sum();
            let payment = Payment {
                total: order.total_amount_minor,
                authorized: order.amount_authorized_minor,
                captured: order.amount_captured_minor,
                refunded: 0,
                status: PaymentStatus::Unpaid,
            };
            if let Err(refusal) = payment.reduce_total(value) {
                return Err(ApiError::conflict(
                    refusal.code(),
                    format!("{refusal}: refund the difference first."),
                ));
            }
            Ok(from)
        }
        Asks::ParcelUpdate { status, .. } => match order.parcel {
            None => Err(ApiError::NotFound("No such parcel on this order.")),
            Some(now) if now == status => Err(ApiError::conflict(
                "parcel_unchanged",
                format!("The parcel is already {}.", now.as_str()),
            )),
            Some(_) => Ok(order.projected_status),
        },
        Asks::Refund(amount) => {
            let refundable =
                Money::from_minor(order.amount_captured_minor - order.refunds_accepted_minor);
            if amount > refundable {
                return Err(ApiError::conflict(
                    "refund_exceeds_captured",
                    format!(
                        "{amount} is more than the {refundable} captured and not yet refunded."
                    ),
                ));
            }
            Ok(order.projected_status)
        }
    }
}

fn accepted(
    state: &AppState,
    order_id: Uuid,
    envelope: &Envelope,
    status: OrderStatus,
    target: OrderStatus,
    fulfillment_id: Option<Uuid>,
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
            fulfillment_id,
        }),
    )
}
