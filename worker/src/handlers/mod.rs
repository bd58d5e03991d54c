//! Applying one order command to PostgreSQL. Knows nothing of AMQP: the consumer decodes,
//! calls `handle`, and acknowledges only after it returned.
//!
//! Each command runs in ONE transaction of few round trips: inbox row (dedupe by
//! `event_id`) and order row lock together, sequence check, state machine, stock (one
//! statement), then timeline, notification and follow-up outbox event (one statement).

mod cancel;
mod created;
mod status_change;
mod stock;
mod transition;

use common::events::{Envelope, EventType};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its transition is committed.
    Applied,
    /// The lifecycle did not allow it; the refusal is recorded and the command is done.
    Refused,
    /// It was applied before (a redelivery); nothing changed.
    Duplicate,
    /// An earlier command of the same order has not been applied yet; retry later.
    Early { next_expected: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying: the database is down, a lock timed out, a deadlock was broken.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: the message names no order, or is not a command.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        HandleError::Transient(error.into())
    }
}

/// The order row as the worker sees it, locked for the transaction.
#[derive(Debug, sqlx::FromRow)]
pub struct LockedOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: common::domain::OrderStatus,
    pub applied_seq: i64,
    pub tracking_number: Option<String>,
}

/// Applies `envelope` exactly once and in per-order sequence.
pub async fn handle(pool: &PgPool, envelope: &Envelope) -> Result<Outcome, HandleError> {
    if !envelope.event_type.is_command() {
        return Err(HandleError::Permanent(format!(
            "{} is not a command the worker applies",
            envelope.event_type.routing_key()
        )));
    }
    // A stuck lock must not hold a worker forever; the message is retried instead.
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await?;
    let Some((order, claimed)) = claim_and_lock(&mut tx, envelope).await? else {
        return Err(HandleError::Permanent(format!(
            "order {} does not exist",
            envelope.order_id
        )));
    };
    if !claimed {
        return Ok(Outcome::Duplicate);
    }
    let next_expected = order.applied_seq + 1;
    if envelope.seq < next_expected {
        return Ok(Outcome::Duplicate);
    }
    if envelope.seq > next_expected {
        // Rolling back also removes the inbox row, so the retry is not mistaken for a duplicate.
        return Ok(Outcome::Early { next_expected });
    }
    let applied = match envelope.event_type {
        EventType::OrderCreated => created::apply(&mut tx, &order, envelope).await?,
        EventType::StatusChangeRequested => status_change::apply(&mut tx, &order, envelope).await?,
        EventType::CancelRequested => cancel::apply(&mut tx, &order, envelope).await?,
        EventType::StatusChanged => unreachable!("checked above: not a command"),
    };
    tx.commit().await?;
    Ok(if applied {
        Outcome::Applied
    } else {
        Outcome::Refused
    })
}

/// Writes the inbox row and locks the order (`NO KEY UPDATE`: the timeline and
/// notification rows that reference it need not wait), in one round trip. `None` when the order does
/// not exist; otherwise the order and whether the inbox row is new (`false`: this event
/// was already processed).
async fn claim_and_lock(
    conn: &mut PgConnection,
    envelope: &Envelope,
) -> sqlx::Result<Option<(LockedOrder, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        order: LockedOrder,
        claimed: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "WITH claimed AS (
             INSERT INTO processed_messages (event_id, order_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING 1
         )
         SELECT id, customer_id, status, applied_seq, tracking_number,
                EXISTS (SELECT 1 FROM claimed) AS claimed
         FROM orders WHERE id = $2 FOR NO KEY UPDATE",
    )
    .bind(envelope.event_id)
    .bind(envelope.order_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| (row.order, row.claimed)))
}

/// Decodes a command's payload; a payload that does not fit its type is permanent.
fn payload<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, HandleError> {
    serde_json::from_value(envelope.payload.clone()).map_err(|e| {
        HandleError::Permanent(format!(
            "{} payload is invalid: {e}",
            envelope.event_type.routing_key()
        ))
    })
}
