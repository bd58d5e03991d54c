//! Applying order commands to PostgreSQL. Knows nothing of AMQP: the consumer decodes,
//! calls `handle_batch` (or `handle`), and acknowledges only after it returned.
//!
//! A batch of commands (a single command is a batch of one) is ONE transaction of a fixed
//! number of statements, however many commands it holds: lock the orders (in id order),
//! read the stock of the products the commands may move, then — once [`plan`] decided every
//! command in memory — write statuses, timeline, notifications and inbox rows in one
//! statement (parcels, when the batch ships or delivers any, in one more), move the stock by deltas in one short statement that locks the products (in
//! id order) and checks the decisions still hold, and finally number the transitions in
//! the live feed and hand their events to the outbox. Products are held only for those
//! last two statements and the commit, so batches for a hot product overlap all their
//! reading, deciding and writing; every batch takes its locks in the same order, so
//! concurrent batches never deadlock.

mod plan;
mod store;

pub use plan::turns;

use common::events::Envelope;
use plan::Command;
use sqlx::PgPool;
use store::StockRead;

/// How new orders are paid, from `PAYMENT_PROVIDER` and `PAYMENT_TIMEOUT`: an order whose
/// stock is reserved under Stripe waits for its payment, at most `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentPolicy {
    pub stripe: bool,
    pub timeout: std::time::Duration,
}

impl PaymentPolicy {
    /// The `manual` provider: orders are confirmed once their stock is reserved.
    pub const MANUAL: PaymentPolicy = PaymentPolicy {
        stripe: false,
        timeout: std::time::Duration::from_secs(1800),
    };

    pub fn of(settings: &common::config::PaymentSettings) -> Self {
        PaymentPolicy {
            stripe: settings.stripe.is_some(),
            timeout: settings.timeout,
        }
    }
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its transition is committed.
    Applied,
    /// The lifecycle did not allow it; the refusal is recorded and the command is done.
    Refused,
    /// It was applied before (a redelivery); nothing changed.
    Duplicate,
    /// An earlier command of the same order has not been applied yet; retry later.
    Early { next_expected: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying: the database is down, a lock timed out, a deadlock was broken.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: the message names no order, or is not a command.
    #[error("{0}")]
    Permanent(String),
}

impl HandleError {
    /// The database could not be reached at all (no connection, or it broke): every other
    /// command would fail the same way now.
    pub fn is_database_unreachable(&self) -> bool {
        let HandleError::Transient(error) = self else {
            return false;
        };
        matches!(
            error.downcast_ref::<sqlx::Error>(),
            Some(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
            )
        )
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        HandleError::Transient(error.into())
    }
}

/// Applies `command` exactly once and in per-order sequence, in a transaction of its own.
pub async fn handle(
    pool: &PgPool,
    policy: PaymentPolicy,
    command: &Envelope,
) -> Result<Outcome, HandleError> {
    let outcomes = handle_batch(pool, policy, &[command]).await?;
    Ok(outcomes[0])
}

/// Applies a batch of commands in ONE transaction and returns their outcomes in the order
/// given. An order's commands apply in `seq` order; one whose predecessor is missing is
/// `Early` and leaves no trace. Any failure rolls the whole batch back: the caller then
/// handles its commands one by one, so one bad command never fails its neighbours.
///
/// The batch first reads its products' stock without locking it, so batches of other
/// workers confirming orders for the same (hot) products never wait for this one to decide
/// and write; only its last statements hold the products. When another batch moved the
/// stock in a way that voids a decision (it sold what this one counted on, or put back what
/// this one refused), the batch is rolled back and decided again on locked stock.
pub async fn handle_batch(
    pool: &PgPool,
    policy: PaymentPolicy,
    commands: &[&Envelope],
) -> Result<Vec<Outcome>, HandleError> {
    let commands = commands
        .iter()
        .map(|envelope| Command::decode(envelope))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(outcomes) = apply(pool, policy, &commands, StockRead::Unlocked).await? {
        return Ok(outcomes);
    }
    metrics::counter!("orderflow_worker_stock_rereads_total").increment(1);
    apply(pool, policy, &commands, StockRead::Locked)
        .await?
        .ok_or_else(|| HandleError::Transient(anyhow::anyhow!("locked stock moved")))
}

/// One attempt at the batch, reading stock as `read` says; `None` when its decisions went
/// stale before it could move the stock (rolled back).
async fn apply(
    pool: &PgPool,
    policy: PaymentPolicy,
    commands: &[Command<'_>],
    read: StockRead,
) -> Result<Option<Vec<Outcome>>, HandleError> {
    // A stuck lock must not hold a worker forever; the batch is retried instead.
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await?;
    let orders = store::lock_orders(&mut tx, commands).await?;
    let stock_moving: Vec<_> = commands
        .iter()
        .filter(|command| command.may_move_stock())
        .map(|command| command.envelope.order_id)
        .collect();
    let stock = store::read_stock(&mut tx, &stock_moving, read).await?;
    let observing: Vec<_> = commands
        .iter()
        .filter(|command| command.observes_payment())
        .map(|command| command.envelope.order_id)
        .collect();
    let known = store::known_references(&mut tx, &observing).await?;
    let delivering: Vec<_> = commands
        .iter()
        .filter(|command| command.reads_parcels())
        .map(|command| command.envelope.order_id)
        .collect();
    let parcels = store::read_parcels(&mut tx, &delivering).await?;
    let plan = plan::plan(commands, orders, stock, parcels, known, policy.stripe)?;
    store::write(&mut tx, &plan.writes, policy.timeout).await?;
    store::write_parcels(&mut tx, &plan.writes).await?;
    if !store::move_stock(&mut tx, &plan.writes.products).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    // Last, so the feed's lock is held only for the commit.
    common::feed::announce(&mut tx, plan.writes.events).await?;
    tx.commit().await?;
    Ok(Some(plan.outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_connection_counts_as_the_database_unreachable() {
        assert!(HandleError::from(sqlx::Error::PoolTimedOut).is_database_unreachable());
        let broken = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(HandleError::from(sqlx::Error::Io(broken)).is_database_unreachable());
        assert!(!HandleError::from(sqlx::Error::RowNotFound).is_database_unreachable());
        assert!(!HandleError::Transient(anyhow::anyhow!("lock timeout")).is_database_unreachable());
        assert!(!HandleError::Permanent("bad payload".into()).is_database_unreachable());
    }
}
