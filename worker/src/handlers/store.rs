//! The batch's statements: lock its orders, read the stock its commands may move (and the
//! parcels they act on), write everything [`super::plan`] decided, and move the stock.

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

use common::domain::{FulfillmentStatus, fulfillment::LineQuantity};

use super::plan::{Command, LockedOrder, Parcel, ProductRow, StockLine, Writes};

/// Locks the commands' orders in id order (`NO KEY UPDATE`: the timeline and notification
/// rows that reference them need not wait). An order that does not exist is absent.
///
/// Whether a command was applied before is decided by its `seq` against the order's
/// `applied_seq`, read under this lock; the inbox's unique key backs that up.
pub async fn lock_orders(
    conn: &mut PgConnection,
    commands: &[Command<'_>],
) -> sqlx::Result<Vec<LockedOrder>> {
    let ids: Vec<Uuid> = commands.iter().map(|c| c.envelope.order_id).collect();
    sqlx::query_as(
        "SELECT id, customer_id, status, applied_seq, tracking_number, currency,
                total_amount_minor, payment_status, amount_authorized_minor,
                amount_captured_minor, amount_refunded_minor, refunds_accepted_minor,
                payment_provider
         FROM orders WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// The provider references the ledgers of `orders` hold (read under the orders' locks).
pub async fn known_references(
    conn: &mut PgConnection,
    orders: &[Uuid],
) -> sqlx::Result<HashSet<String>> {
    if orders.is_empty() {
        return Ok(HashSet::new());
    }
    let references: Vec<String> = sqlx::query_scalar(
        "SELECT provider_reference FROM payment_transactions WHERE order_id = ANY($1)",
    )
    .bind(orders)
    .fetch_all(conn)
    .await?;
    Ok(references.into_iter().collect())
}

/// The products the lines of the orders in `$1` name.
macro_rules! stock_of_orders {
    () => {
        "SELECT id, sku, stock, reserved FROM products
         WHERE id IN (SELECT product_id FROM order_items WHERE order_id = ANY($1))"
    };
}

/// Every line of the orders in `$1` with its product's stock (from `seen`).
macro_rules! stock_lines {
    () => {
        "SELECT i.order_id, i.id AS item_id, s.id AS product_id, s.sku, i.quantity,
                i.quantity_shipped, i.quantity_cancelled, i.quantity_claimed, i.unit_price_minor,
                s.stock, s.reserved
         FROM order_items i JOIN seen s ON s.id = i.product_id WHERE i.order_id = ANY($1)"
    };
}

/// How a batch reads the stock its commands may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockRead {
    /// Without locking: products stay free for other batches while this one decides and
    /// writes; [`move_stock`] then checks the decisions still hold.
    Unlocked,
    /// Locked in id order until commit (`NO KEY UPDATE`: the foreign-key checks of orders
    /// being placed for the same products need not wait), so the decisions cannot go
    /// stale: for a batch whose unlocked read went stale.
    Locked,
}

/// Reads the stock of the products of `orders` with every line. Each product is read (and
/// locked) by one row: locking it once per line (a join) re-locks a row another batch has
/// updated meanwhile through its update chain, which PostgreSQL can report as a deadlock
/// between batches.
pub async fn read_stock(
    conn: &mut PgConnection,
    orders: &[Uuid],
    read: StockRead,
) -> sqlx::Result<Vec<StockLine>> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let sql = match read {
        StockRead::Unlocked => concat!(
            "WITH seen AS MATERIALIZED (",
            stock_of_orders!(),
            ") ",
            stock_lines!()
        ),
        StockRead::Locked => concat!(
            "WITH seen AS MATERIALIZED (",
            stock_of_orders!(),
            " ORDER BY id FOR NO KEY UPDATE) ",
            stock_lines!()
        ),
    };
    sqlx::query_as(sql).bind(orders).fetch_all(conn).await
}

/// A parcel as stored, its lines as two arrays.
#[derive(sqlx::FromRow)]
struct StoredParcel {
    id: Uuid,
    order_id: Uuid,
    status: FulfillmentStatus,
    carrier: Option<String>,
    tracking_number: String,
    item_ids: Vec<Uuid>,
    quantities: Vec<i32>,
}

/// The parcels of `orders` (read under the orders' locks), in the order they shipped.
pub async fn read_parcels(conn: &mut PgConnection, orders: &[Uuid]) -> sqlx::Result<Vec<Parcel>> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<StoredParcel> = sqlx::query_as(
        "SELECT f.id, f.order_id, f.status, f.carrier, f.tracking_number,
                array_agg(l.order_item_id ORDER BY l.order_item_id) AS item_ids,
                array_agg(l.quantity ORDER BY l.order_item_id) AS quantities
         FROM fulfillments f JOIN fulfillment_lines l ON l.fulfillment_id = f.id
         WHERE f.order_id = ANY($1)
         GROUP BY f.id ORDER BY f.order_id, f.seq",
    )
    .bind(orders)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Parcel {
            id: row.id,
            order_id: row.order_id,
            status: row.status,
            carrier: row.carrier,
            tracking_number: row.tracking_number,
            lines: row
                .item_ids
                .into_iter()
                .zip(row.quantities)
                .map(|(item_id, quantity)| LineQuantity { item_id, quantity })
                .collect(),
        })
        .collect())
}

