//! RabbitMQ connection (with back-off) and the topology both binaries declare.
//!
//! ```text
//! relays ─────▶ <exchange> (topic) ──every command───────────────▶ <queue> (quorum) ──▶ workers
//!                    ▲                                                    │ delivery limit
//!   <exchange>.delay.<N>ms ─▶ <queue>.delay.<N>ms (TTL N, back) ◀─────────┤ early / transient
//!                                                                         ▼
//!                                 <exchange>.dead ─▶ <queue>.dead (operators re-drive)
//!
//! <exchange> ──order.created / status_changed / payment_changed──▶ <queue>.webhooks ──▶ webhook intake
//! ```
//!
//! Every queue that holds work, waiting retries or dead letters is a quorum queue, so on a
//! cluster it survives the loss of a minority of nodes (see "Running at scale" in README).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    uri::AMQPUri,
};
use tokio_util::sync::CancellationToken;

use rand::seq::SliceRandom;

use crate::{
    config::{BrokerSettings, Secret},
    events::EventType,
};

/// Upper bound for any single broker call, so an unresponsive broker never hangs a task.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a lost session before reconnecting, so a flapping broker is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How long closing a session's connection may take. A live node answers in milliseconds; a
/// frozen or partitioned one never does.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The waits a retried message can take, one queue each. Every message in a queue has the
/// same TTL, so they expire in arrival order and a short wait never sits behind a long one
/// (RabbitMQ expires messages only at a queue's head).
pub const RETRY_TIERS_MS: [u64; 10] = [
    50, 100, 200, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000,
];

/// One delay: a fanout exchange into a quorum queue whose messages return to the main
/// exchange, with their routing key, after `delay`.
#[derive(Debug, Clone)]
pub struct RetryTier {
    pub delay: Duration,
    pub exchange: String,
    pub queue: String,
}

/// Names of every exchange and queue, derived from the settings.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    /// Shortest delay first.
    pub retry_tiers: Vec<RetryTier>,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// The events webhooks are made of, taken by the workers' webhook intake.
    pub webhook_queue: String,
}

impl Topology {
    pub fn new(settings: &BrokerSettings) -> Self {
        Self {
            exchange: settings.exchange.clone(),
            queue: settings.queue.clone(),
            retry_tiers: RETRY_TIERS_MS
                .iter()
                .map(|ms| RetryTier {
                    delay: Duration::from_millis(*ms),
                    exchange: format!("{}.delay.{ms}ms", settings.exchange),
                    queue: format!("{}.delay.{ms}ms", settings.queue),
                })
                .collect(),
            dead_letter_exchange: format!("{}.dead", settings.exchange),
            dead_letter_queue: format!("{}.dead", settings.queue),
            webhook_queue: format!("{}.webhooks", settings.queue),
        }
    }

    /// The tier for a wait of `delay`: the shortest at least as long, else the longest.
    pub fn retry_tier(&self, delay: Duration) -> &RetryTier {
        self.retry_tiers
            .iter()
            .find(|tier| tier.delay >= delay)
            .or(self.retry_tiers.last())
            .expect("there is at least one retry tier")
    }

    /// Every queue name, for tools that clean up.
    pub fn queues(&self) -> Vec<&str> {
        let mut names = vec![
            self.queue.as_str(),
            self.dead_letter_queue.as_str(),
            self.webhook_queue.as_str(),
        ];
        names.extend(self.retry_tiers.iter().map(|tier| tier.queue.as_str()));
        names
    }

    /// Every exchange name, for tools that clean up.
    pub fn exchanges(&self) -> Vec<&str> {
        let mut names = vec![self.exchange.as_str(), self.dead_letter_exchange.as_str()];
        names.extend(self.retry_tiers.iter().map(|tier| tier.exchange.as_str()));
        names
    }

    /// Opens a channel on `connection` with the whole topology declared on it.
    pub async fn open_channel(
        &self,
        connection: &Connection,
        delivery_limit: u32,
    ) -> anyhow::Result<Channel> {
        let channel = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        self.declare(&channel, delivery_limit).await?;
        Ok(channel)
    }

    /// Declares everything (idempotent). `delivery_limit` bounds redeliveries of a message
    /// that crashes its consumer before the broker dead-letters it.
    pub async fn declare(&self, channel: &Channel, delivery_limit: u32) -> anyhow::Result<()> {
        let tiers = self
            .retry_tiers
            .iter()
            .map(|tier| (&tier.exchange, ExchangeKind::Fanout));
        for (name, kind) in [
            (&self.exchange, ExchangeKind::Topic),
            (&self.dead_letter_exchange, ExchangeKind::Topic),
        ]
        .into_iter()
        .chain(tiers)
        {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("declaring exchange {name}"))?;
        }

        let mut work = quorum_arguments();
        dead_letter_at_least_once(&mut work, &self.dead_letter_exchange);
        // RabbitMQ 3.x has no default delivery limit; without one a poison message loops forever.
        work.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
        );
        declare_queue(channel, &self.queue, work).await?;
        for event in EventType::COMMANDS {
            bind(channel, &self.queue, &self.exchange, event.routing_key()).await?;
        }

        // Messages wait out their tier's TTL, then dead-letter back to the main exchange with
        // their routing key. Quorum queues, so a waiting retry survives the loss of a node.
        for tier in &self.retry_tiers {
            let mut retry = quorum_arguments();
            dead_letter_at_least_once(&mut retry, &self.exchange);
            retry.insert(
                "x-message-ttl".into(),
                AMQPValue::LongInt(i32::try_from(tier.delay.as_millis()).unwrap_or(i32::MAX)),
            );
            declare_queue(channel, &tier.queue, retry).await?;
            bind(channel, &tier.queue, &tier.exchange, "").await?;
        }

        declare_queue(channel, &self.dead_letter_queue, quorum_arguments()).await?;
        bind(
            channel,
            &self.dead_letter_queue,
            &self.dead_letter_exchange,
            "#",
        )
        .await?;

        // Webhook events wait here while no worker takes them. Bounded: beyond a million
        // (days of orders with every worker down) the oldest are dropped rather than
        // refusing the order commands published with them.
        let mut webhooks = quorum_arguments();
        webhooks.insert("x-max-length".into(), AMQPValue::LongInt(1_000_000));
        declare_queue(channel, &self.webhook_queue, webhooks).await?;
        for event in [
            EventType::OrderCreated,
            EventType::StatusChanged,
            EventType::PaymentChanged,
            EventType::FulfillmentChanged,
            EventType::UnitsCancelled,
        ] {
            bind(
                channel,
                &self.webhook_queue,
                &self.exchange,
                event.routing_key(),
            )
            .await?;
        }
        Ok(())
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args
}

