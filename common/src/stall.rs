//! Stalled orders. An order whose next command cannot be applied (it was dead-lettered, or
//! it never arrived however often the watchdog re-sent it) is flagged with the reason
//! rather than left standing silently. Staff see the flag and resolve it: *re-drive*
//! hands the order's unapplied commands to the relay again; *skip* records the blocking
//! command as done without effect, with a reason on the timeline, and re-drives the rest.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    domain::OrderStatus,
    events::{Actor, Envelope},
    feed,
    timeline::{self, Entry, EntryKind},
};

/// Records that a worker sent `envelope` to the dead-letter queue and flags its order,
/// unless the command was applied meanwhile; a newly stalled order is announced in the
/// live feed. The first reason is kept.
pub async fn record_dead_letter(
    pool: &PgPool,
    envelope: &Envelope,
    reason: &str,
) -> sqlx::Result<()> {
    let flag = format!(
        "command {} ({}) was dead-lettered: {reason}",
        envelope.seq,
        envelope.event_type.routing_key()
    );
    let mut tx = pool.begin().await?;
    let flagged: Option<(Uuid, OrderStatus, i64)> = sqlx::query_as(
        "WITH marked AS (
             UPDATE outbox SET dead_lettered_at = now(), last_error = $3 WHERE event_id = $1
         )
         UPDATE orders SET stalled_reason = $4, stalled_at = now(), stalled_seq = applied_seq + 1
         WHERE id = $2 AND applied_seq < $5 AND stalled_at IS NULL
         RETURNING customer_id, status, stalled_seq",
    )
    .bind(envelope.event_id)
    .bind(envelope.order_id)
    .bind(reason)
    .bind(&flag)
    .bind(envelope.seq)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((customer_id, status, stalled_seq)) = flagged {
        let event = feed::stall_changed(
            envelope.order_id,
            customer_id,
            status,
            stalled_seq,
            Actor::system(),
            &envelope.correlation_id,
            Some(flag),
        );
        feed::announce(&mut tx, vec![event]).await?;
    }
    tx.commit().await
}

/// Records that a worker put this command in a delay queue: it is waiting, not lost.
pub async fn record_retry(pool: &PgPool, event_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE outbox SET retried_at = now() WHERE event_id = $1")
        .bind(event_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A stalled order as an operator sees it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StalledOrder {
    pub id: Uuid,
    pub stalled_reason: String,
    pub stalled_at: DateTime<Utc>,
    /// The command holding it up.
    pub stalled_seq: i64,
    pub applied_seq: i64,
    pub last_seq: i64,
}

/// The longest-stalled orders first, up to `limit`.
pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<StalledOrder>> {
    sqlx::query_as(
        "SELECT id, stalled_reason, stalled_at, stalled_seq, applied_seq, last_seq FROM orders
         WHERE stalled_at IS NOT NULL ORDER BY stalled_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Why a re-drive or skip was not done.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such order")]
    NotFound,
    #[error("the order is not stalled")]
    NotStalled,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a re-drive or skip did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Resolved {
    /// The command recorded as skipped, for a skip.
    pub skipped_seq: Option<i64>,
    /// Unapplied commands handed to the relay again.
    pub requeued_commands: u64,
}

/// Clears the flag and hands every unapplied command of the order to the relay again (new
/// copies with fresh retry budgets, same event ids: a copy still queued somewhere is
/// dropped by the inbox as a duplicate).
pub async fn redrive(
    conn: &mut PgConnection,
    order_id: Uuid,
    actor: &Actor,
) -> Result<Resolved, ResolveError> {
    lock_stalled(conn, order_id).await?;
    let requeued_commands = requeue_unapplied(conn, order_id, actor).await?;
    tracing::warn!(%order_id, requeued_commands, "stalled order re-driven");
    Ok(Resolved {
        skipped_seq: None,
        requeued_commands,
    })
}

/// Records the order's next command as done without effect (its event id enters the
/// inbox, so no copy of it applies later), notes `reason` on the timeline, clears the flag
/// and re-drives the commands after it.
pub async fn skip(
    conn: &mut PgConnection,
    order_id: Uuid,
    actor: &Actor,
    reason: &str,
) -> Result<Resolved, ResolveError> {
    let seq = lock_stalled(conn, order_id).await?;
    sqlx::query(
        "INSERT INTO processed_messages (event_id, order_id)
         SELECT event_id, order_id FROM outbox
         WHERE order_id = $1 AND seq = $2 AND routing_key NOT IN ('order.status_changed', 'order.stall_changed', 'order.payment_changed')
         ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    let status: crate::domain::OrderStatus = sqlx::query_scalar(
        "UPDATE orders SET applied_seq = $2, updated_at = now(),
             projected_status = CASE WHEN last_seq = $2 THEN status ELSE projected_status END
         WHERE id = $1 RETURNING status",
    )
    .bind(order_id)
    .bind(seq)
    .fetch_one(&mut *conn)
    .await?;
    timeline::record(
        conn,
        Entry {
            order_id,
            kind: EntryKind::Skipped,
            from: Some(status),
            to: Some(status),
            actor,
            reason: Some(reason),
            seq: Some(seq),
        },
    )
    .await?;
    let requeued_commands = requeue_unapplied(conn, order_id, actor).await?;
    tracing::warn!(%order_id, seq, reason, requeued_commands, "stalled command skipped");
    Ok(Resolved {
        skipped_seq: Some(seq),
        requeued_commands,
    })
}

/// Locks a stalled order; returns the command that blocks it (the next one to apply).
async fn lock_stalled(conn: &mut PgConnection, order_id: Uuid) -> Result<i64, ResolveError> {
    let row: Option<(Option<DateTime<Utc>>, i64)> = sqlx::query_as(
        "SELECT stalled_at, applied_seq FROM orders WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Err(ResolveError::NotFound),
        Some((None, _)) => Err(ResolveError::NotStalled),
        Some((Some(_), applied_seq)) => Ok(applied_seq + 1),
    }
}

/// Hands the order's unapplied commands to the relay again, clears the flag and announces
/// that the order is moving again. Call last in the transaction (see `feed::announce`).
async fn requeue_unapplied(
    conn: &mut PgConnection,
    order_id: Uuid,
    actor: &Actor,
) -> sqlx::Result<u64> {
    let requeued = sqlx::query(
        "UPDATE outbox x SET published_at = NULL, next_attempt_at = now(), attempts = 0,
             parked_at = NULL, dead_lettered_at = NULL, retried_at = NULL
         FROM orders o
         WHERE o.id = $1 AND x.order_id = o.id AND x.seq > o.applied_seq
           AND x.routing_key NOT IN ('order.status_changed', 'order.stall_changed', 'order.payment_changed')",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let (customer_id, status, applied_seq): (Uuid, OrderStatus, i64) = sqlx::query_as(
        "UPDATE orders SET stalled_reason = NULL, stalled_at = NULL, stalled_seq = NULL
         WHERE id = $1 RETURNING customer_id, status, applied_seq",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await?;
    let event = feed::stall_changed(
        order_id,
        customer_id,
        status,
        applied_seq,
        actor.clone(),
        &format!("resume-{order_id}"),
        None,
    );
    feed::announce(conn, vec![event]).await?;
    Ok(requeued)
}
