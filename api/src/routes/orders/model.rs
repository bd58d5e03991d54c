//! Order rows, their public shapes, and the queries the order routes share.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::domain::{Money, OrderStatus, PaymentStatus, Role};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::CurrentUser, error::ApiError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub projected_status: OrderStatus,
    pub currency: String,
    pub total_amount_minor: i64,
    pub items_count: i32,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    pub shipping_address: String,
    pub notes: Option<String>,
    pub tracking_number: Option<String>,
    pub stalled_reason: Option<String>,
    pub stalled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(flatten)]
    pub payment: PaymentRow,
}

/// The money columns of an order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub payment_provider: String,
    pub payment_status: PaymentStatus,
    pub amount_authorized_minor: i64,
    pub amount_captured_minor: i64,
    pub amount_refunded_minor: i64,
    pub payment_client_secret: Option<String>,
    pub payment_due_at: Option<DateTime<Utc>>,
}

macro_rules! order_columns {
    () => {
        "id, customer_id, status, projected_status, currency, total_amount_minor, items_count,
         customer_name, customer_email, customer_phone, shipping_address, notes, tracking_number,
         stalled_reason, stalled_at, created_at, updated_at, payment_provider, payment_status,
         amount_authorized_minor, amount_captured_minor, amount_refunded_minor,
         payment_client_secret, payment_due_at"
    };
}
pub(crate) use order_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub product_name: String,
    pub product_sku: String,
    pub product_description: Option<String>,
    pub quantity: i32,
    pub quantity_shipped: i32,
    pub quantity_cancelled: i32,
    pub unit_price_minor: i64,
    pub total_price_minor: i64,
}

/// One line of an order, as snapshotted when it was placed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderItemResponse {
    pub id: Uuid,
    pub product_id: Uuid,
    pub product_name: String,
    pub product_sku: String,
    pub product_description: Option<String>,
    pub quantity: i32,
    /// Units that left in parcels (see `/api/orders/{id}/fulfillments`).
    pub quantity_shipped: i32,
    /// Units cancelled before they shipped (see `/api/orders/{id}/cancellations`).
    pub quantity_cancelled: i32,
    pub unit_price: Money,
    pub total_price: Money,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    /// The status once the changes already accepted (202) are applied by the workers.
    pub pending_status: Option<OrderStatus>,
    pub currency: String,
    pub total_amount: Money,
    /// Total units over all lines.
    pub items_count: i32,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    pub shipping_address: String,
    pub notes: Option<String>,
    pub tracking_number: Option<String>,
    pub items: Vec<OrderItemResponse>,
    pub payment: PaymentSummary,
    /// *Staff only*: why the order stopped moving (its next command was dead-lettered or
    /// never arrived); new status changes are refused with 409 `order_stalled` until an
    /// admin re-drives or skips the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_reason: Option<String>,
    /// *Staff only*: since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The money on an order (see docs/payments.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentSummary {
    /// `manual`: staff record the money received (cash on delivery, an invoice paid) and
    /// the refunds given. `stripe`: the customer pays by card; shipping captures, refunds
    /// go back to the card.
    pub provider: String,
    pub status: PaymentStatus,
    pub amount_authorized: Money,
    pub amount_captured: Money,
    pub amount_refunded: Money,
    /// What is still to pay: the total less what was captured; nothing once cancelled.
    pub amount_due: Money,
    /// *The order's customer only*, while the order awaits payment: the Stripe
    /// PaymentIntent's client secret, for their front end to confirm the payment with
    /// Stripe.js (`stripe.confirmPayment`). Absent until the PaymentIntent exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// While the order awaits payment: when it is cancelled if still not authorised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl PaymentSummary {
    /// The money as `viewer` may see it.
    pub fn new(row: &PaymentRow, total_minor: i64, status: OrderStatus, viewer: Role) -> Self {
        let awaiting = status == OrderStatus::AwaitingPayment;
        let due = if status == OrderStatus::Cancelled {
            0
        } else {
            total_minor - row.amount_captured_minor
        };
        PaymentSummary {
            provider: row.payment_provider.clone(),
            status: row.payment_status,
            amount_authorized: Money::from_minor(row.amount_authorized_minor),
            amount_captured: Money::from_minor(row.amount_captured_minor),
            amount_refunded: Money::from_minor(row.amount_refunded_minor),
            amount_due: Money::from_minor(due),
            client_secret: row
                .payment_client_secret
                .clone()
                .filter(|_| awaiting && viewer == Role::Customer),
            due_at: row.payment_due_at.filter(|_| awaiting),
        }
    }
}

