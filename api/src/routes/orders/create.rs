//! `POST /api/orders`: validate, price from the catalogue, and write the order, its lines,
//! its first timeline entry and its `order.created` event in one statement.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    domain::Money,
    events::{Actor, Envelope, EventType, OrderCreated},
    timeline::EntryKind,
};
use serde::Deserialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{ItemRow, OrderResponse, OrderRow, order_columns};
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
        async move { place(&state, &user, &request_id, request, key.as_ref()).await }
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

async fn place(
    state: &AppState,
    user: &CurrentUser,
    request_id: &str,
    request: CreateOrderRequest,
    key: Option<&IdempotencyKey>,
) -> ApiResult<OrderResponse> {
    validate(&request)?;
    let lines = price_lines(&state.pool, &request.items).await?;
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
    let items = item_rows(order_id, &lines);
    let actor = Actor {
        user_id: Some(user.id),
        role: user.role.as_str().to_owned(),
    };
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
    let new_order = NewOrder {
        id: order_id,
        customer_id: user.id,
        currency: &currency,
        request: &request,
        total,
        units,
        items: &items,
        event: &event,
    };
    // Without an Idempotency-Key the one statement is the whole transaction.
    let Some(key) = key else {
        let order = new_order.insert(&state.pool).await?;
        return Ok(OrderResponse::new(order, items, user.role));
    };
    let mut tx = state.pool.begin().await?;
    let order = new_order.insert(&mut *tx).await?;
    let response = OrderResponse::new(order, items, user.role);
    idempotency::complete(&mut tx, user.id, Some(key), StatusCode::CREATED, &response).await?;
    tx.commit().await?;
    Ok(response)
}

/// The order, its lines, its first timeline entry and its `order.created` event, in ONE
/// statement: one round trip, and atomic on its own. `bench/create_order.sql` runs it
/// under pgbench (see `bench_scripts`).
pub(crate) const INSERT_ORDER_SQL: &str = concat!(
    "WITH created AS (
         INSERT INTO orders (id, customer_id, currency, total_amount_minor, items_count, customer_name,
             customer_email, customer_phone, shipping_address, notes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
    order_columns!(),
    "), lines AS (
         INSERT INTO order_items (id, order_id, product_id, product_name, product_sku, product_description,
             quantity, unit_price_minor, total_price_minor)
         SELECT id, $1, product_id, name, sku, description, quantity, unit_price, total
         FROM UNNEST($11::uuid[], $12::uuid[], $13::text[], $14::text[], $15::text[], $16::int[], $17::bigint[], $18::bigint[])
              AS l(id, product_id, name, sku, description, quantity, unit_price, total)
     ), logged AS (
         INSERT INTO order_events (id, order_id, kind, to_status, actor_id, actor_role, seq)
         VALUES ($19, $1, $20, 'pending', $2, $21, 1)
     ), queued AS (
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload) VALUES ($22, $1, 1, $23, $24)
     )
     SELECT * FROM created"
);

/// Everything one order creation writes.
struct NewOrder<'a> {
    id: Uuid,
    customer_id: Uuid,
    currency: &'a str,
    request: &'a CreateOrderRequest,
    total: Money,
    units: i32,
    items: &'a [ItemRow],
    event: &'a Envelope,
}

impl NewOrder<'_> {
    async fn insert(&self, executor: impl PgExecutor<'_>) -> sqlx::Result<OrderRow> {
        let ids: Vec<Uuid> = self.items.iter().map(|i| i.id).collect();
        let product_ids: Vec<Uuid> = self.items.iter().map(|i| i.product_id).collect();
        let names: Vec<&str> = self.items.iter().map(|i| i.product_name.as_str()).collect();
        let skus: Vec<&str> = self.items.iter().map(|i| i.product_sku.as_str()).collect();
        let descriptions: Vec<Option<&str>> = self
            .items
            .iter()
            .map(|i| i.product_description.as_deref())
            .collect();
        let quantities: Vec<i32> = self.items.iter().map(|i| i.quantity).collect();
        let unit_prices: Vec<i64> = self.items.iter().map(|i| i.unit_price_minor).collect();
        let totals: Vec<i64> = self.items.iter().map(|i| i.total_price_minor).collect();
        let payload =
            serde_json::to_value(self.event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let request = self.request;
        sqlx::query_as(INSERT_ORDER_SQL)
            .bind(self.id)
            .bind(self.customer_id)
            .bind(self.currency)
            .bind(self.total.minor())
            .bind(self.units)
            .bind(request.customer_name.trim())
            .bind(request.customer_email.trim())
            .bind(request.customer_phone.as_deref().map(str::trim))
            .bind(request.shipping_address.trim())
            .bind(&request.notes)
            .bind(&ids)
            .bind(&product_ids)
            .bind(&names)
            .bind(&skus)
            .bind(&descriptions)
            .bind(&quantities)
            .bind(&unit_prices)
            .bind(&totals)
            // The timeline entry's id.
            .bind(Uuid::now_v7())
            .bind(EntryKind::Created.as_str())
            .bind(&self.event.actor.role)
            .bind(self.event.event_id)
            .bind(EventType::OrderCreated.routing_key())
            .bind(payload)
            .fetch_one(executor)
            .await
    }
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
            unit_price_minor: line.product.price_minor,
            total_price_minor: line.product_total().map(Money::minor).unwrap_or_default(),
        })
        .collect()
}
