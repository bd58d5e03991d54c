//! Writing new orders: any number of them — each with its lines, its first timeline entry
//! and its `order.created` event — in ONE statement: one round trip and one WAL flush for
//! the lot, atomic on its own.

use common::{
    domain::Money,
    events::{Envelope, EventType},
    timeline::EntryKind,
};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::model::{ItemRow, OrderRow, order_columns};

/// Everything one order creation writes, priced and ready.
pub(super) struct NewOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub total: Money,
    pub units: i32,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    pub shipping_address: String,
    pub notes: Option<String>,
    pub items: Vec<ItemRow>,
    pub event: Envelope,
}

/// The insert of a batch of orders, passed as one array per column. `bench/create_order.sql`
/// runs it under pgbench with one order (see `bench_scripts`).
pub(crate) const INSERT_ORDERS_SQL: &str = concat!(
    "WITH created AS (
         INSERT INTO orders (id, customer_id, currency, total_amount_minor, items_count, customer_name,
             customer_email, customer_phone, shipping_address, notes)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::int[], $6::text[],
             $7::text[], $8::text[], $9::text[], $10::text[])
         RETURNING ",
    order_columns!(),
    "), lines AS (
         INSERT INTO order_items (id, order_id, product_id, product_name, product_sku, product_description,
             quantity, unit_price_minor, total_price_minor)
         SELECT * FROM UNNEST($11::uuid[], $12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[],
             $17::int[], $18::bigint[], $19::bigint[])
     ), logged AS (
         INSERT INTO order_events (id, order_id, kind, to_status, actor_id, actor_role, seq)
         SELECT e.id, e.order_id, $20, 'pending', e.actor_id, e.actor_role, 1
         FROM UNNEST($21::uuid[], $1::uuid[], $2::uuid[], $22::text[]) AS e(id, order_id, actor_id, actor_role)
     ), queued AS (
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT q.event_id, q.order_id, 1, $23, q.payload
         FROM UNNEST($24::uuid[], $1::uuid[], $25::jsonb[]) AS q(event_id, order_id, payload)
     )
     SELECT * FROM created"
);

/// Inserts `orders` in one statement and returns their rows (in no particular order).
pub(super) async fn insert_orders(
    executor: impl PgExecutor<'_>,
    orders: &[&NewOrder],
) -> sqlx::Result<Vec<OrderRow>> {
    let text = |f: fn(&NewOrder) -> &str| orders.iter().map(|o| f(o)).collect::<Vec<_>>();
    let optional =
        |f: fn(&NewOrder) -> Option<&str>| orders.iter().map(|o| f(o)).collect::<Vec<_>>();
    let items: Vec<&ItemRow> = orders.iter().flat_map(|o| &o.items).collect();
    let item_text = |f: fn(&ItemRow) -> &str| items.iter().map(|i| f(i)).collect::<Vec<_>>();
    let payloads = orders
        .iter()
        .map(|o| serde_json::to_value(&o.event))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query_as(INSERT_ORDERS_SQL)
        .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.customer_id).collect::<Vec<_>>())
        .bind(text(|o| &o.currency))
        .bind(orders.iter().map(|o| o.total.minor()).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.units).collect::<Vec<_>>())
        .bind(text(|o| &o.customer_name))
        .bind(text(|o| &o.customer_email))
        .bind(optional(|o| o.customer_phone.as_deref()))
        .bind(text(|o| &o.shipping_address))
        .bind(optional(|o| o.notes.as_deref()))
        .bind(items.iter().map(|i| i.id).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.order_id).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.product_id).collect::<Vec<_>>())
        .bind(item_text(|i| &i.product_name))
        .bind(item_text(|i| &i.product_sku))
        .bind(
            items
                .iter()
                .map(|i| i.product_description.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.unit_price_minor).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.total_price_minor)
                .collect::<Vec<_>>(),
        )
        .bind(EntryKind::Created.as_str())
        // The timeline entries' ids.
        .bind(orders.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(text(|o| o.event.actor.role.as_str()))
        .bind(EventType::OrderCreated.routing_key())
        .bind(orders.iter().map(|o| o.event.event_id).collect::<Vec<_>>())
        .bind(payloads)
        .fetch_all(executor)
        .await
}
