//! The AMQP side of the worker: a supervisor that (re)connects with back-off, consumes with
//! manual acknowledgements and a bounded prefetch, and on shutdown stops consuming, lets
//! in-flight messages finish and closes the connection. Beside it runs the worker's own
//! outbox relay, which publishes the `order.status_changed` events the handlers write, the
//! mailer and the webhook intake and dispatcher.

use std::sync::Arc;

use anyhow::Context;
use common::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
    relay::{BrokerStatus, Relay},
};
use futures_util::{FutureExt, StreamExt};
use lapin::{
    Connection, Consumer,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    delivery::{self, Context as DeliveryContext},
    mail::Mailer,
    payments, webhooks,
};

/// One worker process's consumer.
pub struct Worker {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
}

impl Worker {
    /// Consumes until `shutdown`, reconnecting whenever the broker connection is lost. The
    /// relay stops after the consumer, so it publishes what the last messages wrote.
    pub async fn run(self, shutdown: CancellationToken) {
        let relay_wake = Arc::new(Notify::new());
        let relay_stop = CancellationToken::new();
        let relay = Relay {
            pool: self.pool.clone(),
            settings: self.settings.clone(),
            status: BrokerStatus::default(),
            wake: relay_wake.clone(),
            name: "worker outbox relay",
        };
        let relay = tokio::spawn(relay.run(relay_stop.clone()));
        let mailer = match Mailer::new(self.pool.clone(), self.settings.clone()) {
            Ok(Some(mailer)) => Some(tokio::spawn(mailer.run(relay_stop.clone()))),
            Ok(None) => {
                tracing::info!("no SMTP_URL or EMAIL_DIR: order emails wait until one is set");
                None
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "order emails are not sent");
                None
            }
        };
        let webhooks = tokio::spawn(webhooks::run(
            self.pool.clone(),
            self.settings.clone(),
            relay_stop.clone(),
        ));
        let payments = tokio::spawn(payments::run(
            self.pool.clone(),
            self.settings.clone(),
            relay_stop.clone(),
        ));
        let topology = Topology::new(&self.settings.broker);
        let (worker, topology, stop, wake) = (&self, &topology, &shutdown, &relay_wake);
        broker::supervise(
            &self.settings.broker,
            "worker",
            &shutdown,
            |connection, _node| async move { worker.session(&connection, topology, stop, wake).await },
        )
        .await;
        relay_stop.cancel();
        if relay.await.is_err() {
            tracing::error!("the worker's outbox relay panicked");
        }
        if let Some(mailer) = mailer
            && mailer.await.is_err()
        {
            tracing::error!("the worker's mailer panicked");
        }
        match payments.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "payment calls were not made")
            }
            Err(_) => tracing::error!("the worker's payment calls panicked"),
        }
        match webhooks.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "webhooks were not sent")
            }
            Err(_) => tracing::error!("the worker's webhook delivery panicked"),
        }
    }

    async fn session(
        &self,
        connection: &Connection,
        topology: &Topology,
        shutdown: &CancellationToken,
        relay_wake: &Arc<Notify>,
    ) -> anyhow::Result<()> {
        let channel = topology
            .open_channel(connection, self.settings.worker.max_attempts)
            .await?;
        channel
            .basic_qos(self.settings.worker.prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch")?;
        // Retries and dead letters go out on a connection of their own, with confirms: a
        // broker memory or disk alarm blocks publishing connections, and must not stall
        // the consuming one (acks included) with it.
        let publishing = broker::connect(&self.settings.broker, "orderflow-worker-publisher")
            .await
            .context("opening the publishing connection")?;
        let publisher = publishing
            .create_channel()
            .await
            .context("opening the publishing channel")?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        let tag = format!("orderflow-worker-{}", uuid::Uuid::now_v7());
        let mut consumer = channel
            .basic_consume(
                topology.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting to consume")?;
        tracing::info!(queue = %topology.queue, prefetch = self.settings.worker.prefetch, "worker consuming");
        let context = Arc::new(DeliveryContext {
            pool: self.pool.clone(),
            publisher,
            topology: topology.clone(),
            max_attempts: self.settings.worker.max_attempts,
            payments: crate::handlers::PaymentPolicy::of(&self.settings.payments),
            relay_wake: relay_wake.clone(),
            session_failed: CancellationToken::new(),
        });
        let batch_size = usize::from(self.settings.worker.batch_size.get());
        let max_batches = self.settings.worker.batches_in_flight();
        let mut in_flight = JoinSet::new();
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = context.session_failed.cancelled() => {
                    break Err(anyhow::anyhow!("a retry or dead letter could not be published"));
                }
                next = consumer.next(), if in_flight.len() < max_batches => match next {
                    Some(Ok(first)) => {
                        let (batch, ended) = take_ready(&mut consumer, first, batch_size);
                        in_flight.spawn(delivery::process_batch(context.clone(), batch));
                        if let Some(ended) = ended {
                            break Err(ended);
                        }
                    }
                    Some(Err(error)) => break Err(consume_failed(error)),
                    None => break Err(cancelled_by_broker()),
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        };
        // Take no new messages; those prefetched but not started return to the queue when
        // the channel closes. Everything started finishes (and is acked) first.
        if ended.is_ok() {
            let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(BROKER_CALL_TIMEOUT, cancel).await;
        }
        let pending = in_flight.len();
        if pending > 0 {
            tracing::info!(pending, "finishing in-flight messages");
        }
        while in_flight.join_next().await.is_some() {}
        // Close channels explicitly before the connection, or lapin reports the overlap as an error.
        if ended.is_ok() {
            let _ = tokio::time::timeout(
                BROKER_CALL_TIMEOUT,
                channel.close(200, "worker stopping".into()),
            )
            .await;
            let _ = tokio::time::timeout(
                BROKER_CALL_TIMEOUT,
                context.publisher.close(200, "worker stopping".into()),
            )
            .await;
        }
        let _ = tokio::time::timeout(
            BROKER_CALL_TIMEOUT,
            publishing.close(200, "worker session over".into()),
        )
        .await;
        ended
    }
}

/// A batch: `first` and whatever else has already arrived, up to `batch_size`; no waiting
/// for more, so a lone message is handled at once. The second value is set when the
/// consumer ended meanwhile.
pub(crate) fn take_ready(
    consumer: &mut Consumer,
    first: Delivery,
    batch_size: usize,
) -> (Vec<Delivery>, Option<anyhow::Error>) {
    let mut batch = vec![first];
    while batch.len() < batch_size {
        match consumer.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            Some(Some(Err(error))) => return (batch, Some(consume_failed(error))),
            Some(None) => return (batch, Some(cancelled_by_broker())),
            None => break,
        }
    }
    (batch, None)
}

fn consume_failed(error: lapin::Error) -> anyhow::Error {
    anyhow::Error::new(error).context("consuming failed")
}

fn cancelled_by_broker() -> anyhow::Error {
    anyhow::anyhow!("the broker cancelled the consumer")
}
