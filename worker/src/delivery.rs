//! What happens to one delivery: decode, apply, then acknowledge — or schedule a retry, or
//! dead-letter it with the reason. The acknowledgement always comes after the outcome is
//! durable (the commit, or the confirmed republish).

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use common::{
    broker::Topology,
    events::{Envelope, EventType},
    stall,
};
use futures_util::FutureExt;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    handlers::{self, HandleError, Outcome},
    republish,
};

/// How often an early command is put back before it is declared stuck.
pub const EARLY_RETRY_LIMIT: u32 = 40;

/// Shared by every delivery of a session.
pub struct Context {
    pub pool: PgPool,
    /// A channel on the worker's publishing connection, in confirm mode.
    pub publisher: Channel,
    pub topology: Topology,
    pub max_attempts: u32,
    pub payments: crate::handlers::PaymentPolicy,
    /// Wakes this process's outbox relay after a command wrote an event.
    pub relay_wake: Arc<Notify>,
    /// Cancelled when a delivery's retry or dead letter could not be published: the session
    /// ends and reconnects after a pause, and the unacked delivery goes back to the queue
    /// with it, instead of being requeued at once into the same failure.
    pub session_failed: CancellationToken,
}

/// What to do with a delivery once its outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Ack,
    RetryLater { delay: Duration },
    DeadLetter { reason: String },
}

/// Pure decision from an outcome and the number of earlier retries of this message.
pub fn decide(outcome: &Result<Outcome, HandleError>, retries: u32, max_attempts: u32) -> Decision {
    match outcome {
        Ok(Outcome::Applied | Outcome::Refused | Outcome::Duplicate) => Decision::Ack,
        Ok(Outcome::Early { next_expected }) if retries + 1 >= EARLY_RETRY_LIMIT => {
            Decision::DeadLetter {
                reason: format!(
                    "sequence gap: command {next_expected} of this order never arrived"
                ),
            }
        }
        Ok(Outcome::Early { .. }) => Decision::RetryLater {
            delay: backoff(retries, 50, 2_000),
        },
        Err(HandleError::Transient(error)) if retries + 1 >= max_attempts => Decision::DeadLetter {
            reason: format!("gave up after {max_attempts} attempts: {error:#}"),
        },
        Err(HandleError::Transient(_)) => Decision::RetryLater {
            delay: backoff(retries, 500, 30_000),
        },
        Err(HandleError::Permanent(reason)) => Decision::DeadLetter {
            reason: reason.clone(),
        },
    }
}

/// `base × 2^retries` milliseconds, capped.
fn backoff(retries: u32, base_ms: u64, cap_ms: u64) -> Duration {
    Duration::from_millis(base_ms.saturating_mul(1u64 << retries.min(16)).min(cap_ms))
}

/// A decoded delivery on its way through a batch.
struct Command {
    delivery: Delivery,
    envelope: Envelope,
    span: tracing::Span,
}

/// Handles a batch of deliveries to the end: the commands are applied in one transaction
/// (or, when that fails, one by one), then each is settled. A panic in a handler nacks that
/// message back to the queue; the queue's delivery limit dead-letters it if it keeps
/// failing. A delivery whose outcome could not be made durable (retry or dead letter
/// unpublished, ack lost) ends the session.
pub async fn process_batch(context: Arc<Context>, deliveries: Vec<Delivery>) {
    let started = Instant::now();
    metrics::histogram!("orderflow_worker_batch_size").record(deliveries.len() as f64);
    let mut commands = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let span = message_span(&delivery);
        if delivery.redelivered {
            metrics::counter!("orderflow_worker_redeliveries_total").increment(1);
        }
        match Envelope::decode(&delivery.data) {
            Ok(envelope) => {
                span.record("order_id", tracing::field::display(envelope.order_id));
                span.record("request_id", envelope.correlation_id.as_str());
                commands.push(Command {
                    delivery,
                    envelope,
                    span,
                });
            }
            Err(error) => {
                let reason = error.to_string();
                let settled = reject_undecodable(&context, &delivery, &reason);
                settle_or_fail(&context, settled.instrument(span)).await;
            }
        }
    }
    let outcomes = apply_all(&context.pool, context.payments, &commands).await;
    // Settled side by side: a retry or dead letter waits for its confirm without holding
    // up its neighbours' acks.
    let settlements = commands.iter().zip(outcomes).map(|(command, outcome)| {
        let settled = async {
            let Some(outcome) = outcome else {
                tracing::error!("handler panicked; message returned to the queue");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                command.delivery.acker.nack(requeue).await?;
                return Ok(());
            };
            settle(&context, command, outcome, started).await
        };
        settle_or_fail(&context, settled.instrument(command.span.clone()))
    });
    futures_util::future::join_all(settlements).await;
}

