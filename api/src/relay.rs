//! The outbox relay: publishes rows of `outbox` to RabbitMQ with publisher confirms and
//! stamps them sent only after the broker confirmed them.
//!
//! It wakes right after a commit (`AppState::outbox_wake`) and also sweeps on a timer, so
//! rows left behind by a crash or an outage go out too. Rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so any number of api replicas can relay side by side.
//! While the broker is down the rows wait and the relay reconnects with back-off.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use common::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
    events::Envelope,
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::BrokerStatus;

const BATCH_SIZE: i64 = 200;
const UNROUTABLE: &str = "unroutable: no queue is bound for it";
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const DATABASE_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct Relay {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub status: BrokerStatus,
    pub wake: Arc<Notify>,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    routing_key: String,
    payload: serde_json::Value,
}

/// Why a publishing round stopped.
enum RoundError {
    /// The channel or connection failed: reconnect.
    Broker(anyhow::Error),
    /// The database failed: wait and try again on the same channel.
    Database(anyhow::Error),
}

impl Relay {
    /// Runs until `shutdown`, reconnecting to the broker whenever it is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let topology = Topology::new(&self.settings.broker);
        let (relay, topology, stop) = (&self, &topology, &shutdown);
        broker::supervise(
            &self.settings.broker,
            "outbox relay",
            &shutdown,
            |connection| async move {
                let ended = relay.session(&connection, topology, stop).await;
                relay.status.set_connected(false);
                ended
            },
        )
        .await;
    }

    async fn session(
        &self,
        connection: &Connection,
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
        self.status.set_connected(true);
        tracing::info!(broker = %broker::display_url(&self.settings.broker), "outbox relay connected");
        loop {
            match self.publish_round(&channel, topology).await {
                Ok(published) if published as i64 == BATCH_SIZE => continue,
                Ok(_) => {}
                Err(RoundError::Broker(error)) => return Err(error),
                Err(RoundError::Database(error)) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay cannot read the database; retrying"
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

    /// Publishes one batch of unsent rows and stamps those the broker confirmed.
    async fn publish_round(
        &self,
        channel: &Channel,
        topology: &Topology,
    ) -> Result<usize, RoundError> {
        let database = |e: sqlx::Error| RoundError::Database(e.into());
        let mut tx = self.pool.begin().await.map_err(database)?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, routing_key, payload FROM outbox WHERE published_at IS NULL
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH_SIZE)
        .fetch_all(&mut *tx)
        .await
        .map_err(database)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut confirms = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        for row in &rows {
            // A row that is not a valid envelope is set aside rather than allowed to stall
            // every row behind it.
            let Ok(envelope) = serde_json::from_value::<Envelope>(row.payload.clone()) else {
                failed.push((row.id, "the row holds no valid envelope"));
                continue;
            };
            let confirm = publish(channel, topology, &row.routing_key, &envelope)
                .await
                .map_err(RoundError::Broker)?;
            confirms.push((row.id, confirm));
        }
        let mut sent = Vec::with_capacity(rows.len());
        for (id, confirm) in confirms {
            match tokio::time::timeout(BROKER_CALL_TIMEOUT, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => sent.push(id),
                Ok(Ok(Confirmation::Ack(Some(_)))) => failed.push((id, UNROUTABLE)),
                Ok(Ok(Confirmation::Nack(_))) => {
                    failed.push((id, "the broker refused the message"))
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    failed.push((id, "publisher confirms are off"))
                }
                Ok(Err(error)) => return Err(RoundError::Broker(error.into())),
                Err(_) => {
                    return Err(RoundError::Broker(anyhow::anyhow!(
                        "no publisher confirm in time"
                    )));
                }
            }
        }
        sqlx::query(
            "UPDATE outbox SET published_at = now(), publications = publications + 1, last_error = NULL WHERE id = ANY($1)",
        )
        .bind(&sent)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        for (id, reason) in &failed {
            tracing::error!(
                outbox_id = id,
                reason,
                "outbox message not accepted; will retry"
            );
            sqlx::query("UPDATE outbox SET last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(reason)
                .execute(&mut *tx)
                .await
                .map_err(database)?;
        }
        tx.commit().await.map_err(database)?;
        if failed.iter().any(|(_, reason)| *reason == UNROUTABLE) {
            // The work queue or its bindings are gone (deleted by hand, broker reset):
            // reconnecting declares the topology again, and the rows go out then.
            return Err(RoundError::Broker(anyhow::anyhow!(
                "commands were unroutable; redeclaring the topology"
            )));
        }
        tracing::debug!(published = sent.len(), "outbox batch relayed");
        Ok(sent.len())
    }
}

/// Publishes one row: persistent, `message_id` = `event_id`, correlation id carried along;
/// commands are `mandatory` so an unroutable one comes back instead of vanishing.
async fn publish(
    channel: &Channel,
    topology: &Topology,
    routing_key: &str,
    envelope: &Envelope,
) -> anyhow::Result<PublisherConfirm> {
    let body = serde_json::to_vec(envelope)?;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-correlation-id".into(),
        AMQPValue::LongString(envelope.correlation_id.as_str().into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(envelope.event_id.to_string().into())
        .with_correlation_id(envelope.correlation_id.as_str().into())
        .with_type(routing_key.into())
        .with_timestamp(u64::try_from(envelope.occurred_at.timestamp()).unwrap_or_default())
        .with_headers(headers);
    let options = BasicPublishOptions {
        mandatory: envelope.event_type.is_command(),
        ..Default::default()
    };
    let publish = channel.basic_publish(
        topology.exchange.as_str().into(),
        routing_key.into(),
        options,
        &body,
        properties,
    );
    tokio::time::timeout(BROKER_CALL_TIMEOUT, publish)
        .await
        .context("publish timed out")?
        .context("publish failed")
}
