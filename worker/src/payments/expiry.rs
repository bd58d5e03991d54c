//! Orders nobody paid for: once an order has awaited its payment past `payment_due_at`
//! (`PAYMENT_TIMEOUT` after its stock was reserved), a system cancellation with reason
//! `payment_timeout` is queued for it. The worker then releases its stock and cancels its
//! PaymentIntent, unless the payment was authorised first (the state machine refuses a
//! system cancellation of a confirmed order).

use common::events::{Actor, CancelRequested, Envelope, EventType};
use sqlx::PgPool;
use uuid::Uuid;

/// Orders expired per round at most; the next round takes the rest.
const PER_ROUND: i64 = 500;

/// Queues the expiry of every order past its payment's due time, each once however many
/// watchdogs run at the same moment (the flag is set by the statement that claims the
/// order, `SKIP LOCKED`). Returns how many.
pub async fn expire_unpaid(pool: &PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid, i64)> = sqlx::query_as(
        "UPDATE orders SET payment_expiry_queued = true, last_seq = last_seq + 1, updated_at = now()
         WHERE id IN (SELECT id FROM orders
                      WHERE status = 'awaiting_payment' AND NOT payment_expiry_queued
                        AND payment_due_at <= now() AND stalled_at IS NULL
                      ORDER BY payment_due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id, last_seq",
    )
    .bind(PER_ROUND)
    .fetch_all(&mut *tx)
    .await?;
    let reason = "payment_timeout: not paid in time";
    let envelopes: Vec<Envelope> = due
        .iter()
        .map(|(order_id, seq)| {
            Envelope::new(
                EventType::CancelRequested,
                *order_id,
                *seq,
                Actor::system(),
                "payment-timeout",
                CancelRequested {
                    reason: Some(reason.into()),
                },
            )
        })
        .collect();
    let bodies = envelopes
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "WITH logged AS (
             INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_role, reason, seq)
             SELECT u.id, u.order_id, 'cancel_requested', 'awaiting_payment', 'cancelled', 'system', $5, u.seq
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS u(id, order_id, seq)
         )
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT * FROM unnest($4::uuid[], $2::uuid[], $3::bigint[], $6::text[], $7::jsonb[])",
    )
    .bind(envelopes.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(envelopes.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(reason)
    .bind(envelopes.iter().map(|_| EventType::CancelRequested.routing_key()).collect::<Vec<_>>())
    .bind(bodies)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(due.len())
}
