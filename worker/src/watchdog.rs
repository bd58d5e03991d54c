//! The watchdog: periodically looks at every order's oldest unapplied command. One lost on
//! the way (a broker's disk, a purged queue) is published again, with growing pauses and
//! never while it may still be queued; an order whose command was dead-lettered, could not
//! be published, or keeps not arriving is flagged *stalled* for staff (see
//! `common::stall`) and announced in the live feed. It cancels orders not paid in time
//! (`crate::payments::expire_unpaid`). It also prunes idempotency keys past their lifetime and runs the
//! retention sweep. Any number of workers may run it; an advisory lock lets one at a time
//! do a round.

use std::time::Duration;

use common::{config::WorkerSettings, domain::OrderStatus, events::Actor, feed};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::retention;

/// Publications of one command without effect after which its order is flagged stalled;
/// the watchdog keeps re-sending it (ever more rarely) all the same.
const FLAG_AFTER_PUBLICATIONS: i32 = 3;
/// The longest pause between two publications of a missing command.
const MAX_REPUBLISH_PAUSE_SECS: f64 = 3600.0;

/// Arbitrary, fixed key of the advisory lock that elects one watchdog per round.
const WATCHDOG_LOCK: i64 = 0x6f72_6465_7266_6c77;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Orders whose next command was handed to the relay again.
    pub requeued_orders: u64,
    /// Orders newly flagged stalled.
    pub flagged_orders: u64,
    pub pruned_keys: u64,
}

/// Runs rounds every `watchdog_interval` until `shutdown`.
pub async fn run(pool: PgPool, settings: WorkerSettings, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.watchdog_interval) => {},
        }
        export_stalled_count(&pool).await;
        match crate::payments::expire_unpaid(&pool).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "orders not paid in time are being cancelled"),
            Err(error) => tracing::warn!(%error, "cannot expire unpaid orders; next round retries"),
        }
        match round(&pool, settings.stuck_after, settings.idempotency_ttl).await {
            Ok(Some(round)) if round.requeued_orders + round.flagged_orders > 0 => {
                tracing::warn!(
                    requeued_orders = round.requeued_orders,
                    flagged_orders = round.flagged_orders,
                    pruned_keys = round.pruned_keys,
                    "watchdog found orders standing still"
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
    // `next`: each order's oldest unapplied command, once older than `stuck_after`.
    // Flag the order when that command was dead-lettered, parked by the relay, or sent
    // FLAG_AFTER_PUBLICATIONS times without effect. Re-send it (unstamping its row makes the
    // relay publish it again, same event id, so a copy that does arrive is a duplicate)
    // when it is not in the dead-letter queue and no publication or retry of it happened
    // within a pause that doubles with each publication: until then it may still be queued.
    // Orders are locked in id order, as worker batches lock them, so the two cannot
    // deadlock; an order whose command a batch applied meanwhile is left alone.
    let (flagged, requeued_orders): (sqlx::types::Json<Vec<Flagged>>, i64) = sqlx::query_as(
        "WITH next AS (
             SELECT o.id AS order_id, o.stalled_at, x.id AS outbox_id, x.seq, x.routing_key,
                    x.publications, x.published_at, x.retried_at, x.parked_at,
                    x.dead_lettered_at, x.last_error
             FROM orders o
             JOIN outbox x ON x.order_id = o.id AND x.seq = o.applied_seq + 1
                          AND x.routing_key NOT IN ('order.status_changed', 'order.stall_changed', 'order.payment_changed')
             WHERE o.applied_seq < o.last_seq
               AND x.created_at < now() - make_interval(secs => $1)
         ), locked AS MATERIALIZED (
             SELECT o.id FROM orders o JOIN next n ON n.order_id = o.id
             WHERE n.stalled_at IS NULL
               AND (n.dead_lettered_at IS NOT NULL OR n.parked_at IS NOT NULL OR n.publications >= $2)
             ORDER BY o.id FOR NO KEY UPDATE OF o
         ), flagged AS (
             UPDATE orders o SET stalled_at = now(), stalled_seq = n.seq,
                 stalled_reason = CASE
                     WHEN n.dead_lettered_at IS NOT NULL THEN format('command %s (%s) was dead-lettered: %s', n.seq, n.routing_key, coalesce(n.last_error, 'no reason recorded'))
                     WHEN n.parked_at IS NOT NULL THEN format('command %s (%s) could not be published: %s', n.seq, n.routing_key, coalesce(n.last_error, 'no reason recorded'))
                     ELSE format('command %s (%s) was not applied after %s publications', n.seq, n.routing_key, n.publications)
                 END
             FROM next n
             WHERE o.id = n.order_id AND o.id IN (SELECT id FROM locked)
               AND o.applied_seq + 1 = n.seq
             RETURNING o.id AS order_id, o.customer_id, o.status, o.stalled_reason, o.stalled_seq
         ), requeued AS (
             UPDATE outbox x SET published_at = NULL, next_attempt_at = now()
             FROM next n
             WHERE x.id = n.outbox_id AND n.dead_lettered_at IS NULL AND n.published_at IS NOT NULL
               AND greatest(n.published_at, n.retried_at)
                   < now() - make_interval(secs => least($1 * 2 ^ greatest(n.publications - 1, 0), $3))
             RETURNING x.order_id
         )
         SELECT (SELECT COALESCE(json_agg(flagged), '[]') FROM flagged),
                (SELECT count(*) FROM requeued)",
    )
    .bind(stuck_after.as_secs_f64())
    .bind(FLAG_AFTER_PUBLICATIONS)
    .bind(MAX_REPUBLISH_PAUSE_SECS)
    .fetch_one(&mut *tx)
    .await?;
    let pruned_keys = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(key_ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let flagged_orders = flagged.0.len() as u64;
    let announcements = flagged
        .0
        .into_iter()
        .map(|order| {
            feed::stall_changed(
                order.order_id,
                order.customer_id,
                order.status,
                order.stalled_seq,
                Actor::system(),
                "watchdog",
                Some(order.stalled_reason),
            )
        })
        .collect();
    feed::announce(&mut tx, announcements).await?;
    tx.commit().await?;
    Ok(Some(Round {
        requeued_orders: u64::try_from(requeued_orders).unwrap_or(0),
        flagged_orders,
        pruned_keys,
    }))
}

/// An order the round flagged stalled.
#[derive(serde::Deserialize)]
struct Flagged {
    order_id: Uuid,
    customer_id: Uuid,
    status: OrderStatus,
    stalled_reason: String,
    stalled_seq: i64,
}

/// Every worker exports the count, elected or not, so any one of them can be scraped.
async fn export_stalled_count(pool: &PgPool) {
    match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE stalled_at IS NOT NULL")
        .fetch_one(pool)
        .await
    {
        Ok(stalled) => metrics::gauge!("orderflow_orders_stalled").set(stalled as f64),
        Err(error) => tracing::debug!(%error, "cannot count stalled orders"),
    }
}
