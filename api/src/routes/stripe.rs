//! `POST /api/payments/stripe/webhook`: Stripe's events about the orders' PaymentIntents.
//! Each is verified (`Stripe-Signature`), recorded by its id (a redelivery changes
//! nothing) and, when it names an order's PaymentIntent, queued for the worker as an
//! `order.payment_observed` command, all in one transaction. The worker applies it in
//! order with the order's other commands.

use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use chrono::Utc;
use common::{
    events::{EventType, PaymentObserved},
    stripe::{self, Event},
    system_commands,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    detach::detached,
    error::{ApiError, ApiResult, Problem},
    middleware::RequestId,
    state::AppState,
};

/// What became of the events received, by outcome.
const OUTCOMES: [&str; 4] = ["applied", "duplicate", "ignored", "refused"];

/// Exports every outcome at zero, so an alert on refused events sees the first one.
pub fn zero_counters() {
    for outcome in OUTCOMES {
        metrics::counter!("orderflow_stripe_events_total", "outcome" => outcome).absolute(0);
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe_webhook))
}

/// What became of an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventReceived {
    pub received: bool,
    /// The event was received before; nothing changed.
    pub duplicate: bool,
    /// The order whose PaymentIntent it names, when it names one of ours.
    pub order_id: Option<Uuid>,
}

#[utoipa::path(
    post, path = "/api/payments/stripe/webhook", tag = "payments",
    request_body(content = String, description = "A Stripe event, as Stripe signs it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "`t=…,v1=…`, made with the endpoint's signing secret")),
    responses(
        (status = 200, description = "Received (or received before)", body = EventReceived),
        (status = 400, description = "Missing, stale (over 5 minutes) or wrong signature, or not a Stripe event", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not the payment provider", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<EventReceived>> {
    let Some(settings) = &state.settings.payments.stripe else {
        return Err(ApiError::NotFound(
            "Stripe is not this shop's payment provider.",
        ));
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let secrets: Vec<String> = settings
        .webhook_secrets
        .iter()
        .map(|secret| secret.expose().to_owned())
        .collect();
    if let Err(refusal) = stripe::verify(signature, &body, &secrets, Utc::now().timestamp()) {
        metrics::counter!("orderflow_stripe_events_total", "outcome" => "refused").increment(1);
        return Err(ApiError::BadRequest(refusal.to_string()));
    }
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Stripe event: {e}")))?;
    detached(async move { receive(&state, &event, &request_id).await }).await
}

/// Records `event` and queues what it implies for its order, in one transaction.
async fn receive(
    state: &AppState,
    event: &Event,
    request_id: &str,
) -> ApiResult<Json<EventReceived>> {
    let mut tx = state.pool.begin().await?;
    let order_id: Option<Uuid> = match event.payment_intent_id() {
        Some(intent) => {
            sqlx::query_scalar("SELECT id FROM orders WHERE payment_intent_id = $1")
                .bind(intent)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    let fresh = sqlx::query(
        "INSERT INTO stripe_events (event_id, kind, order_id) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(order_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let operations = order_id
        .filter(|_| fresh)
        .and_then(|_| stripe::implied_by(event))
        .unwrap_or_default();
    if let (Some(order_id), false) = (order_id, operations.is_empty()) {
        let observed = PaymentObserved {
            source: format!("stripe event {} ({})", event.id, event.kind),
            operations,
            refund_refused: 0,
        };
        let kind = EventType::PaymentObserved;
        system_commands::queue(&mut tx, order_id, kind, &observed, request_id).await?;
    }
    tx.commit().await?;
    state.outbox_wake.notify_one();
    let outcome = match (fresh, order_id) {
        (false, _) => "duplicate",
        (true, Some(_)) => "applied",
        (true, None) => "ignored",
    };
    metrics::counter!("orderflow_stripe_events_total", "outcome" => outcome).increment(1);
    tracing::info!(
        event_id = event.id,
        kind = event.kind,
        ?order_id,
        outcome,
        "Stripe event received"
    );
    Ok(Json(EventReceived {
        received: true,
        duplicate: !fresh,
        order_id,
    }))
}
