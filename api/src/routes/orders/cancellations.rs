//! Cancelling some units of some lines (`POST /api/orders/{id}/cancellations`): staff until
//! the last unit ships, the customer while the order is confirmed; through the queue like
//! every other command. The units go back on sale and the order's total shrinks by their
//! price; what an authorisation holds beyond it is released.

use axum::{extract::State, http::HeaderMap, response::Response};
use common::{
    domain::fulfillment::LineQuantity,
    events::{EventType, UnitsCancelRequested},
    timeline::EntryKind,
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::commands::{Asks, Queued, enqueue_once, json, units_named};
use crate::{
    auth::CurrentUser,
    error::{ApiResult, Problem},
    extract::{AppJson, AppPath, parse_value},
    middleware::RequestId,
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelUnitsRequest {
    /// The units of each line to cancel: at most what is left to ship of it.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineQuantity>,
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

#[utoipa::path(
    post, path = "/api/orders/{id}/cancellations", tag = "fulfillments", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body"),
    ),
    request_body = CancelUnitsRequest,
    responses(
        (status = 202, description = "Queued for a worker: the units go back on sale and the total shrinks by their price; an order with nothing left to ship becomes `shipped` (or `cancelled`, when nothing of it shipped)", body = super::commands::CommandAccepted),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late (customers: once the order is being prepared; staff: once everything shipped; `invalid_transition`), more captured than the order would come to (`captured_exceeds_total`: refund first), a stalled order (`order_stalled`), the same Idempotency-Key still in flight, or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A line that is not the order's, named twice, or more than is left of it (the field names the line), or invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_units(
    State(state): State<AppState>,
    user: CurrentUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(raw): AppJson<serde_json::Value>,
) -> ApiResult<Response> {
    let body: CancelUnitsRequest = parse_value(&raw)?;
    let mut v = Violations::new();
    if let Some(reason) = &body.reason {
        v.length(reason, "reason", 0, 1000);
    }
    let units = units_named(&mut v, &body.lines);
    v.finish()?;
    let queued = Queued {
        kind: EntryKind::CancelRequested,
        event_type: EventType::UnitsCancelRequested,
        reason: Some(match &body.reason {
            Some(reason) => format!("{units} units to cancel: {reason}"),
            None => format!("{units} units to cancel"),
        }),
        asks: Asks::CancelUnits(body.lines.clone()),
        payload: json(UnitsCancelRequested {
            lines: body.lines,
            reason: body.reason,
        })?,
    };
    enqueue_once(state, user, request_id, id, queued, &headers, &raw).await
}
