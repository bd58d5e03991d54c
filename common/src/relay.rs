//! The outbox relay: publishes rows of `outbox` to RabbitMQ with publisher confirms and
//! stamps them sent only after the broker confirmed them. Every process that writes the
//! outbox runs one (the api for commands, the worker for `order.status_changed`).
//!
//! A round *claims* a batch in one short statement (it pushes the rows' `next_attempt_at`
//! a few seconds ahead, so no other relay takes them meanwhile), then publishes with no
//! transaction open and no lock held while it waits for confirms, then stamps the
//! outcome. A relay that dies mid-round leaves its rows to be taken again when the claim
//! lapses; a row published twice is dropped by the consumers' inbox.
//!
//! A row the broker refuses is retried with a growing per-row delay and parked after
//! [`PARK_AFTER_ATTEMPTS`] failures (a row that holds no envelope at once), so bad rows
//! never hold up good ones. Parked rows are listed and re-queued with `worker outbox`.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
    events::EventType,
};

const BATCH_SIZE: i64 = 200;
/// How long a claim keeps other relays off a row. A round takes milliseconds; after a relay
/// dies mid-round (a killed worker) its rows wait this long. A round slower than this (a
/// broker answering slowly) may let another relay send a row too: a duplicate, which
/// consumers drop by `event_id`, never a loss.
const CLAIM_SECS: f64 = 5.0;
/// Failures after which a row is parked for an operator.
pub const PARK_AFTER_ATTEMPTS: i32 = 8;
/// First per-row retry delay; it doubles per failure up to `MAX_RETRY_SECS`.
const FIRST_RETRY_SECS: f64 = 1.0;
const MAX_RETRY_SECS: f64 = 300.0;
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const DATABASE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The broker node a relay currently holds a working channel on, if any.
#[derive(Debug, Clone, Default)]
pub struct BrokerStatus(Arc<Mutex<Option<String>>>);

impl BrokerStatus {
    /// `Some(node address)` once connected, `None` once the connection is lost.
    pub fn set_node(&self, node: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = node;
    }

    pub fn node(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_connected(&self) -> bool {
        self.node().is_some()
    }
}

pub struct Relay {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub status: BrokerStatus,
    /// Notified right after a transaction wrote outbox rows, so they go out at once
    /// rather than at the next sweep.
    pub wake: Arc<Notify>,
    /// Names this relay in logs and in the broker's connection list.
    pub name: &'static str,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: Uuid,
    routing_key: String,
    body: String,
}

/// The envelope fields the message properties are built from; the body itself is sent
/// exactly as stored.
#[derive(Deserialize)]
struct EnvelopeHead {
    correlation_id: String,
    occurred_at: DateTime<Utc>,
}

/// Why a row did not go out this time.
struct Failure {
    id: i64,
    reason: &'static str,
    /// Retrying cannot help: park it now.
    permanent: bool,
}

const UNROUTABLE: &str = "unroutable: no queue is bound for it";

/// Exports the relay's counters at zero before its first round, so an alert on their
/// increase sees the first parked or unconfirmed row.
pub fn zero_counters() {
    for name in [
        "orderflow_outbox_published_total",
        "orderflow_outbox_parked_total",
        "orderflow_outbox_unconfirmed_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

/// What one round did with its claimed rows.
#[derive(Default)]
struct RoundResult {
    sent: Vec<i64>,
    failed: Vec<Failure>,
    /// Claimed but not resolved when the channel failed: handed back untouched.
    unresolved: Vec<i64>,
    /// How many of `unresolved` were published but never confirmed: the broker may or may
    /// not have them, so they go out again (consumers drop the duplicate, if any).
    unconfirmed: usize,
    broker_error: Option<anyhow::Error>,
}

/// Why a publishing round stopped.
enum RoundError {
    /// The channel or connection failed: reconnect.
    Broker(anyhow::Error),
    /// The database failed: wait and try again on the same channel.
    Database(anyhow::Error),
}

impl From<sqlx::Error> for RoundError {
    fn from(error: sqlx::Error) -> Self {
        RoundError::Database(error.into())
    }
}

impl Relay {
    /// Runs until `shutdown`, reconnecting to the broker whenever it is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let topology = Topology::new(&self.settings.broker);
        let (relay, topology, stop) = (&self, &topology, &shutdown);
        broker::supervise(
            &self.settings.broker,
            self.name,
            &shutdown,
            |connection, node| async move {
                let ended = relay.session(&connection, node, topology, stop).await;
                relay.status.set_node(None);
                ended
            },
        )
        .await;
    }

    async fn session(
        &self,
        connection: &Connection,
        node: String,
        topology: &Topology,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = topology
            .open_channel(connection, self.settings.worker.max_attempts)
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        tracing::info!(relay = self.name, node, "outbox relay connected");
        self.status.set_node(Some(node));
        loop {
            match self.publish_round(&channel, topology).await {
                Ok(published) if published as i64 == BATCH_SIZE => continue,
                Ok(_) => {}
                Err(RoundError::Broker(error)) => return Err(error),
                Err(RoundError::Database(error)) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay cannot reach the database; retrying"
                    );
                    tokio::time::sleep(DATABASE_RETRY_DELAY).await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.drain(&channel, topology).await;
                    // Close the channel before the connection, or lapin reports the overlap as an error.
                    let _ = tokio::time::timeout(BROKER_CALL_TIMEOUT, channel.close(200, "relay stopping".into())).await;
                    return Ok(());
                }
                () = self.wake.notified() => {},
                () = tokio::time::sleep(SWEEP_INTERVAL) => {},
            }
            if !connection.status().connected() {
                anyhow::bail!("connection closed");
            }
        }
    }

