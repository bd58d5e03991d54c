//! Orders nobody paid for: once an order has awaited its payment past `payment_due_at`
//! (`PAYMENT_TIMEOUT` after its stock was reserved), a system cancellation with reason
//! `payment_timeout` is queued for it. The worker then releases its stock and cancels its
//! PaymentIntent, unless the payment was authorised first (the state machine refuses a
//! system cancellation of a confirmed order).

use common::{
    events::{CancelRequested, EventType},
    system_commands,
};
use sqlx::PgPool;
use uuid::Uuid;

/// Orders expired per round at most; the next round takes the rest.
const PER_ROUND: i64 = 500;

const REASON: &str = "payment_timeout: not paid in time";

/// Queues the expiry of every order past its payment's due time, each once however many
/// watchdogs run at the same moment (the flag is set by the statement that claims the
/// order, `SKIP LOCKED`). Returns how many.
pub async fn expire_unpaid(pool: &PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE orders SET payment_expiry_queued = true
         WHERE id IN (SELECT id FROM orders
                      WHERE status = 'awaiting_payment' AND NOT payment_expiry_queued
                        AND payment_due_at <= now() AND stalled_at IS NULL
                      ORDER BY payment_due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(PER_ROUND)
    .fetch_all(&mut *tx)
    .await?;
    for order_id in &due {
        let payload = CancelRequested {
            reason: Some(REASON.into()),
        };
        let kind = EventType::CancelRequested;
        let seq =
            system_commands::queue(&mut tx, *order_id, kind, payload, "payment-timeout").await?;
        sqlx::query(
            "INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_role, reason, seq)
             VALUES ($1, $2, 'cancel_requested', 'awaiting_payment', 'cancelled', 'system', $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(order_id)
        .bind(REASON)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(due.len())
}
