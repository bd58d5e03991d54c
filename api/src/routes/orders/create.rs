//! `POST /api/orders`: validate, price from the catalogue, and write the order, its lines,
//! its first timeline entry and its `order.created` event in one statement (together with
//! the orders placed alongside it, see [`super::writer`]).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    domain::{Money, Role},
    events::{Actor, Envelope, EventType, OrderCreated},
};
use serde::Deserialize;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::insert::{NewOrder, insert_orders};
use super::model::{ItemRow, OrderResponse};
use super::pricing::{MAX_QUANTITY, OrderLineRequest, PricedLine, price_lines};
use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, parse_value},
    idempotency::{self, Created, IdempotencyKey},
    middleware::RequestId,
    state::AppState,
    validation::Violations,
};

const MAX_LINES: usize = 100;
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "items": [{ "product_sku": "MUG-1", "quantity": 2 }],
    "customer_name": "Cara Customer",
    "customer_email": "cara@example.com",
    "shipping_address": "1 Main St, Springfield"
}))]
pub struct CreateOrderRequest {
    /// 1 to 100 lines; lines naming the same product are merged.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderLineRequest>,
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub customer_name: String,
    #[schema(format = "email", max_length = 254)]
    pub customer_email: String,
    #[schema(max_length = 20, pattern = r"^[0-9 +().-]*$")]
    pub customer_phone: Option<String>,
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub shipping_address: String,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
}

#[utoipa::path(
    post, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    request_body = CreateOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body")),
    responses(
        (status = 201, description = "Order accepted as `pending`; a worker confirms it", body = OrderResponse),
        (status = 409, description = "`price_changed`, or the same Idempotency-Key still in flight", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input, unknown or inactive product, or a reused Idempotency-Key with another body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    user: CurrentUser,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    AppJson(raw): AppJson<serde_json::Value>,
) -> ApiResult<Response> {
    let request: CreateOrderRequest = parse_value(&raw)?;
    let placing = idempotency::once(state.pool.clone(), user.id, &headers, &raw, |key| {
        let state = state.clone();
        async move {
            validate(&request)?;
            match key {
                // Written together with the orders placed alongside it (group commit).
                None => state.orders.place(user, request_id, request).await,
                Some(key) => place_with_key(&state, &user, &request_id, &request, &key).await,
            }
        }
    });
    let order = match placing.await? {
        Created::Replayed(response) => return Ok(response),
        Created::New(order) => order,
    };
    state.outbox_wake.notify_one();
    metrics::counter!("orderflow_orders_created_total").increment(1);
    tracing::info!(order_id = %order.id, total = %order.total_amount, "order placed");
    let location = format!("/api/orders/{}", order.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

/// An order with an `Idempotency-Key` is written in a transaction of its own, which also
/// stores the response the key replays.
async fn place_with_key(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    request: &CreateOrderRequest,
    key: &IdempotencyKey,
) -> ApiResult<OrderResponse> {
    let lines = price_lines(&state.pool, &request.items).await?;
    let order = new_order(user, request_id, request, lines)?;
    let mut tx = state.pool.begin().await?;
    let response = insert_one(&mut *tx, order, user.role).await?;
    idempotency::complete(&mut tx, user.id, Some(key), StatusCode::CREATED, &response).await?;
    tx.commit().await?;
    Ok(response)
}

/// Prices and writes one order on its own.
pub(super) async fn place_alone(
    pool: &PgPool,
    user: &CurrentUser,
    request_id: &str,
    request: &CreateOrderRequest,
) -> ApiResult<OrderResponse> {
    let lines = price_lines(pool, &request.items).await?;
    let order = new_order(user, request_id, request, lines)?;
    insert_one(pool, order, user.role).await
}

/// Writes one order and returns it as `viewer` sees it.
async fn insert_one(
    executor: impl PgExecutor<'_>,
    order: NewOrder,
    viewer: Role,
) -> ApiResult<OrderResponse> {
    let row = insert_orders(executor, &[&order])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the order insert returned no row")))?;
    Ok(OrderResponse::new(row, order.items, viewer))
}

/// The order `user` places with `request`, priced as `lines`: its totals, lines and
/// `order.created` event.
pub(super) fn new_order(
    user: &CurrentUser,
    request_id: &str,
    request: &CreateOrderRequest,
    lines: Vec<PricedLine>,
) -> ApiResult<NewOrder> {
    let currency = lines[0].product.currency.clone();
    let mut total = Money::ZERO;
    let mut units: i32 = 0;
    for line in &lines {
        total = line
            .product_total()
            .and_then(|line_total| total.checked_add(line_total))
            .ok_or_else(|| ApiError::invalid("items", "the order total is too large"))?;
        units += line.quantity;
    }
    let order_id = Uuid::now_v7();
    let actor = Actor::user(user.id, user.role);
    let payload = OrderCreated {
        customer_id: user.id,
        total_amount: total,
        currency: currency.clone(),
        items_count: units,
    };
    let event = Envelope::new(
        EventType::OrderCreated,
        order_id,
        1,
        actor,
        request_id,
        payload,
    );
    Ok(NewOrder {
        id: order_id,
        customer_id: user.id,
        currency,
        total,
        units,
        customer_name: request.customer_name.trim().to_owned(),
        customer_email: request.customer_email.trim().to_owned(),
        customer_phone: request
            .customer_phone
            .as_deref()
            .map(|p| p.trim().to_owned()),
        shipping_address: request.shipping_address.trim().to_owned(),
        notes: request.notes.clone(),
        items: item_rows(order_id, &lines),
        event,
    })
}

fn validate(request: &CreateOrderRequest) -> ApiResult<()> {
    let mut v = Violations::new();
    v.check(
        (1..=MAX_LINES).contains(&request.items.len()),
        "items",
        "must hold 1 to 100 lines",
    );
    for (i, line) in request.items.iter().enumerate() {
        v.check(
            line.product_id.is_some() != line.product_sku.is_some(),
            &format!("items[{i}]"),
            "must name exactly one of product_id and product_sku",
        );
        v.check(
            (1..=MAX_QUANTITY).contains(&line.quantity),
            &format!("items[{i}].quantity"),
            "must be from 1 to 1000",
        );
    }
    v.length(request.customer_name.trim(), "customer_name", 1, 255)
        .email(request.customer_email.trim(), "customer_email")
        .length(request.shipping_address.trim(), "shipping_address", 1, 1000);
    if let Some(phone) = &request.customer_phone {
        v.phone(phone, "customer_phone");
    }
    if let Some(notes) = &request.notes {
        v.length(notes, "notes", 0, 2000);
    }
    v.finish()
}

/// The order's lines, as they are stored and shown.
fn item_rows(order_id: Uuid, lines: &[PricedLine]) -> Vec<ItemRow> {
    lines
        .iter()
        .map(|line| ItemRow {
            id: Uuid::now_v7(),
            order_id,
            product_id: line.product.id,
            product_name: line.product.name.clone(),
            product_sku: line.product.sku.clone(),
            product_description: line.product.description.clone(),
            quantity: line.quantity,
            quantity_shipped: 0,
            quantity_cancelled: 0,
            unit_price_minor: line.product.price_minor,
            total_price_minor: line.product_total().map(Money::minor).unwrap_or_default(),
        })
        .collect()
}
