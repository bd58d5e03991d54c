//! The webhook intake: takes order events off the webhook queue and records one delivery
//! per subscribed endpoint, then acks. It does no HTTP, so a slow receiver never backs the
//! queue up; the dispatcher sends what it records.

use std::sync::Arc;

use anyhow::Context;
use common::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
    events::Envelope,
    webhooks,
};
use futures_util::StreamExt;
use lapin::{
    Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumer::take_ready;

/// Events taken at once (and recorded in one statement).
const PREFETCH: u16 = 100;
/// After a database error the batch returns to the queue after this pause.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Intake {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Woken after each batch recorded.
    pub dispatcher: Arc<Notify>,
}

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        let topology = Topology::new(&self.settings.broker);
        let (intake, topology, stop) = (&self, &topology, &shutdown);
        broker::supervise(
            &self.settings.broker,
            "webhook intake",
            &shutdown,
            |connection, _node| async move { intake.session(&connection, topology, stop).await },
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
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .context("setting the webhook intake's prefetch")?;
        let mut consumer = channel
            .basic_consume(
                topology.webhook_queue.as_str().into(),
                format!("orderflow-webhooks-{}", Uuid::now_v7())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("consuming the webhook queue")?;
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(first)) => {
                        let (batch, ended) = take_ready(&mut consumer, first, usize::from(PREFETCH));
                        self.take(batch).await?;
                        if let Some(ended) = ended {
                            break Err(ended);
                        }
                    }
                    Some(Err(error)) => break Err(anyhow::Error::new(error).context("consuming webhook events")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the webhook intake")),
                },
            }
        };
        let _ =
            tokio::time::timeout(BROKER_CALL_TIMEOUT, channel.close(200, "stopping".into())).await;
        ended
    }

    /// Records the batch's deliveries and acks it; on a database error hands it back.
    async fn take(&self, batch: Vec<Delivery>) -> anyhow::Result<()> {
        let events: Vec<(Envelope, &'static str)> = batch
            .iter()
            .filter_map(|delivery| match Envelope::decode(&delivery.data) {
                Ok(envelope) => webhooks::event_type(&envelope).map(|kind| (envelope, kind)),
                Err(error) => {
                    tracing::warn!(%error, "webhook intake skipped a message it cannot read");
                    None
                }
            })
            .collect();
        match record(&self.pool, &events).await {
            Ok(recorded) => {
                if recorded > 0 {
                    self.dispatcher.notify_one();
                }
                for delivery in batch {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "recording webhook deliveries failed; the events return to the queue");
                tokio::time::sleep(RETRY_PAUSE).await;
                for delivery in batch {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    delivery.acker.nack(requeue).await?;
                }
            }
        }
        Ok(())
    }
}

/// One delivery per event and enabled endpoint subscribed to its type (an endpoint with no
/// types takes all). A redelivered event finds its rows there already.
async fn record(pool: &PgPool, events: &[(Envelope, &'static str)]) -> sqlx::Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = events.iter().map(|(e, _)| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|(_, kind)| *kind).collect();
    let orders: Vec<Uuid> = events.iter().map(|(e, _)| e.order_id).collect();
    let bodies: Vec<String> = events
        .iter()
        .map(|(envelope, kind)| webhooks::body(envelope, kind))
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, order_id, body)
         SELECT e.id, ev.event_id, ev.event_type, ev.order_id, ev.body
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[])
                  AS ev (event_id, event_type, order_id, body)
         JOIN webhook_endpoints e
           ON e.enabled AND (cardinality(e.event_types) = 0 OR ev.event_type = ANY (e.event_types))
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(types)
    .bind(orders)
    .bind(bodies)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted)
}
