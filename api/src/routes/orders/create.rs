//! `POST /api/orders`: validate, price from the catalogue, and write the order, its lines,
//! its first timeline entry and its `order.created` event in one transaction.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    domain::Money,
    events::{Actor, Envelope, EventType, OrderCreated},
    outbox,
    timeline::{self, Entry, EntryKind},
};
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{ItemRow, OrderResponse, order_columns};
use super::pricing::{PricedLine, price_lines};
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
pub(super) const MAX_QUANTITY: i32 = 1000;

/// One line: name a product by `product_id` or `product_sku`, and a quantity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    pub product_id: Option<Uuid>,
    #[schema(min_length = 1, max_length = 64)]
    pub product_sku: Option<String>,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i32,
    /// Optional: the price the client showed. A different catalogue price is refused (409).
    pub unit_price: Option<Money>,
}

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
    let mut tx = state.pool.begin().await?;
    let lines = price_lines(&mut tx, &request.items).await?;
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
    let order = sqlx::query_as(concat!(
        "INSERT INTO orders (id, customer_id, currency, total_amount_minor, items_count, customer_name,
             customer_email, customer_phone, shipping_address, notes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        order_columns!()
    ))
    .bind(order_id)
    .bind(user.id)
    .bind(&currency)
    .bind(total.minor())
    .bind(units)
    .bind(request.customer_name.trim())
    .bind(request.customer_email.trim())
    .bind(request.customer_phone.as_deref().map(str::trim))
    .bind(request.shipping_address.trim())
    .bind(&request.notes)
    .fetch_one(&mut *tx)
    .await?;
    let items = insert_lines(&mut tx, order_id, &lines).await?;
    let actor = Actor {
        user_id: Some(user.id),
        role: user.role.as_str().to_owned(),
    };
    timeline::record(
        &mut tx,
        Entry {
            order_id,
            kind: EntryKind::Created,
            from: None,
            to: Some(common::domain::OrderStatus::Pending),
            actor: &actor,
            reason: None,
            seq: Some(1),
        },
    )
    .await?;
    let payload = OrderCreated {
        customer_id: user.id,
        total_amount: total,
        currency,
        items_count: units,
    };
    outbox::enqueue(
        &mut tx,
        &Envelope::new(
            EventType::OrderCreated,
            order_id,
            1,
            actor,
            request_id,
            payload,
        ),
    )
    .await?;
    let response = OrderResponse::new(order, items, user.role);
    idempotency::complete(&mut tx, user.id, key, StatusCode::CREATED, &response).await?;
    tx.commit().await?;
    Ok(response)
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

async fn insert_lines(
    conn: &mut PgConnection,
    order_id: Uuid,
    lines: &[PricedLine],
) -> ApiResult<Vec<ItemRow>> {
    let mut ids = Vec::with_capacity(lines.len());
    let mut product_ids = Vec::with_capacity(lines.len());
    let mut names = Vec::with_capacity(lines.len());
    let mut skus = Vec::with_capacity(lines.len());
    let mut descriptions = Vec::with_capacity(lines.len());
    let mut quantities = Vec::with_capacity(lines.len());
    let mut unit_prices = Vec::with_capacity(lines.len());
    let mut totals = Vec::with_capacity(lines.len());
    for line in lines {
        ids.push(Uuid::now_v7());
        product_ids.push(line.product.id);
        names.push(line.product.name.clone());
        skus.push(line.product.sku.clone());
        descriptions.push(line.product.description.clone());
        quantities.push(line.quantity);
        unit_prices.push(line.product.price_minor);
        totals.push(line.product_total().map(Money::minor).unwrap_or_default());
    }
    // One round trip for every line.
    let items = sqlx::query_as(
        "INSERT INTO order_items (id, order_id, product_id, product_name, product_sku, product_description,
             quantity, unit_price_minor, total_price_minor)
         SELECT id, $2, product_id, name, sku, description, quantity, unit_price, total
         FROM UNNEST($1::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bigint[], $9::bigint[])
              AS l(id, product_id, name, sku, description, quantity, unit_price, total)
         RETURNING id, order_id, product_id, product_name, product_sku, product_description, quantity,
                   unit_price_minor, total_price_minor",
    )
    .bind(&ids)
    .bind(order_id)
    .bind(&product_ids)
    .bind(&names)
    .bind(&skus)
    .bind(&descriptions)
    .bind(&quantities)
    .bind(&unit_prices)
    .bind(&totals)
    .fetch_all(conn)
    .await?;
    Ok(items)
}
