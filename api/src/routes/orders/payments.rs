//! Money on an order: staff record money received by hand, capture what a provider holds and
//! give money back, through the
//! queue like every other command (the worker applies them exactly once, in order with the
//! order's other commands); whoever may see the order reads its ledger.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use chrono::{DateTime, Utc};
use common::{
    domain::{Money, PaymentStatus},
    events::{CaptureRequested, EventType, PaymentRecorded, RefundRequested},
    timeline::EntryKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    commands::{Asks, CommandAccepted, Queued, enqueue, enqueue_once, json},
    model::{PaymentSummary, find_visible},
};
use crate::{
    auth::{CurrentUser, StaffUser},
    detach::detached,
    error::{ApiResult, Problem},
    extract::{AppJson, AppPath, parse_value},
    middleware::RequestId,
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPaymentRequest {
    /// What was received, at most what is still to pay.
    pub amount: Money,
    /// The shop's reference for it (a receipt or bank transfer number).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub reference: Option<String>,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// What to give back, at most what is captured and not yet refunded.
    pub amount: Money,
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

fn positive(v: &mut Violations, amount: Money) {
    v.check(amount > Money::ZERO, "amount", "must be more than 0");
}

#[utoipa::path(
    post, path = "/api/orders/{id}/payments", tag = "payments", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = RecordPaymentRequest,
    responses(
        (status = 202, description = "Queued for a worker; the order's `payment` shows it once applied", body = CommandAccepted),
        (status = 403, description = "Customers cannot record payments", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than is still to pay (`payment_exceeds_outstanding`), a cancelled order (`order_cancelled`), a stalled one (`order_stalled`), or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn record_payment(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<RecordPaymentRequest>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let mut v = Violations::new();
    positive(&mut v, body.amount);
    let reference = body.reference.map(|r| r.trim().to_owned());
    if let Some(reference) = &reference {
        v.length(reference, "reference", 1, 100);
    }
    if let Some(note) = &body.note {
        v.length(note, "note", 0, 1000);
    }
    v.finish()?;
    let queued = Queued {
        kind: EntryKind::PaymentRequested,
        event_type: EventType::PaymentRecorded,
        reason: Some(format!("payment of {} received", body.amount)),
        asks: Asks::Receipt(body.amount),
        payload: json(PaymentRecorded {
            amount: body.amount,
            reference,
            note: body.note,
        })?,
    };
    detached(async move { enqueue(&state, &user, &request_id, id, queued, None).await }).await
}

#[utoipa::path(
    post, path = "/api/orders/{id}/capture", tag = "payments", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Queued for a worker: what the provider holds is captured now rather than when the order ships", body = CommandAccepted),
        (status = 403, description = "Customers cannot capture", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No authorised payment is held (`nothing_to_capture`), a stalled order (`order_stalled`), or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn capture_payment(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let queued = Queued {
        kind: EntryKind::PaymentRequested,
        event_type: EventType::CaptureRequested,
        reason: Some("capture requested".into()),
        asks: Asks::Capture,
        payload: json(CaptureRequested { note: None })?,
    };
    detached(async move { enqueue(&state, &user, &request_id, id, queued, None).await }).await
}

#[utoipa::path(
    post, path = "/api/orders/{id}/refunds", tag = "payments", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 202, description = "Queued for a worker; the order's `payment` shows it once applied", body = CommandAccepted),
        (status = 403, description = "Customers cannot refund", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More than is captured and not yet refunded (`refund_exceeds_captured`), a stalled order (`order_stalled`), the same Idempotency-Key still in flight, or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input, or a reused Idempotency-Key with another body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refund_order(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(raw): AppJson<serde_json::Value>,
) -> ApiResult<Response> {
    let body: RefundRequest = parse_value(&raw)?;
    let mut v = Violations::new();
    positive(&mut v, body.amount);
    if let Some(reason) = &body.reason {
        v.length(reason, "reason", 0, 1000);
    }
    v.finish()?;
    let queued = Queued {
        kind: EntryKind::PaymentRequested,
        event_type: EventType::RefundRequested,
        reason: Some(match &body.reason {
            Some(reason) => format!("refund of {}: {reason}", body.amount),
            None => format!("refund of {}", body.amount),
        }),
        asks: Asks::Refund(body.amount),
        payload: json(RefundRequested {
            amount: body.amount,
            reason: body.reason,
        })?,
    };
    enqueue_once(state, user, request_id, id, queued, &headers, &raw).await
}

/// An order's money and every operation on it, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentLedger {
    pub order_id: Uuid,
    pub currency: String,
    pub payment: PaymentSummary,
    pub transactions: Vec<PaymentTransaction>,
}

/// One operation on an order's money, as the ledger keeps it (never changed or removed).
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentTransaction {
    pub id: Uuid,
    /// `authorization`, `failure`, `capture`, `void`, `receipt` (money taken by hand) or
    /// `refund`.
    pub kind: String,
    pub amount: Money,
    pub provider: String,
    /// The payment's status once the operation applied.
    pub payment_status: PaymentStatus,
    /// *Staff only*: the provider's id for it, or the command's event id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    /// *Staff only*: who recorded it, and their note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TransactionRow {
    id: Uuid,
    kind: String,
    amount_minor: i64,
    provider: String,
    payment_status: PaymentStatus,
    provider_reference: String,
    actor_id: Option<Uuid>,
    note: Option<String>,
    created_at: DateTime<Utc>,
}

/// An order's ledger holds a few entries; this bounds a pathological one.
const MAX_TRANSACTIONS: i64 = 500;

#[utoipa::path(
    get, path = "/api/orders/{id}/payments", tag = "payments", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order's money and its ledger, oldest first", body = PaymentLedger),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn payment_ledger(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<PaymentLedger>> {
    let mut conn = state.pool.acquire().await?;
    let order = find_visible(&mut conn, id, &user).await?;
    let rows: Vec<TransactionRow> = sqlx::query_as(
        "SELECT id, kind, amount_minor, provider, payment_status, provider_reference, actor_id,
                note, created_at
         FROM payment_transactions WHERE order_id = $1 ORDER BY created_at, id LIMIT $2",
    )
    .bind(id)
    .bind(MAX_TRANSACTIONS)
    .fetch_all(&mut *conn)
    .await?;
    let staff = user.role.is_staff();
    let transactions = rows
        .into_iter()
        .map(|row| PaymentTransaction {
            id: row.id,
            kind: row.kind,
            amount: Money::from_minor(row.amount_minor),
            provider: row.provider,
            payment_status: row.payment_status,
            provider_reference: Some(row.provider_reference).filter(|_| staff),
            actor_id: row.actor_id.filter(|_| staff),
            note: row.note.filter(|_| staff),
            created_at: row.created_at,
        })
        .collect();
    Ok(Json(PaymentLedger {
        order_id: order.id,
        payment: PaymentSummary::new(
            &order.payment,
            order.total_amount_minor,
            order.status,
            user.role,
        ),
        currency: order.currency,
        transactions,
    }))
}