/// The outcome of every command, in order: all from one transaction when the batch
/// commits, all the same transient failure when the database cannot be reached, else from
/// one transaction each (in the batch's order), each retried in place
/// for brief hiccups (a lock timeout, a failover) before it is handed back to the broker
/// for a longer wait. `None` for a command whose handler panicked.
async fn apply_all(
    pool: &PgPool,
    policy: handlers::PaymentPolicy,
    commands: &[Command],
) -> Vec<Option<Result<Outcome, HandleError>>> {
    if commands.len() > 1 {
        let envelopes: Vec<&Envelope> = commands.iter().map(|c| &c.envelope).collect();
        let batch =
            AssertUnwindSafe(handlers::handle_batch(pool, policy, &envelopes)).catch_unwind();
        match batch.await {
            Ok(Ok(outcomes)) => return outcomes.into_iter().map(|o| Some(Ok(o))).collect(),
            // Applying the commands one by one would only meet the same outage once per
            // command (retries included): they all wait in the delay queue instead.
            Ok(Err(error)) if error.is_database_unreachable() => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    size = commands.len(),
                    "batch failed: database unreachable; every command will be retried"
                );
                return commands
                    .iter()
                    .map(|_| Some(Err(HandleError::Transient(anyhow::anyhow!("{error:#}")))))
                    .collect();
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    size = commands.len(),
                    "batch failed; applying its commands one by one"
                )
            }
            Err(_) => tracing::warn!(
                size = commands.len(),
                "batch panicked; applying its commands one by one"
            ),
        }
        metrics::counter!("orderflow_worker_batch_fallbacks_total").increment(1);
    }
    let turn = handlers::turns(
        commands
            .iter()
            .map(|c| (c.envelope.order_id, c.envelope.seq)),
    );
    let mut outcomes: Vec<Option<Result<Outcome, HandleError>>> =
        commands.iter().map(|_| None).collect();
    for i in turn {
        let envelope = &commands[i].envelope;
        let attempt = || handlers::handle(pool, policy, envelope);
        let retried = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(2),
            )
            .when(|error| matches!(error, HandleError::Transient(_)));
        outcomes[i] = AssertUnwindSafe(retried)
            .catch_unwind()
            .instrument(commands[i].span.clone())
            .await
            .ok();
    }
    outcomes
}

fn message_span(delivery: &Delivery) -> tracing::Span {
    tracing::info_span!(
        "message",
        routing_key = %delivery.routing_key,
        message_id = delivery.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default(),
        order_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    )
}

/// Awaits a settlement; one that failed ends the session (the broker redelivers).
async fn settle_or_fail(context: &Context, settled: impl Future<Output = anyhow::Result<()>>) {
    if let Err(error) = settled.await {
        tracing::warn!(
            error = format!("{error:#}"),
            "could not settle the message; reconnecting, the broker redelivers it"
        );
        metrics::counter!("orderflow_worker_settle_failures_total").increment(1);
        context.session_failed.cancel();
    }
}

async fn reject_undecodable(
    context: &Context,
    delivery: &Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    tracing::error!(%reason, "dead-lettering");
    republish::dead_letter(&context.publisher, &context.topology, delivery, reason).await?;
    delivery.acker.ack(BasicAckOptions::default()).await?;
    count_message("undecodable", "dead_lettered");
    Ok(())
}

