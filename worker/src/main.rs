//! `worker` binary: loads settings, starts telemetry, migrates, then consumes until
//! Ctrl-C or SIGTERM.

use std::sync::Arc;

use common::{config::Settings, db, shutdown, telemetry};
use tokio_util::sync::CancellationToken;
use worker::consumer::Worker;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let _telemetry = telemetry::init(&settings.log, "worker")?;
    let pool = db::connect(&settings.database).await?;
    db::migrate(&pool).await?;
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signal(shutdown.clone());
    Worker {
        pool,
        settings: Arc::new(settings),
    }
    .run(shutdown)
    .await;
    Ok(())
}
