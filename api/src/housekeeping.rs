//! Periodic upkeep of the api's own bounded state: expired sign-in budgets in PostgreSQL
//! and idle addresses in the per-client rate limiters.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

const EVERY: Duration = Duration::from_secs(60);

/// Runs until `shutdown`. Several replicas may run it at once: the deletes are idempotent.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        state.guards.login_per_ip.sweep();
        state.guards.register_per_ip.sweep();
        match state.guards.accounts.prune(&state.pool).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "expired sign-in budgets pruned"),
            Err(error) => tracing::warn!(error = %error, "pruning sign-in budgets failed"),
        }
    }
}
