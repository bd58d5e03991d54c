//! Per-account login budgets, shared by every api replica through PostgreSQL.
//!
//! An attempt is *reserved* before the password is checked, so N parallel guesses spend N
//! of the budget; a successful sign-in clears the account's count. Once
//! `LOGIN_MAX_FAILURES` attempts fall in one `LOGIN_LOCKOUT_SECS` window, further attempts
//! get 429 until the window ends — even with the right password, or guessing would simply
//! continue. Known accounts are keyed by id (so username and email share one budget),
//! unknown names by the name itself, and both behave alike so a lockout reveals nothing.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::ApiError;

/// Rows deleted per statement when pruning, so a prune never holds locks for long.
const PRUNE_BATCH: i64 = 1_000;

pub struct AccountLimit {
    max_attempts: u32,
    window: Duration,
}

/// Whose budget an attempt spends.
pub enum AccountKey<'a> {
    User(Uuid),
    UnknownName(&'a str),
}

impl AccountKey<'_> {
    fn render(&self) -> String {
        match self {
            AccountKey::User(id) => format!("user:{id}"),
            AccountKey::UnknownName(name) => format!("name:{}", name.trim().to_lowercase()),
        }
    }
}

impl AccountLimit {
    pub fn new(max_attempts: u32, window: Duration) -> Self {
        Self {
            max_attempts,
            window,
        }
    }

    /// Counts one attempt for `key`, or answers 429 when its window's budget is spent.
    pub async fn reserve(
        &self,
        conn: &mut PgConnection,
        key: AccountKey<'_>,
    ) -> Result<(), ApiError> {
        let (attempts, remaining_secs): (i32, f64) = sqlx::query_as(
            "INSERT INTO login_attempts AS a (account_key, attempts, window_started_at)
             VALUES ($1, 1, now())
             ON CONFLICT (account_key) DO UPDATE SET
                 attempts = CASE WHEN a.window_started_at <= now() - make_interval(secs => $2)
                                 THEN 1 ELSE a.attempts + 1 END,
                 window_started_at = CASE WHEN a.window_started_at <= now() - make_interval(secs => $2)
                                          THEN now() ELSE a.window_started_at END
             RETURNING attempts,
                 extract(epoch FROM window_started_at + make_interval(secs => $2) - now())::float8",
        )
        .bind(key.render())
        .bind(self.window.as_secs_f64())
        .fetch_one(conn)
        .await?;
        if u32::try_from(attempts).unwrap_or(u32::MAX) > self.max_attempts {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: remaining_secs.ceil().max(1.0) as u64,
            });
        }
        Ok(())
    }

    /// Forgets `key`'s attempts: its owner signed in, or an admin unlocked it.
    pub async fn clear(conn: &mut PgConnection, key: AccountKey<'_>) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM login_attempts WHERE account_key = $1")
            .bind(key.render())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Deletes budgets whose window has ended, in bounded batches; returns how many.
    pub async fn prune(&self, pool: &PgPool) -> sqlx::Result<u64> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM login_attempts WHERE account_key IN (
                     SELECT account_key FROM login_attempts
                     WHERE window_started_at <= now() - make_interval(secs => $1)
                     LIMIT $2)",
            )
            .bind(self.window.as_secs_f64())
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
