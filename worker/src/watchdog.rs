//! The watchdog: periodically re-enqueues orders whose accepted commands were never applied
//! (e.g. a message dead-lettered or lost with a broker's disk), prunes idempotency keys
//! past their lifetime, and runs the retention sweep. Any number of workers may run it; an
//! advisory lock lets one at a time do a round.

use std::time::Duration;

use common::config::WorkerSettings;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::retention;

/// Publications of one command after which the watchdog leaves it alone: a command that
/// keeps failing stays in the dead-letter queue for an operator instead of cycling.
const MAX_PUBLICATIONS: i32 = 3;

/// Arbitrary, fixed key of the advisory lock that elects one watchdog per round.
const WATCHDOG_LOCK: i64 = 0x6f72_6465_7266_6c77;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Orders whose unapplied commands were handed to the relay again.
    pub requeued_orders: u64,
    pub pruned_keys: u64,
}

/// Runs rounds every `watchdog_interval` until `shutdown`.
pub async fn run(pool: PgPool, settings: WorkerSettings, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.watchdog_interval) => {},
        }
        match round(&pool, settings.stuck_after, settings.idempotency_ttl).await {
            Ok(Some(round)) if round.requeued_orders > 0 => {
                tracing::warn!(
                    requeued_orders = round.requeued_orders,
                    pruned_keys = round.pruned_keys,
                    "watchdog re-enqueued stuck orders"
                );
            }
            Ok(Some(round)) => tracing::debug!(pruned_keys = round.pruned_keys, "watchdog round"),
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "watchdog round failed; next round retries");
                continue;
            }
        }
        // A round that lost the election skips the sweep too, so workers seldom sweep at
        // once; when they do, they only delete the same old rows.
        match retention::sweep(&pool, &settings.retention).await {
            Ok(swept) if swept.total() > 0 => tracing::info!(?swept, "retention sweep"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention sweep failed; next round retries"),
        }
    }
}

/// One round; `None` when another worker's watchdog holds the round.
pub async fn round(
    pool: &PgPool,
    stuck_after: Duration,
    key_ttl: Duration,
) -> sqlx::Result<Option<Round>> {
    let mut tx = pool.begin().await?;
    let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(WATCHDOG_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !elected {
        return Ok(None);
    }
    let stuck_secs = stuck_after.as_secs_f64();
    // Unstamping the outbox rows makes the relay publish them again, with the same event
    // ids: a command that was in fact applied is dropped by the inbox as a duplicate.
    let requeued_orders: i64 = sqlx::query_scalar(
        "WITH stuck AS (
             SELECT id, applied_seq FROM orders
             WHERE applied_seq < last_seq AND updated_at < now() - make_interval(secs => $1)
         ), requeued AS (
             UPDATE outbox o SET published_at = NULL
             FROM stuck
             WHERE o.order_id = stuck.id AND o.seq > stuck.applied_seq
               AND o.routing_key <> 'order.status_changed'
               AND o.published_at < now() - make_interval(secs => $1)
               AND o.publications < $2
             RETURNING o.order_id
         )
         SELECT count(DISTINCT order_id) FROM requeued",
    )
    .bind(stuck_secs)
    .bind(MAX_PUBLICATIONS)
    .fetch_one(&mut *tx)
    .await?;
    let pruned_keys = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(key_ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Some(Round {
        requeued_orders: u64::try_from(requeued_orders).unwrap_or(0),
        pruned_keys,
    }))
}
