//! The outbox table, seen from outside the relay: rows parked for an operator, and the
//! backlog as gauges. (Events are written into it by the statements that make the change
//! they announce, so an event exists exactly when its change was committed.)

use sqlx::PgPool;

/// A row the relay set aside, as an operator sees it.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct ParkedRow {
    pub id: i64,
    pub event_id: uuid::Uuid,
    pub order_id: uuid::Uuid,
    pub routing_key: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The oldest parked rows, up to `limit`.
pub async fn parked(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<ParkedRow>> {
    sqlx::query_as(
        "SELECT id, event_id, order_id, routing_key, attempts, last_error, parked_at FROM outbox
         WHERE parked_at IS NOT NULL AND published_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Hands parked rows (these ids, or all when `None`) back to the relay with a fresh
/// attempt budget; returns how many.
pub async fn requeue(pool: &PgPool, ids: Option<&[i64]>) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = now()
         WHERE parked_at IS NOT NULL AND published_at IS NULL AND ($1::bigint[] IS NULL OR id = ANY($1))",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// What is waiting in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Backlog {
    /// Unpublished rows the relay will send.
    pub pending: i64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub oldest_age_secs: f64,
    /// Rows set aside for an operator.
    pub parked: i64,
}

pub async fn backlog(pool: &PgPool) -> sqlx::Result<Backlog> {
    sqlx::query_as(
        "SELECT
             (SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL) AS pending,
             COALESCE((SELECT extract(epoch FROM now() - min(created_at))::float8 FROM outbox
                       WHERE published_at IS NULL AND parked_at IS NULL), 0) AS oldest_age_secs,
             (SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NOT NULL) AS parked",
    )
    .fetch_one(pool)
    .await
}

/// Publishes the backlog as gauges every few seconds until `shutdown`. Every process that
/// relays runs it, so the gauges stay current while the broker is down too.
pub async fn export_backlog(pool: PgPool, shutdown: tokio_util::sync::CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        match backlog(&pool).await {
            Ok(backlog) => {
                metrics::gauge!("orderflow_outbox_backlog").set(backlog.pending as f64);
                metrics::gauge!("orderflow_outbox_oldest_age_seconds").set(backlog.oldest_age_secs);
                metrics::gauge!("orderflow_outbox_parked").set(backlog.parked as f64);
            }
            Err(error) => tracing::debug!(%error, "cannot read the outbox backlog"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {},
        }
    }
}
