//! Queueing a command the system issues itself — what a payment provider said (a webhook's
//! event, a call's answer), an unpaid order's expiry: it takes the order's next sequence
//! number, so the worker applies it in order with the order's other commands, and it is
//! written in the caller's transaction with whatever made it necessary.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{Actor, Envelope, EventType};

/// Queues `event_type` with `payload` for `order_id`, as the system; returns the command's
/// sequence number.
pub async fn queue(
    conn: &mut PgConnection,
    order_id: Uuid,
    event_type: EventType,
    payload: impl Serialize,
    correlation_id: &str,
) -> sqlx::Result<i64> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE orders SET last_seq = last_seq + 1, updated_at = now() WHERE id = $1
         RETURNING last_seq",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await?;
    let envelope = Envelope::new(
        event_type,
        order_id,
        seq,
        Actor::system(),
        correlation_id,
        payload,
    );
    let body = serde_json::to_value(&envelope).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.event_id)
    .bind(order_id)
    .bind(seq)
    .bind(event_type.routing_key())
    .bind(body)
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}