/// Acts on one command's outcome: ack, or republish for a retry or to the dead letters
/// and then ack.
async fn settle(
    context: &Context,
    command: &Command,
    outcome: Result<Outcome, HandleError>,
    started: Instant,
) -> anyhow::Result<()> {
    let Command {
        delivery, envelope, ..
    } = command;
    let retries = republish::retries(delivery);
    let kind = envelope.event_type.routing_key();
    let lag = (chrono::Utc::now() - envelope.occurred_at).as_seconds_f64();
    metrics::histogram!("orderflow_worker_queue_lag_seconds", "type" => kind).record(lag.max(0.0));
    let decision = decide(&outcome, retries, context.max_attempts);
    match (&outcome, &decision) {
        (Ok(outcome), Decision::Ack) => tracing::info!(
            ?outcome,
            seq = envelope.seq,
            kind = envelope.event_type.routing_key(),
            redelivered = delivery.redelivered,
            "message handled"
        ),
        (_, Decision::RetryLater { delay }) => {
            tracing::info!(?outcome, retries, ?delay, "message will be retried")
        }
        (_, Decision::DeadLetter { reason }) => tracing::error!(%reason, "dead-lettering"),
        (Err(_), Decision::Ack) => {}
    }
    let outcome_label = label(&outcome, &decision);
    match &decision {
        Decision::Ack => {}
        Decision::RetryLater { delay } => {
            // Only waits for a transient failure matter to the watchdog: the command is
            // in a delay queue, not lost. (An early command is never the one it looks at.)
            if outcome.is_err() {
                note(stall::record_retry(&context.pool, envelope.event_id).await);
            }
            republish::retry_later(&context.publisher, &context.topology, delivery, *delay).await?
        }
        Decision::DeadLetter { reason } => {
            // Flag the order before the command leaves for the dead-letter queue, so it is
            // never left standing unflagged (the watchdog flags it if this write fails).
            note(stall::record_dead_letter(&context.pool, envelope, reason).await);
            republish::dead_letter(&context.publisher, &context.topology, delivery, reason).await?
        }
    }
    delivery.acker.ack(BasicAckOptions::default()).await?;
    if matches!(outcome, Ok(Outcome::Applied)) {
        context.relay_wake.notify_one();
    }
    count_message(kind, outcome_label);
    metrics::histogram!("orderflow_worker_handling_seconds", "type" => kind)
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// The `outcome` label of a handled message.
fn label(outcome: &Result<Outcome, HandleError>, decision: &Decision) -> &'static str {
    match (decision, outcome) {
        (Decision::DeadLetter { .. }, _) => "dead_lettered",
        (Decision::RetryLater { .. }, Ok(Outcome::Early { .. })) => "early",
        (Decision::RetryLater { .. }, _) => "retried",
        (Decision::Ack, Ok(Outcome::Applied)) => "applied",
        (Decision::Ack, Ok(Outcome::Refused)) => "refused",
        (Decision::Ack, _) => "duplicate",
    }
}

/// Every `outcome` label of `orderflow_worker_messages_total`.
const OUTCOMES: [&str; 6] = [
    "applied",
    "refused",
    "duplicate",
    "early",
    "retried",
    "dead_lettered",
];

/// Exports every message counter at zero, for every type and outcome, before the first
/// message: an alert on `increase(...)` sees the first dead letter only if its series
/// existed before it (a series born at 1 shows no increase).
pub fn zero_counters() {
    let kinds = EventType::ALL.map(EventType::routing_key);
    for kind in kinds.into_iter().chain(["undecodable"]) {
        for outcome in OUTCOMES {
            metrics::counter!("orderflow_worker_messages_total", "type" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
    for name in [
        "orderflow_worker_redeliveries_total",
        "orderflow_worker_batch_fallbacks_total",
        "orderflow_worker_settle_failures_total",
        "orderflow_worker_stock_rereads_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

fn count_message(kind: &'static str, outcome: &'static str) {
    metrics::counter!("orderflow_worker_messages_total", "type" => kind, "outcome" => outcome)
        .increment(1);
}

/// Bookkeeping that helps operators but must not block settling the message.
fn note(result: sqlx::Result<()>) {
    if let Err(error) = result {
        tracing::warn!(%error, "could not record the command's fate; the watchdog catches up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_and_duplicate_messages_are_acked() {
        assert_eq!(decide(&Ok(Outcome::Applied), 0, 5), Decision::Ack);
        assert_eq!(decide(&Ok(Outcome::Duplicate), 3, 5), Decision::Ack);
    }

    #[test]
    fn early_commands_wait_with_growing_delays_then_dead_letter() {
        let early = Ok(Outcome::Early { next_expected: 2 });
        assert_eq!(
            decide(&early, 0, 5),
            Decision::RetryLater {
                delay: Duration::from_millis(50)
            }
        );
        assert_eq!(
            decide(&early, 2, 5),
            Decision::RetryLater {
                delay: Duration::from_millis(200)
            }
        );
        assert_eq!(
            decide(&early, 10, 5),
            Decision::RetryLater {
                delay: Duration::from_secs(2)
            }
        );
        assert!(matches!(
            decide(&early, EARLY_RETRY_LIMIT - 1, 5),
            Decision::DeadLetter { .. }
        ));
    }

    #[test]
    fn transient_failures_retry_until_the_attempt_limit() {
        let failure = || Err(HandleError::Transient(anyhow::anyhow!("database down")));
        assert!(matches!(
            decide(&failure(), 0, 3),
            Decision::RetryLater { .. }
        ));
        assert!(matches!(
            decide(&failure(), 1, 3),
            Decision::RetryLater { .. }
        ));
        match decide(&failure(), 2, 3) {
            Decision::DeadLetter { reason } => {
                assert!(reason.contains("database down"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn permanent_failures_dead_letter_at_once_with_their_reason() {
        let failure = Err(HandleError::Permanent("order 42 does not exist".into()));
        assert_eq!(
            decide(&failure, 0, 5),
            Decision::DeadLetter {
                reason: "order 42 does not exist".into()
            }
        );
    }
}
