//! Pricing an order from the catalogue: resolve every line to an active product, refuse
//! stale client prices, merge repeated products, keep one currency.

use std::collections::HashMap;

use common::domain::Money;
use serde::Deserialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError},
    routes::products::{Product, product_columns},
};

/// Most units of one product in one order.
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

/// A line resolved against the catalogue.
pub(super) struct PricedLine {
    pub product: Product,
    pub quantity: i32,
}

impl PricedLine {
    pub fn product_total(&self) -> Option<Money> {
        Money::from_minor(self.product.price_minor).times(i64::from(self.quantity))
    }
}

/// The catalogue lookup of an order's products (by id, or by lower-cased SKU).
pub(crate) const PRICE_SQL: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM products WHERE id = ANY($1) OR lower(sku) = ANY($2)"
);

/// Resolves every line to an active catalogue product, checks client prices and currency,
/// and merges lines of the same product. Lines are returned in SKU order, as orders list them.
pub(super) async fn price_lines(
    conn: impl PgExecutor<'_>,
    lines: &[OrderLineRequest],
) -> ApiResult<Vec<PricedLine>> {
    let mut wanted = Wanted::default();
    wanted.add(lines);
    let products = wanted.fetch(conn).await?;
    resolve(&products, lines)
}

/// The products some orders name, gathered to be read in one statement.
#[derive(Default)]
pub(super) struct Wanted {
    ids: Vec<Uuid>,
    skus: Vec<String>,
}

impl Wanted {
    pub fn add(&mut self, lines: &[OrderLineRequest]) {
        self.ids.extend(lines.iter().filter_map(|l| l.product_id));
        self.skus.extend(
            lines
                .iter()
                .filter_map(|l| l.product_sku.as_deref())
                .map(str::to_lowercase),
        );
    }

    pub async fn fetch(&self, conn: impl PgExecutor<'_>) -> sqlx::Result<Vec<Product>> {
        sqlx::query_as(PRICE_SQL)
            .bind(&self.ids)
            .bind(&self.skus)
            .fetch_all(conn)
            .await
    }
}

/// Prices `lines` against `products` (which may hold other orders' products too).
pub(super) fn resolve(
    products: &[Product],
    lines: &[OrderLineRequest],
) -> ApiResult<Vec<PricedLine>> {
    let by_id: HashMap<Uuid, &Product> = products.iter().map(|p| (p.id, p)).collect();
    let by_sku: HashMap<String, &Product> =
        products.iter().map(|p| (p.sku.to_lowercase(), p)).collect();

    let mut errors = Vec::new();
    let mut merged: HashMap<Uuid, PricedLine> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let (field, found) = match (&line.product_id, &line.product_sku) {
            (Some(id), _) => (format!("items[{i}].product_id"), by_id.get(id)),
            (None, Some(sku)) => (
                format!("items[{i}].product_sku"),
                by_sku.get(&sku.to_lowercase()),
            ),
            (None, None) => unreachable!("validated: every line names a product"),
        };
        let Some(product) = found.filter(|p| p.is_active) else {
            errors.push(FieldError::new(field, "no such product is for sale"));
            continue;
        };
        if let Some(price) = line.unit_price
            && price.minor() != product.price_minor
        {
            return Err(ApiError::conflict(
                "price_changed",
                format!(
                    "items[{i}]: the price of {} is now {} {}, not {price}.",
                    product.sku,
                    Money::from_minor(product.price_minor),
                    product.currency
                ),
            ));
        }
        let entry = merged.entry(product.id).or_insert_with(|| PricedLine {
            product: (*product).clone(),
            quantity: 0,
        });
        entry.quantity += line.quantity;
        if entry.quantity > MAX_QUANTITY {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                "the merged quantity of this product exceeds 1000",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut priced: Vec<PricedLine> = merged.into_values().collect();
    priced.sort_by(|a, b| a.product.sku.cmp(&b.product.sku));
    if priced
        .iter()
        .any(|line| line.product.currency != priced[0].product.currency)
    {
        return Err(ApiError::invalid(
            "items",
            "all products of one order must share one currency",
        ));
    }
    Ok(priced)
}
