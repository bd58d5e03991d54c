//! Webhooks: the intake turns order events into deliveries, the dispatcher sends them
//! signed (Standard Webhooks), retries them on a schedule and keeps the delivery log.

mod dispatch;
mod intake;
mod schedule;
mod send;

use std::sync::Arc;

use common::config::Settings;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use dispatch::Dispatcher;
use intake::Intake;
pub use send::{Sender, install_tls_provider};

/// Runs the intake and the dispatcher until `stop`.
pub async fn run(
    pool: PgPool,
    settings: Arc<Settings>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let sender = Sender::new(&settings.webhooks)?;
    let dispatcher = Arc::new(Dispatcher::new(
        pool.clone(),
        settings.clone(),
        sender,
        wake.clone(),
    ));
    let intake = Intake {
        pool: pool.clone(),
        settings,
        dispatcher: wake,
    };
    tokio::join!(
        intake.run(stop.clone()),
        dispatcher.run(stop.clone()),
        export_backlog(&pool, &stop)
    );
    Ok(())
}

/// Every few seconds: deliveries waiting for an enabled endpoint, and how long the one most
/// overdue has been due (it grows while workers cannot keep up or are not running).
async fn export_backlog(pool: &PgPool, stop: &CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        let backlog: sqlx::Result<(i64, f64)> = sqlx::query_as(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(d.next_attempt_at)), 0)::float8
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
             WHERE d.status = 'pending'",
        )
        .fetch_one(pool)
        .await;
        match backlog {
            Ok((pending, overdue)) => {
                metrics::gauge!("orderflow_webhook_backlog").set(pending as f64);
                metrics::gauge!("orderflow_webhook_overdue_seconds").set(overdue.max(0.0));
            }
            Err(error) => tracing::debug!(%error, "cannot read the webhook backlog"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