/// Writes the batch's parcels (new ones with their lines; deliveries as a new status) and
/// the units shipped, cancelled and claimed of the lines that moved, in one statement; nothing when
/// the batch has none (the common case costs no statement).
pub async fn write_parcels(conn: &mut PgConnection, writes: &Writes) -> sqlx::Result<()> {
    let (parcels, items) = (&writes.parcels, &writes.items);
    if parcels.is_empty() && items.is_empty() {
        return Ok(());
    }
    let new: Vec<_> = parcels.iter().filter(|row| row.new).collect();
    let lines: Vec<(Uuid, &LineQuantity)> = new
        .iter()
        .flat_map(|row| row.parcel.lines.iter().map(|line| (row.parcel.id, line)))
        .collect();
    let delivered: Vec<Uuid> = parcels
        .iter()
        .filter(|row| !row.new && row.parcel.status == FulfillmentStatus::Delivered)
        .map(|row| row.parcel.id)
        .collect();
    sqlx::query(
        "WITH shipped AS (
             INSERT INTO fulfillments (id, order_id, seq, status, carrier, tracking_number, created_by)
             SELECT u.id, u.order_id, u.seq, 'shipped', u.carrier, u.tracking_number, u.created_by
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::uuid[])
                 AS u(id, order_id, seq, carrier, tracking_number, created_by)
             RETURNING id
         ), lines AS (
             INSERT INTO fulfillment_lines (fulfillment_id, order_item_id, quantity)
             SELECT u.* FROM unnest($7::uuid[], $8::uuid[], $9::int[]) AS u(fulfillment_id, item, quantity)
             WHERE u.fulfillment_id IN (SELECT id FROM shipped)
         ), arrived AS (
             UPDATE fulfillments SET status = 'delivered', delivered_at = now()
             WHERE id = ANY($10) AND status = 'shipped'
         )
         UPDATE order_items i SET quantity_shipped = u.shipped, quantity_cancelled = u.cancelled,
             quantity_claimed = u.claimed
         FROM unnest($11::uuid[], $12::int[], $13::int[], $14::int[]) AS u(id, shipped, claimed, cancelled)
         WHERE i.id = u.id",
    )
    .bind(new.iter().map(|row| row.parcel.id).collect::<Vec<_>>())
    .bind(new.iter().map(|row| row.parcel.order_id).collect::<Vec<_>>())
    .bind(new.iter().map(|row| row.seq).collect::<Vec<_>>())
    .bind(new.iter().map(|row| row.parcel.carrier.as_deref()).collect::<Vec<_>>())
    .bind(new.iter().map(|row| row.parcel.tracking_number.as_str()).collect::<Vec<_>>())
    .bind(new.iter().map(|row| row.actor_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|(parcel, _)| *parcel).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, line)| line.item_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, line)| line.quantity).collect::<Vec<_>>())
    .bind(delivered)
    .bind(items.iter().map(|item| item.id).collect::<Vec<_>>())
    .bind(items.iter().map(|item| item.shipped).collect::<Vec<_>>())
    .bind(items.iter().map(|item| item.claimed).collect::<Vec<_>>())
    .bind(items.iter().map(|item| item.cancelled).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves stock by the batch's deltas in one short statement, locking the products in id
/// order for what is left of the transaction, and only where the decisions still hold: no
/// stock or reservation goes below zero (so every reservation is covered), and a product
/// an order was refused for has not gained stock since it was read. Returns false (and
/// moves nothing the caller should keep) when any product fails that check: the batch must
/// be decided again on locked stock.
pub async fn move_stock(conn: &mut PgConnection, products: &[ProductRow]) -> sqlx::Result<bool> {
    if products.is_empty() {
        return Ok(true);
    }
    let moved: Vec<Uuid> = sqlx::query_scalar(
        "WITH locked AS MATERIALIZED (
             SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
         )
         UPDATE products p SET stock = p.stock + u.stock_delta,
             reserved = p.reserved + u.reserved_delta, updated_at = now()
         FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[])
             AS u(id, stock_delta, reserved_delta, refused_at)
         WHERE p.id = u.id AND p.id IN (SELECT id FROM locked)
           AND p.stock + u.stock_delta >= 0 AND p.reserved + u.reserved_delta >= 0
           AND (u.refused_at IS NULL OR p.stock <= u.refused_at)
         RETURNING p.id",
    )
    .bind(products.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(products.iter().map(|p| p.stock_delta).collect::<Vec<_>>())
    .bind(
        products
            .iter()
            .map(|p| p.reserved_delta)
            .collect::<Vec<_>>(),
    )
    .bind(products.iter().map(|p| p.refused_at).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(moved.len() == products.len())
}

/// Writes a decided batch in one statement, payment ledger rows and provider calls included, all but its stock
/// (moved after it by [`move_stock`]; its events are announced last, see
/// `common::feed::announce`). Once no accepted command is pending, an order's projected status (what the API checks new requests against) converges on the
/// real one; applying the command an order was stalled on clears the flag. Every entry
/// of the batch carries the same instant; their v7 ids, made in order, keep them in order.
///
/// An order that starts waiting for its payment is due `payment_timeout` from now.
pub async fn write(
    conn: &mut PgConnection,
    writes: &Writes,
    payment_timeout: std::time::Duration,
) -> sqlx::Result<()> {
    let Writes {
        orders,
        entries,
        notifications,
        emails,
        events: _,
        ledger,
        processed,
        products: _,
        calls,
        parcels: _,
        items: _,
    } = writes;
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH at AS (SELECT clock_timestamp() AS t),
         moved AS (
             UPDATE orders o SET status = u.status::order_status, tracking_number = u.tracking_number,
                 applied_seq = u.applied_seq, payment_status = u.payment_status::payment_status,
                 amount_authorized_minor = u.authorized, amount_captured_minor = u.captured,
                 amount_refunded_minor = u.refunded, refunds_accepted_minor = u.refunds_accepted,
                 payment_provider = u.provider, total_amount_minor = u.total,
                 payment_due_at = CASE WHEN u.status = 'awaiting_payment' AND o.payment_due_at IS NULL
                                       THEN now() + make_interval(secs => $44) ELSE o.payment_due_at END,
                 projected_status = CASE WHEN o.last_seq = u.applied_seq THEN u.status::order_status
                                         ELSE o.projected_status END,
                 updated_at = now(),
                 stalled_reason = CASE WHEN o.stalled_seq <= u.applied_seq THEN NULL ELSE o.stalled_reason END,
                 stalled_at = CASE WHEN o.stalled_seq <= u.applied_seq THEN NULL ELSE o.stalled_at END,
                 stalled_seq = CASE WHEN o.stalled_seq <= u.applied_seq THEN NULL ELSE o.stalled_seq END
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $26::text[],
                         $27::bigint[], $28::bigint[], $29::bigint[], $30::bigint[], $45::text[],
                         $50::bigint[])
                 AS u(id, status, tracking_number, applied_seq, payment_status, authorized,
                      captured, refunded, refunds_accepted, provider, total)
             WHERE o.id = u.id
         ), entries AS (
             INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq, created_at)
             SELECT u.id, u.order_id, u.kind, u.from_status::order_status, u.to_status::order_status,
                    u.actor_id, u.actor_role, u.reason, u.seq, at.t
             FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::text[],
                         $12::text[], $13::bigint[])
                 AS u(id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq), at
         ), notified AS (
             INSERT INTO notifications (id, user_id, order_id, kind, message)
             SELECT * FROM unnest($14::uuid[], $15::uuid[], $16::uuid[], $17::text[], $18::text[])
         ), inbox AS (
             INSERT INTO processed_messages (event_id, order_id)
             SELECT * FROM unnest($19::uuid[], $20::uuid[])
         ), ledger AS (
             INSERT INTO payment_transactions (id, order_id, kind, amount_minor, provider,
                 provider_reference, actor_id, note, payment_status, created_at)
             SELECT u.id, u.order_id, u.kind, u.amount, o.payment_provider, u.reference,
                    u.actor_id, u.note, u.payment_status::payment_status, at.t
             FROM unnest($31::uuid[], $32::uuid[], $33::text[], $34::bigint[], $35::text[],
                         $36::uuid[], $37::text[], $38::text[])
                 AS u(id, order_id, kind, amount, reference, actor_id, note, payment_status)
             JOIN orders o ON o.id = u.order_id, at
         ), calls AS (
             INSERT INTO payment_calls (id, order_id, kind, amount_minor, idempotency_key)
             SELECT * FROM unnest($39::uuid[], $40::uuid[], $41::text[], $42::bigint[], $43::text[])
             ON CONFLICT (idempotency_key) DO NOTHING
         )
         INSERT INTO emails (id, order_id, status, recipient, message, tracking_number,
             payment_kind, payment_amount_minor, amount_paid_minor, amount_refunded_minor)
         SELECT u.id, u.order_id, u.status::order_status, o.customer_email, u.message,
                u.tracking_number, u.payment_kind, u.amount, u.paid, u.refunded
         FROM unnest($21::uuid[], $22::uuid[], $23::text[], $24::text[], $25::text[],
                     $46::text[], $47::bigint[], $48::bigint[], $49::bigint[])
             AS u(id, order_id, status, message, tracking_number, payment_kind, amount, paid, refunded)
         JOIN orders o ON o.id = u.order_id
         JOIN users c ON c.id = o.customer_id AND c.order_emails",
    )
    .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.tracking_number.as_deref()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.applied_seq).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.from.map(|s| s.as_str())).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.to.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.actor_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.actor_role.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.reason.as_deref()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.user_id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.order_id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.message.as_str()).collect::<Vec<_>>())
    .bind(processed.iter().map(|(event, _)| *event).collect::<Vec<_>>())
    .bind(processed.iter().map(|(_, order)| *order).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.message.as_str()).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.tracking_number.as_deref()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.payment_status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.amount_authorized_minor).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.amount_captured_minor).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.amount_refunded_minor).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.refunds_accepted_minor).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.id).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.order_id).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.kind).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.amount_minor).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.provider_reference.as_str()).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.actor_id).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.note.as_deref()).collect::<Vec<_>>())
    .bind(ledger.iter().map(|l| l.payment_status.as_str()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.order_id).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.kind).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.amount_minor).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.idempotency_key.as_str()).collect::<Vec<_>>())
    .bind(payment_timeout.as_secs_f64())
    .bind(orders.iter().map(|o| o.payment_provider.as_str()).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.receipt.as_ref().map(|r| r.kind)).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.receipt.as_ref().map(|r| r.amount)).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.receipt.as_ref().map(|r| r.paid)).collect::<Vec<_>>())
    .bind(emails.iter().map(|e| e.receipt.as_ref().map(|r| r.refunded)).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.total_amount_minor).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