    /// On shutdown: publishes what the last requests wrote, for a bounded time. Whatever is
    /// left stays in the outbox for the next relay to send.
    async fn drain(&self, channel: &Channel, topology: &Topology) {
        let rounds = async {
            while let Ok(published) = self.publish_round(channel, topology).await {
                if published == 0 {
                    break;
                }
            }
        };
        if tokio::time::timeout(BROKER_CALL_TIMEOUT, rounds)
            .await
            .is_err()
        {
            tracing::warn!("outbox not drained before shutdown; the next relay sends the rest");
        }
    }

    /// Claims a batch of due rows, publishes them and records each one's outcome.
    async fn publish_round(
        &self,
        channel: &Channel,
        topology: &Topology,
    ) -> Result<usize, RoundError> {
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $2)
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE published_at IS NULL AND parked_at IS NULL AND next_attempt_at <= now()
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, event_id, routing_key, payload::text AS body",
        )
        .bind(BATCH_SIZE)
        .bind(CLAIM_SECS)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|row| row.id);
        let result = publish_batch(channel, topology, &rows).await;
        self.record(&result).await?;
        let sent = result.sent.len();
        if let Some(error) = result.broker_error {
            return Err(RoundError::Broker(error));
        }
        if result.failed.iter().any(|f| f.reason == UNROUTABLE) {
            // The work queue or its bindings are gone (deleted by hand, broker reset):
            // reconnecting declares the topology again, and the rows go out then.
            return Err(RoundError::Broker(anyhow::anyhow!(
                "commands were unroutable; redeclaring the topology"
            )));
        }
        tracing::debug!(published = sent, "outbox batch relayed");
        Ok(sent)
    }

    /// Stamps confirmed rows, backs off or parks refused ones, and releases unresolved ones.
    ///
    /// The three stamps touch different rows and each stands on its own, so they need no
    /// transaction (a crash between them only lets a claim lapse), and a round in which
    /// everything went out runs just one statement.
    async fn record(&self, result: &RoundResult) -> sqlx::Result<()> {
        if !result.sent.is_empty() {
            sqlx::query(
                "UPDATE outbox SET published_at = now(), publications = publications + 1,
                     attempts = 0, last_error = NULL
                 WHERE id = ANY($1)",
            )
            .bind(&result.sent)
            .execute(&self.pool)
            .await?;
        }
        if !result.failed.is_empty() {
            let ids: Vec<i64> = result.failed.iter().map(|f| f.id).collect();
            let reasons: Vec<&str> = result.failed.iter().map(|f| f.reason).collect();
            let permanent: Vec<bool> = result.failed.iter().map(|f| f.permanent).collect();
            let parked: Vec<i64> = sqlx::query_scalar::<_, Option<i64>>(
                "UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.reason,
                     next_attempt_at = now() + make_interval(secs => least($4 * 2 ^ o.attempts, $5)),
                     parked_at = CASE WHEN f.permanent OR o.attempts + 1 >= $6 THEN now() END
                 FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, reason, permanent)
                 WHERE o.id = f.id
                 RETURNING CASE WHEN o.parked_at IS NOT NULL THEN o.id END",
            )
            .bind(&ids)
            .bind(&reasons)
            .bind(&permanent)
            .bind(FIRST_RETRY_SECS)
            .bind(MAX_RETRY_SECS)
            .bind(PARK_AFTER_ATTEMPTS)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .flatten()
            .collect();
            for failure in &result.failed {
                let parked = parked.contains(&failure.id);
                tracing::error!(
                    outbox_id = failure.id,
                    reason = failure.reason,
                    parked,
                    "outbox message not accepted"
                );
                metrics::counter!("orderflow_outbox_publish_failures_total", "reason" => failure.reason)
                    .increment(1);
            }
            metrics::counter!("orderflow_outbox_parked_total").increment(parked.len() as u64);
        }
        if result.unconfirmed > 0 {
            tracing::warn!(
                unconfirmed = result.unconfirmed,
                "published messages got no confirm; they will be published again"
            );
            metrics::counter!("orderflow_outbox_unconfirmed_total")
                .increment(result.unconfirmed as u64);
        }
        if !result.unresolved.is_empty() {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = now() WHERE id = ANY($1) AND published_at IS NULL",
            )
            .bind(&result.unresolved)
            .execute(&self.pool)
            .await?;
        }
        metrics::counter!("orderflow_outbox_published_total").increment(result.sent.len() as u64);
        Ok(())
    }
}