/// Dead-letters to `exchange`. The broker's dead-lettering is at-most-once by default: a
/// message could be dropped on its way. At-least-once needs the reject-publish overflow mode.
fn dead_letter_at_least_once(args: &mut FieldTable, exchange: &str) {
    args.insert("x-dead-letter-exchange".into(), string(exchange));
    args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    args.insert("x-overflow".into(), string("reject-publish"));
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .with_context(|| {
            format!(
                "declaring queue {name} (if it exists with other arguments from an older \
                 version, drain it and delete it: see \"Upgrading the topology\" in docs/messages.md)"
            )
        })?;
    Ok(())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding {queue} to {exchange} with {key}"))?;
    Ok(())
}

/// A node's address without credentials, safe to log.
pub fn display_url(url: &Secret) -> String {
    let url = url.expose();
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}

/// Every node's address, safe to log.
pub fn display_urls(settings: &BrokerSettings) -> String {
    settings
        .urls
        .iter()
        .map(display_url)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A connection to one of the nodes, tried in a shuffled order (a dead one is skipped).
pub async fn connect(settings: &BrokerSettings, name: &str) -> anyhow::Result<Connection> {
    Ok(connect_node(settings, name, None).await?.0)
}

/// One connection attempt to each node in a shuffled order (so processes spread over a
/// cluster, and a dead node is skipped), each bounded in time; the first that answers is
/// used, and returned with its address (safe to log). `lost`, the node a session was just
/// lost on, is tried last: if it froze, a try would cost a whole timeout. The error says
/// how to fix it.
async fn connect_node(
    settings: &BrokerSettings,
    name: &str,
    lost: Option<&str>,
) -> anyhow::Result<(Connection, String)> {
    let mut nodes: Vec<&Secret> = settings.urls.iter().collect();
    nodes.shuffle(&mut rand::rng());
    nodes.sort_by_key(|node| lost.is_some_and(|lost| display_url(node) == lost));
    let mut last_error = anyhow::anyhow!("no broker address is set");
    for node in nodes {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let Ok(mut uri) = node.expose().parse::<AMQPUri>() else {
            // The parser's message may quote the URL, password included.
            last_error = anyhow::anyhow!("{} is not a valid AMQP URL", display_url(node));
            continue;
        };
        uri.query.heartbeat.get_or_insert(settings.heartbeat_secs);
        let attempt = Connection::connect_uri(uri, properties);
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                let node = display_url(node);
                tracing::info!(node, "{name} connected to RabbitMQ");
                return Ok((connection, node));
            }
            Ok(Err(error)) => last_error = error.into(),
            Err(elapsed) => last_error = elapsed.into(),
        }
        tracing::debug!(node = display_url(node), error = %last_error, "{name}: node unavailable");
    }
    Err(last_error).with_context(|| {
        format!(
            "cannot reach RabbitMQ at {}: start it with `rabbitmq-server -detached` \
             (or `docker compose up -d rabbitmq`) or set AMQP_URL",
            display_urls(settings)
        )
    })
}

/// Connects, retrying with exponential back-off until it succeeds or `shutdown` fires
/// (then `None`). Each failure is logged once with its fix.
async fn connect_with_retry(
    settings: &BrokerSettings,
    name: &str,
    lost: Option<&str>,
    shutdown: &CancellationToken,
) -> Option<(Connection, String)> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times();
    let attempt = || connect_node(settings, name, lost);
    let retrying = attempt.retry(backoff).notify(|error, delay| {
        tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "broker unavailable");
    });
    tokio::select! {
        result = retrying => result.ok(),
        () = shutdown.cancelled() => None,
    }
}

/// The reconnecting loop around a broker session: connects with back-off, runs `session`
/// on the connection (and the node's address), and when it fails (the node went away)
/// starts over on whichever other node answers — until `shutdown`, when `session` is
/// expected to return `Ok`.
pub async fn supervise<F, Session>(
    settings: &BrokerSettings,
    name: &str,
    shutdown: &CancellationToken,
    mut session: F,
) where
    F: FnMut(Arc<Connection>, String) -> Session,
    Session: Future<Output = anyhow::Result<()>>,
{
    let mut lost = None;
    while !shutdown.is_cancelled() {
        let Some((connection, node)) =
            connect_with_retry(settings, name, lost.as_deref(), shutdown).await
        else {
            break;
        };
        let connection = Arc::new(connection);
        match session(connection.clone(), node.clone()).await {
            Ok(()) => {
                let _ =
                    tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "closing".into()))
                        .await;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    node,
                    "{name} lost the broker; reconnecting"
                );
                // A frozen node never answers a close: close in the background, fail over now.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        connection.close(200, "closing".into()),
                    )
                    .await;
                });
                lost = Some(node);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    tracing::info!("{name} stopped");
}
