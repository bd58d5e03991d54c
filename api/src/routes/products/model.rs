//! A catalogue product: its row, its public shape, and finding one.

use chrono::{DateTime, Utc};
use common::domain::Money;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i32,
    pub reserved: i32,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! product_columns {
    () => {
        "id, sku, name, description, price_minor, currency, stock, reserved, is_active, created_at, updated_at"
    };
}
pub(crate) use product_columns;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: Money,
    pub currency: String,
    /// Units available to order.
    pub stock: i32,
    /// Units held by confirmed orders that have not shipped.
    pub reserved: i32,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductResponse {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            price: Money::from_minor(p.price_minor),
            currency: p.currency,
            stock: p.stock,
            reserved: p.reserved,
            is_active: p.is_active,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Product>> {
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub const NO_PRODUCT: &str = "No such product.";
