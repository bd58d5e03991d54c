//! Changing the catalogue (vendors and admins): create, update, adjust stock.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::domain::Money;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::StaffUser,
    error::{ApiError, ApiResult, Problem, unique_violation},
    extract::{AppJson, AppPath, parse_value},
    idempotency::{self, Created},
    state::AppState,
    validation::Violations,
};

use super::model::{NO_PRODUCT, Product, ProductResponse, find, product_columns};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub sku: String,
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    pub price: Money,
    /// ISO 4217 code; default `USD`.
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Initial units on hand; default 0.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i32>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub sku: Option<String>,
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    pub price: Option<Money>,
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockRequest {
    /// Units to add (positive) or remove (negative); stock stays within 0 to 1,000,000,000.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub delta: i32,
}

const MAX_STOCK: i32 = 1_000_000_000;

fn validate(
    v: &mut Violations,
    sku: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    currency: Option<&str>,
) {
    if let Some(sku) = sku {
        v.length(sku, "sku", 1, 64).check(
            sku.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "sku",
            "may hold only letters, digits, '-', '_' and '.'",
        );
    }
    if let Some(name) = name {
        v.length(name.trim(), "name", 1, 255);
    }
    if let Some(description) = description {
        v.length(description, "description", 0, 2000);
    }
    if let Some(currency) = currency {
        v.check(
            currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()),
            "currency",
            "must be a three-letter ISO 4217 code like USD",
        );
    }
}

fn map_unique(error: sqlx::Error) -> ApiError {
    match unique_violation(&error) {
        Some("products_sku_key") => {
            ApiError::conflict("sku_taken", "A product with this SKU already exists.")
        }
        _ => error.into(),
    }
}

#[utoipa::path(
    post, path = "/api/products", tag = "products", security(("bearer" = [])),
    request_body = CreateProductRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body")),
    responses(
        (status = 201, description = "Created", body = ProductResponse),
        (status = 403, description = "Not a vendor or admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "SKU taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_product(
    State(state): State<AppState>,
    StaffUser(user): StaffUser,
    headers: HeaderMap,
    AppJson(raw): AppJson<serde_json::Value>,
) -> ApiResult<Response> {
    let body: CreateProductRequest = parse_value(&raw)?;
    let currency = body.currency.clone().unwrap_or_else(|| "USD".to_owned());
    let stock = body.stock.unwrap_or(0);
    let mut v = Violations::new();
    validate(
        &mut v,
        Some(&body.sku),
        Some(&body.name),
        body.description.as_deref(),
        Some(&currency),
    );
    v.check(
        (0..=MAX_STOCK).contains(&stock),
        "stock",
        "must be from 0 to 1000000000",
    );
    v.finish()?;
    let creating = idempotency::once(
        state.pool.clone(),
        user.id,
        &headers,
        &raw,
        |key| async move {
            let mut tx = state.pool.begin().await?;
            let product: Product = sqlx::query_as(concat!(
            "INSERT INTO products (id, sku, name, description, price_minor, currency, stock, is_active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            product_columns!()
        ))
        .bind(Uuid::now_v7())
        .bind(body.sku.trim())
        .bind(body.name.trim())
        .bind(&body.description)
        .bind(body.price.minor())
        .bind(&currency)
        .bind(stock)
        .bind(body.is_active.unwrap_or(true))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_unique)?;
            let response = ProductResponse::from(product);
            idempotency::complete(
                &mut tx,
                user.id,
                key.as_ref(),
                StatusCode::CREATED,
                &response,
            )
            .await?;
            tx.commit().await?;
            Ok(response)
        },
    );
    let product = match creating.await? {
        Created::Replayed(response) => return Ok(response),
        Created::New(product) => product,
    };
    let location = format!("/api/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(product),
    )
        .into_response())
}

#[utoipa::path(
    put, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "OK", body = ProductResponse),
        (status = 403, description = "Not allowed for this role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "SKU taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_product(
    State(state): State<AppState>,
    _: StaffUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<UpdateProductRequest>,
) -> ApiResult<Json<ProductResponse>> {
    let mut v = Violations::new();
    validate(
        &mut v,
        body.sku.as_deref(),
        body.name.as_deref(),
        body.description.as_deref(),
        body.currency.as_deref(),
    );
    v.finish()?;
    // Orders already placed keep the price they were snapshotted with.
    let product: Product = sqlx::query_as(concat!(
        "UPDATE products SET sku = COALESCE($2, sku), name = COALESCE($3, name),
             description = COALESCE($4, description), price_minor = COALESCE($5, price_minor),
             currency = COALESCE($6, currency), is_active = COALESCE($7, is_active), updated_at = now()
         WHERE id = $1 RETURNING ",
        product_columns!()
    ))
    .bind(id)
    .bind(body.sku.as_deref().map(str::trim))
    .bind(body.name.as_deref().map(str::trim))
    .bind(&body.description)
    .bind(body.price.map(Money::minor))
    .bind(&body.currency)
    .bind(body.is_active)
    .fetch_optional(&state.pool)
    .await
    .map_err(map_unique)?
    .ok_or(ApiError::NotFound(NO_PRODUCT))?;
    Ok(Json(product.into()))
}

#[utoipa::path(
    post, path = "/api/products/{id}/stock", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = AdjustStockRequest,
    responses(
        (status = 200, description = "OK", body = ProductResponse),
        (status = 403, description = "Not allowed for this role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would take stock below zero or above 1,000,000,000", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn adjust_stock(
    State(state): State<AppState>,
    _: StaffUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<AdjustStockRequest>,
) -> ApiResult<Json<ProductResponse>> {
    Violations::new()
        .check(
            (-MAX_STOCK..=MAX_STOCK).contains(&body.delta),
            "delta",
            "must be from -1000000000 to 1000000000",
        )
        .finish()?;
    let mut conn = state.pool.acquire().await?;
    // One atomic statement: concurrent adjustments and reservations cannot interleave.
    let updated: Option<Product> = sqlx::query_as(concat!(
        "UPDATE products SET stock = stock + $2, updated_at = now()
         WHERE id = $1 AND stock + $2::bigint BETWEEN 0 AND 1000000000 RETURNING ",
        product_columns!()
    ))
    .bind(id)
    .bind(body.delta)
    .fetch_optional(&mut *conn)
    .await?;
    match updated {
        Some(product) => Ok(Json(product.into())),
        None => match find(&mut conn, id).await? {
            None => Err(ApiError::NotFound(NO_PRODUCT)),
            Some(product) => Err(ApiError::conflict(
                "insufficient_stock",
                format!(
                    "Stock is {}; it cannot change by {}.",
                    product.stock, body.delta
                ),
            )),
        },
    }
}
