//! Applying one order command to PostgreSQL. Knows nothing of AMQP: the consumer decodes,
//! calls `handle`, and acknowledges only after it returned.
//!
//! A batch of commands runs in ONE transaction (a single command is a batch of one): the
//! products they may move stock of are locked first, then per command, in few round trips:
//! inbox row (dedupe by `event_id`) and order row lock together, sequence check, state
//! machine, stock (one statement), then timeline, notification and follow-up outbox event
//! (one statement).

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

/// Applies `command` exactly once and in per-order sequence, in a transaction of its own.
pub async fn handle(pool: &PgPool, command: &Envelope) -> Result<Outcome, HandleError> {
    let outcomes = handle_batch(pool, &[command]).await?;
    Ok(outcomes[0])
}

/// Applies a batch of commands in ONE transaction and returns their outcomes in the order
/// given. Commands run sorted by order and `seq`, so an order's commands in the same batch
/// apply in turn; every product a command may move stock of is locked first, once, in id
/// order, and orders after that in id order, so concurrent batches never deadlock. Any
/// failure rolls the whole batch back: the caller then handles its commands one by one,
/// so one bad command never fails its neighbours.
pub async fn handle_batch(
    pool: &PgPool,
    commands: &[&Envelope],
) -> Result<Vec<Outcome>, HandleError> {
    if let Some(other) = commands.iter().find(|c| !c.event_type.is_command()) {
        return Err(HandleError::Permanent(format!(
            "{} is not a command the worker applies",
            other.event_type.routing_key()
        )));
    }
    let mut turn: Vec<usize> = (0..commands.len()).collect();
    turn.sort_by_key(|&i| (commands[i].order_id, commands[i].seq));
    // A stuck lock must not hold a worker forever; the batch is retried instead.
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await?;
    stock::lock_products(&mut tx, &stock_moving_orders(commands)).await?;
    let mut outcomes = vec![Outcome::Duplicate; commands.len()];
    for i in turn {
        outcomes[i] = apply(&mut tx, commands[i]).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Orders whose command may move stock (reserve, release or ship), so their products must
/// be locked before any order row is.
fn stock_moving_orders(commands: &[&Envelope]) -> Vec<Uuid> {
    let mut orders: Vec<Uuid> = commands
        .iter()
        .filter(|command| match command.event_type {
            EventType::OrderCreated | EventType::CancelRequested => true,
            EventType::StatusChangeRequested => status_change::may_ship(command),
            EventType::StatusChanged => false,
        })
        .map(|command| command.order_id)
        .collect();
    orders.sort_unstable();
    orders.dedup();
    orders
}

/// One command inside the batch's transaction.
async fn apply(conn: &mut PgConnection, command: &Envelope) -> Result<Outcome, HandleError> {
    let Some((order, claimed)) = claim_and_lock(conn, command).await? else {
        return Err(HandleError::Permanent(format!(
            "order {} does not exist",
            command.order_id
        )));
    };
    let next_expected = order.applied_seq + 1;
    if command.seq > next_expected {
        // No inbox row was written for it: its retry is not mistaken for a duplicate.
        return Ok(Outcome::Early { next_expected });
    }
    if !claimed {
        return Ok(Outcome::Duplicate);
    }
    let applied = match command.event_type {
        EventType::OrderCreated => created::apply(conn, &order, command).await?,
        EventType::StatusChangeRequested => status_change::apply(conn, &order, command).await?,
        EventType::CancelRequested => cancel::apply(conn, &order, command).await?,
        EventType::StatusChanged => unreachable!("checked above: not a command"),
    };
    Ok(if applied {
        Outcome::Applied
    } else {
        Outcome::Refused
    })
}

/// Locks the order (`NO KEY UPDATE`: the timeline and notification rows that reference it
/// need not wait) and, when the command is the next in its order's sequence, writes its
/// inbox row, in one round trip. `None` when the order does not exist; otherwise the order
/// and whether the inbox row is new (`false`: this event was already processed, or it is
/// not this command's turn).
async fn claim_and_lock(
    conn: &mut PgConnection,
    command: &Envelope,
) -> sqlx::Result<Option<(LockedOrder, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        order: LockedOrder,
        claimed: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "WITH locked AS (
             SELECT id, customer_id, status, applied_seq, tracking_number
             FROM orders WHERE id = $2 FOR NO KEY UPDATE
         ), claimed AS (
             INSERT INTO processed_messages (event_id, order_id)
             SELECT $1, id FROM locked WHERE applied_seq + 1 = $3
             ON CONFLICT DO NOTHING RETURNING 1
         )
         SELECT locked.*, EXISTS (SELECT 1 FROM claimed) AS claimed FROM locked",
    )
    .bind(command.event_id)
    .bind(command.order_id)
    .bind(command.seq)
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