impl OrderResponse {
    /// The order as `viewer` may see it: staff-only fields are left out for customers.
    pub fn new(order: OrderRow, items: Vec<ItemRow>, viewer: Role) -> Self {
        let staff = viewer.is_staff();
        Self {
            id: order.id,
            customer_id: order.customer_id,
            status: order.status,
            pending_status: (order.projected_status != order.status)
                .then_some(order.projected_status),
            currency: order.currency,
            total_amount: Money::from_minor(order.total_amount_minor),
            items_count: order.items_count,
            customer_name: order.customer_name,
            customer_email: order.customer_email,
            customer_phone: order.customer_phone,
            shipping_address: order.shipping_address,
            notes: order.notes,
            tracking_number: order.tracking_number,
            items: items
                .into_iter()
                .map(|item| OrderItemResponse {
                    id: item.id,
                    product_id: item.product_id,
                    product_name: item.product_name,
                    product_sku: item.product_sku,
                    product_description: item.product_description,
                    quantity: item.quantity,
                    quantity_shipped: item.quantity_shipped,
                    quantity_cancelled: item.quantity_cancelled,
                    unit_price: Money::from_minor(item.unit_price_minor),
                    total_price: Money::from_minor(item.total_price_minor),
                })
                .collect(),
            payment: PaymentSummary::new(
                &order.payment,
                order.total_amount_minor,
                order.status,
                viewer,
            ),
            stalled_reason: order.stalled_reason.filter(|_| staff),
            stalled_at: order.stalled_at.filter(|_| staff),
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

pub const NO_ORDER: &str = "No such order.";

/// Customers see only their own orders; staff see all. `None` for staff.
pub fn owner_filter(user: &CurrentUser) -> Option<Uuid> {
    (!user.role.is_staff()).then_some(user.id)
}

/// The order if `user` may see it; 404 otherwise, whether it exists or not.
pub async fn find_visible(
    conn: &mut PgConnection,
    id: Uuid,
    user: &CurrentUser,
) -> Result<OrderRow, ApiError> {
    sqlx::query_as(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2)"
    ))
    .bind(id)
    .bind(owner_filter(user))
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound(NO_ORDER))
}

/// The lines of several orders.
pub(crate) const ITEMS_OF_SQL: &str =
    "SELECT id, order_id, product_id, product_name, product_sku, product_description, quantity,
        quantity_shipped, quantity_cancelled, unit_price_minor, total_price_minor
 FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, product_sku COLLATE \"C\"";

/// Lines of several orders at once, grouped by order.
pub async fn items_of(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<ItemRow>>> {
    let rows: Vec<ItemRow> = sqlx::query_as(ITEMS_OF_SQL)
        .bind(order_ids)
        .fetch_all(conn)
        .await?;
    let mut grouped: HashMap<Uuid, Vec<ItemRow>> = HashMap::new();
    for row in rows {
        grouped.entry(row.order_id).or_default().push(row);
    }
    Ok(grouped)
}

/// The full response for one order.
pub async fn load_response(
    conn: &mut PgConnection,
    order: OrderRow,
    viewer: Role,
) -> sqlx::Result<OrderResponse> {
    let items = items_of(conn, &[order.id])
        .await?
        .remove(&order.id)
        .unwrap_or_default();
    Ok(OrderResponse::new(order, items, viewer))
}
