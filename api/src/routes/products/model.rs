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
    /// Whether at least one unit can be ordered now.
    pub in_stock: bool,
    /// Units that can be ordered now, shown up to 20 ("20 or more").
    #[schema(minimum = 0, maximum = 20)]
    pub available: i32,
    /// *Staff only*: units available to order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<i32>,
    /// *Staff only*: units held by confirmed orders that have not shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<i32>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Customers learn how many they can buy up to this many, never the real stock level.
pub const AVAILABLE_SHOWN_UP_TO: i32 = 20;

impl ProductResponse {
    /// What a customer sees: availability, not stock levels or reservations.
    fn customer_view(self) -> Self {
        Self {
            stock: None,
            reserved: None,
            ..self
        }
    }

    /// The staff view, or the customer view for a customer.
    pub fn for_viewer(product: Product, staff: bool) -> Self {
        let full = Self::from(product);
        if staff { full } else { full.customer_view() }
    }
}

/// The staff view: everything.
impl From<Product> for ProductResponse {
    fn from(p: Product) -> Self {
        Self {
            in_stock: p.stock > 0,
            available: p.stock.clamp(0, AVAILABLE_SHOWN_UP_TO),
            id: p.id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            price: Money::from_minor(p.price_minor),
            currency: p.currency,
            stock: Some(p.stock),
            reserved: Some(p.reserved),
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
