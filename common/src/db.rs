//! PostgreSQL pool and the embedded migrations shared by api, worker and tests.

use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseSettings;

/// Every schema change, embedded so the binaries migrate at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long start-up keeps retrying an unreachable database before giving up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// Opens the pool, retrying with back-off for up to a minute (a database that starts
/// alongside us is normal); every failed attempt is logged with how to fix it.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(STARTUP_PATIENCE))
        .without_max_times();
    let options = session_options(settings, options);
    (|| connect_once(settings, options.clone()))
        .retry(backoff)
        .notify(|error, delay| {
            tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "database unavailable");
        })
        .await
}

async fn connect_once(
    settings: &DatabaseSettings,
    options: PgConnectOptions,
) -> anyhow::Result<PgPool> {
    let target = format!(
        "postgres://{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    let pool = pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "cannot reach PostgreSQL at {target}: start it (e.g. `pg_ctlcluster 15 main start` \
                 or `docker compose up -d postgres`), create the database (`createdb orderflow`) \
                 or set DATABASE_URL"
            )
        })?;
    Ok(pool)
}

/// Every session gets the statement timeout, so no query or lock wait hangs a request.
pub fn session_options(settings: &DatabaseSettings, options: PgConnectOptions) -> PgConnectOptions {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    options.options([("statement_timeout", timeout_ms.as_str())])
}

/// Pool limits shared by the binaries and the test harness.
pub fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations failed")
}
