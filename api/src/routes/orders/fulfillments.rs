//! Parcels: staff ship some units of some lines with a carrier and tracking number, and
//! record each parcel's delivery, through the queue like every other command (the worker
//! ships each exactly once, in order with the order's other commands); whoever may see the
//! order reads its parcels.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use chrono::{DateTime, Utc};
use common::{
    domain::{FulfillmentStatus, OrderStatus, fulfillment::LineQuantity},
    events::{EventType, FulfillmentRequested, FulfillmentUpdateRequested},
    timeline::EntryKind,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    commands::{Asks, CommandAccepted, Queued, enqueue, enqueue_once, json, units_named},
    model::find_visible,
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
pub struct CreateFulfillmentRequest {
    /// The units of each line the parcel carries: at most what is left to ship of it.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineQuantity>,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub carrier: Option<String>,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub tracking_number: String,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFulfillmentRequest {
    /// `delivered`: the carrier delivered the parcel.
    pub status: FulfillmentStatus,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

#[utoipa::path(
    post, path = "/api/orders/{id}/fulfillments", tag = "fulfillments", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body: one parcel however often the request is sent"),
    ),
    request_body = CreateFulfillmentRequest,
    responses(
        (status = 202, description = "Queued for a worker; `fulfillment_id` names the parcel. The order becomes `partially_shipped`, or `shipped` with its last units", body = CommandAccepted),
        (status = 403, description = "Customers cannot ship", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not being prepared or partly shipped (`invalid_transition`), stalled (`order_stalled`), the same Idempotency-Key still in flight, or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A line that is not the order's, named twice, or more than is left to ship of it (the field names the line), or invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_fulfillment(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(raw): AppJson<serde_json::Value>,
) -> ApiResult<Response> {
    let body: CreateFulfillmentRequest = parse_value(&raw)?;
    let tracking_number = body.tracking_number.trim().to_owned();
    let carrier = body.carrier.map(|c| c.trim().to_owned());
    let mut v = Violations::new();
    v.length(&tracking_number, "tracking_number", 1, 100);
    if let Some(carrier) = &carrier {
        v.length(carrier, "carrier", 1, 100);
    }
    if let Some(note) = &body.note {
        v.length(note, "note", 0, 1000);
    }
    let units = units_named(&mut v, &body.lines);
    v.finish()?;
    let fulfillment_id = Uuid::now_v7();
    let queued = Queued {
        kind: EntryKind::FulfillmentRequested,
        event_type: EventType::FulfillmentRequested,
        reason: Some(match &body.note {
            Some(note) => format!("parcel {tracking_number} with {units}: {note}"),
            None => format!("parcel {tracking_number} with {units}"),
        }),
        asks: Asks::Parcel {
            id: fulfillment_id,
            lines: body.lines.clone(),
        },
        payload: json(FulfillmentRequested {
            fulfillment_id,
            lines: body.lines,
            carrier,
            tracking_number,
            note: body.note,
        })?,
    };
    enqueue_once(state, user, request_id, id, queued, &headers, &raw).await
}

#[utoipa::path(
    patch, path = "/api/orders/{id}/fulfillments/{fulfillment_id}", tag = "fulfillments", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("fulfillment_id" = Uuid, Path)),
    request_body = UpdateFulfillmentRequest,
    responses(
        (status = 202, description = "Queued for a worker; the order becomes `delivered` once every unit shipped and every parcel arrived", body = CommandAccepted),
        (status = 403, description = "Customers cannot record deliveries", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or no such parcel on it (yet: a parcel exists once its worker shipped it)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The parcel is already so (`parcel_unchanged`), the order is stalled (`order_stalled`), or other changes accepted at the same moment (`concurrent_change`, retry)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A status other than `delivered`, or invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_fulfillment(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    RequestId(request_id): RequestId,
    AppPath((id, fulfillment_id)): AppPath<(Uuid, Uuid)>,
    AppJson(body): AppJson<UpdateFulfillmentRequest>,
) -> ApiResult<(StatusCode, Json<CommandAccepted>)> {
    let mut v = Violations::new();
    v.check(
        body.status == FulfillmentStatus::Delivered,
        "status",
        "must be delivered: a parcel ships when it is created",
    );
    if let Some(note) = &body.note {
        v.length(note, "note", 0, 1000);
    }
    v.finish()?;
    let queued = Queued {
        kind: EntryKind::FulfillmentRequested,
        event_type: EventType::FulfillmentUpdateRequested,
        reason: Some(format!("parcel {} delivered", fulfillment_id)),
        asks: Asks::ParcelUpdate {
            id: fulfillment_id,
            status: body.status,
        },
        payload: json(FulfillmentUpdateRequested {
            fulfillment_id,
            status: body.status,
            note: body.note,
        })?,
    };
    detached(async move { enqueue(&state, &user, &request_id, id, queued, None).await }).await
}

/// An order's parcels, in the order they shipped.
#[derive(Debug, Serialize, ToSchema)]
pub struct FulfillmentList {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub fulfillments: Vec<FulfillmentResponse>,
}

/// One parcel.
#[derive(Debug, Serialize, ToSchema)]
pub struct FulfillmentResponse {
    pub id: Uuid,
    pub status: FulfillmentStatus,
    pub carrier: Option<String>,
    pub tracking_number: String,
    pub lines: Vec<FulfillmentLineResponse>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Some units of one order line, in a parcel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FulfillmentLineResponse {
    pub item_id: Uuid,
    pub product_sku: String,
    pub product_name: String,
    pub quantity: i32,
}

#[derive(sqlx::FromRow)]
struct ParcelRow {
    id: Uuid,
    status: FulfillmentStatus,
    carrier: Option<String>,
    tracking_number: String,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    lines: sqlx::types::Json<Vec<FulfillmentLineResponse>>,
}

/// Parcels carry at least one unit each, so an order has at most as many as units; this
/// bounds a pathological one.
const MAX_PARCELS: i64 = 500;

#[utoipa::path(
    get, path = "/api/orders/{id}/fulfillments", tag = "fulfillments", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order's parcels, in the order they shipped, each with its tracking number and lines", body = FulfillmentList),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_fulfillments(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<FulfillmentList>> {
    let mut conn = state.pool.acquire().await?;
    let order = find_visible(&mut conn, id, &user).await?;
    let rows: Vec<ParcelRow> = sqlx::query_as(
        "SELECT f.id, f.status, f.carrier, f.tracking_number, f.created_at, f.delivered_at,
                json_agg(json_build_object('item_id', i.id, 'product_sku', i.product_sku,
                                           'product_name', i.product_name, 'quantity', l.quantity)
                         ORDER BY i.product_sku COLLATE \"C\") AS lines
         FROM fulfillments f
         JOIN fulfillment_lines l ON l.fulfillment_id = f.id
         JOIN order_items i ON i.id = l.order_item_id
         WHERE f.order_id = $1
         GROUP BY f.id ORDER BY f.seq LIMIT $2",
    )
    .bind(id)
    .bind(MAX_PARCELS)
    .fetch_all(&mut *conn)
    .await?;
    let fulfillments = rows
        .into_iter()
        .map(|row| FulfillmentResponse {
            id: row.id,
            status: row.status,
            carrier: row.carrier,
            tracking_number: row.tracking_number,
            lines: row.lines.0,
            created_at: row.created_at,
            delivered_at: row.delivered_at,
        })
        .collect();
    Ok(Json(FulfillmentList {
        order_id: order.id,
        status: order.status,
        fulfillments,
    }))
}
