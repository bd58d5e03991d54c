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

pub use dispatch::Dispatcher;
pub use intake::Intake;
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
        pool,
        settings,
        dispatcher: wake,
    };
    tokio::join!(intake.run(stop.clone()), dispatcher.run(stop));
    Ok(())
}
