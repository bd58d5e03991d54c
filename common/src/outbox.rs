//! Writing events to the outbox table, inside the caller's transaction, so an event exists
//! exactly when the change it announces was committed.

use sqlx::PgConnection;

use crate::events::Envelope;

/// Adds `envelope` to the outbox; the relay publishes it after commit.
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> sqlx::Result<()> {
    let payload = serde_json::to_value(envelope).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (event_id, order_id, seq, routing_key, payload) VALUES ($1, $2, $3, $4, $5)")
        .bind(envelope.event_id)
        .bind(envelope.order_id)
        .bind(envelope.seq)
        .bind(envelope.event_type.routing_key())
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}
