//! The hub: one exclusive, auto-deleted queue per api process, bound to the exchange for
//! the feed's events, turned into one broadcast in feed order. Every process gets every
//! event (fan-out across replicas); the database is read only to fill a gap — an event
//! that arrives before one numbered below it, or what passed while the broker was away.

use std::sync::Arc;

use anyhow::Context;
use common::{
    broker::{self, Topology},
    config::Settings,
    events::{Envelope, EventType},
    feed::{self, FeedEntry},
};
use futures_util::StreamExt;
use lapin::{
    Connection,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sqlx::PgPool;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

/// Entries a subscriber may fall behind by before it is closed (it resumes from the
/// database with `Last-Event-ID`).
const SUBSCRIBER_BUFFER: usize = 1_024;
/// Messages waiting in this process's queue; beyond it the oldest are dropped, and the gap
/// they leave is filled from the database.
const QUEUE_LIMIT: i32 = 10_000;
/// Deliveries unacknowledged at once.
const PREFETCH: u16 = 256;
/// Rows read per query while filling a gap.
const FILL_PAGE: i64 = 500;

/// The ordered broadcast of feed entries.
pub struct Hub {
    sender: broadcast::Sender<Arc<FeedEntry>>,
    /// The newest entry broadcast (`None` until first read from the database). Held while
    /// broadcasting, so entries go out one at a time, in order, and a subscriber's starting
    /// point is exact.
    newest: Mutex<Option<i64>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(SUBSCRIBER_BUFFER).0,
            newest: Mutex::new(None),
        }
    }
}

impl Hub {
    /// A receiver of every entry after the returned number.
    pub async fn subscribe(
        &self,
        pool: &PgPool,
    ) -> sqlx::Result<(broadcast::Receiver<Arc<FeedEntry>>, i64)> {
        let mut newest = self.newest.lock().await;
        let start = match *newest {
            Some(id) => id,
            None => *newest.insert(feed::newest(&mut *pool.acquire().await?).await?),
        };
        Ok((self.sender.subscribe(), start))
    }

    /// Broadcasts `entry`, after every entry numbered below it that was not broadcast yet
    /// (read from the database: numbers are given in commit order, so they are there).
    async fn accept(&self, pool: &PgPool, entry: FeedEntry) -> sqlx::Result<()> {
        let mut newest = self.newest.lock().await;
        let Some(last) = *newest else {
            // Nobody subscribed yet, so nothing before this entry is owed to anyone.
            *newest = Some(entry.id);
            self.send(entry);
            return Ok(());
        };
        if entry.id <= last {
            return Ok(());
        }
        if entry.id > last + 1 {
            *newest = Some(self.fill(pool, last, entry.id - 1).await?);
        }
        *newest = Some(entry.id);
        self.send(entry);
        Ok(())
    }

    /// Broadcasts whatever was committed since the last entry broadcast (after the broker
    /// was away, its queue's messages are gone).
    async fn catch_up(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut newest = self.newest.lock().await;
        if let Some(last) = *newest {
            let up_to = feed::newest(&mut *pool.acquire().await?).await?;
            *newest = Some(self.fill(pool, last, up_to).await?);
        }
        Ok(())
    }

    /// Broadcasts the entries numbered in `(after, up_to]`; returns `up_to`.
    async fn fill(&self, pool: &PgPool, mut after: i64, up_to: i64) -> sqlx::Result<i64> {
        let mut conn = pool.acquire().await?;
        while after < up_to {
            let page =
                feed::after(&mut conn, after, up_to, feed::Scope::Everything, FILL_PAGE).await?;
            let full = page.len() as i64 == FILL_PAGE;
            for entry in page {
                after = entry.id;
                self.send(entry);
            }
            if !full {
                break;
            }
        }
        metrics::counter!("orderflow_live_gap_fills_total").increment(1);
        Ok(up_to)
    }

    fn send(&self, entry: FeedEntry) {
        metrics::counter!("orderflow_live_events_total").increment(1);
        // No subscriber is not an error: the entry is in the database for later replays.
        let _ = self.sender.send(Arc::new(entry));
    }

    /// Feeds the hub from the broker until `shutdown`, reconnecting as needed.
    pub async fn run(
        self: Arc<Self>,
        pool: PgPool,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
    ) {
        let topology = Topology::new(&settings.broker);
        let (hub, pool, settings, topology, stop) = (&self, &pool, &settings, &topology, &shutdown);
        broker::supervise(
            &settings.broker,
            "live updates",
            stop,
            |connection, _node| async move {
                hub.session(&connection, pool, settings, topology, stop)
                    .await
            },
        )
        .await;
    }

    async fn session(
        &self,
        connection: &Connection,
        pool: &PgPool,
        settings: &Settings,
        topology: &Topology,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = topology
            .open_channel(connection, settings.worker.max_attempts)
            .await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .context("setting the live queue's prefetch")?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongInt(QUEUE_LIMIT));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .context("declaring this process's live queue")?;
        for event in [
            EventType::StatusChanged,
            EventType::StallChanged,
            EventType::PaymentChanged,
            EventType::FulfillmentChanged,
            EventType::UnitsCancelled,
        ] {
            channel
                .queue_bind(
                    queue.name().as_str().into(),
                    topology.exchange.as_str().into(),
                    event.routing_key().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .context("binding the live queue")?;
        }
        let mut consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "orderflow-live".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("consuming the live queue")?;
        // Bound first, then read: every later entry is in the queue or already in the table.
        self.catch_up(pool)
            .await
            .context("reading the feed after connecting")?;
        tracing::info!(queue = queue.name().as_str(), "live updates connected");
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Some(entry) = Envelope::decode(&delivery.data)
                            .ok()
                            .as_ref()
                            .and_then(FeedEntry::from_envelope)
                        {
                            // A database error ends the session; the next one catches up.
                            self.accept(pool, entry).await.context("filling a gap in the feed")?;
                        }
                        delivery
                            .ack(BasicAckOptions::default())
                            .await
                            .context("acknowledging a live event")?;
                    }
                    Some(Err(error)) => break Err(anyhow::Error::from(error)),
                    None => break Err(anyhow::anyhow!("the broker closed the live consumer")),
                },
            }
        };
        let _ = channel.close(200, "closing".into()).await;
        ended
    }
}
