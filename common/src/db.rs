//! PostgreSQL pool and the embedded migrations shared by api, worker and tests.

use anyhow::Context;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseSettings;

/// Every schema change, embedded so the binaries migrate at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens the pool, failing fast with a message that says how to fix an unreachable server.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
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