/// Publishes `rows` and waits for each confirm. Stops at the first channel failure, leaving
/// the rest unresolved.
async fn publish_batch(channel: &Channel, topology: &Topology, rows: &[ClaimedRow]) -> RoundResult {
    let mut result = RoundResult::default();
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(rows.len());
    let mut rows = rows.iter();
    for row in rows.by_ref() {
        let Ok(head) = serde_json::from_str::<EnvelopeHead>(&row.body) else {
            result.failed.push(Failure {
                id: row.id,
                reason: "the row holds no valid envelope",
                permanent: true,
            });
            continue;
        };
        match publish(channel, topology, row, &head).await {
            Ok(confirm) => confirms.push((row.id, confirm)),
            Err(error) => {
                result.unresolved.push(row.id);
                result.broker_error = Some(error);
                break;
            }
        }
    }
    result.unresolved.extend(rows.map(|row| row.id));
    let latency = metrics::histogram!("orderflow_outbox_publish_seconds");
    for (id, confirm) in confirms {
        if result.broker_error.is_some() {
            result.unresolved.push(id);
            result.unconfirmed += 1;
            continue;
        }
        let refused = |reason| Failure {
            id,
            reason,
            permanent: false,
        };
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => {
                latency.record(started.elapsed().as_secs_f64());
                result.sent.push(id);
            }
            Ok(Ok(Confirmation::Ack(Some(_)))) => result.failed.push(refused(UNROUTABLE)),
            Ok(Ok(Confirmation::Nack(_))) => result
                .failed
                .push(refused("the broker refused the message")),
            Ok(Ok(Confirmation::NotRequested)) => {
                result.failed.push(refused("publisher confirms are off"))
            }
            Ok(Err(error)) => {
                result.unresolved.push(id);
                result.unconfirmed += 1;
                result.broker_error = Some(error.into());
            }
            Err(_) => {
                result.unresolved.push(id);
                result.unconfirmed += 1;
                result.broker_error = Some(anyhow::anyhow!("no publisher confirm in time"));
            }
        }
    }
    result
}

/// Publishes one row's stored body: persistent, `message_id` = `event_id`, correlation id
/// carried along; commands are `mandatory` so an unroutable one comes back instead of
/// vanishing.
async fn publish(
    channel: &Channel,
    topology: &Topology,
    row: &ClaimedRow,
    head: &EnvelopeHead,
) -> anyhow::Result<PublisherConfirm> {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-correlation-id".into(),
        AMQPValue::LongString(head.correlation_id.as_str().into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(row.event_id.to_string().into())
        .with_correlation_id(head.correlation_id.as_str().into())
        .with_type(row.routing_key.as_str().into())
        .with_timestamp(u64::try_from(head.occurred_at.timestamp()).unwrap_or_default())
        .with_headers(headers);
    let options = BasicPublishOptions {
        mandatory: EventType::COMMANDS
            .iter()
            .any(|command| command.routing_key() == row.routing_key),
        ..Default::default()
    };
    let publish = channel.basic_publish(
        topology.exchange.as_str().into(),
        row.routing_key.as_str().into(),
        options,
        row.body.as_bytes(),
        properties,
    );
    tokio::time::timeout(BROKER_CALL_TIMEOUT, publish)
        .await
        .context("publish timed out")?
        .context("publish failed")
}
