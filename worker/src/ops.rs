//! Operator commands: system statistics, listing and re-driving dead letters, and resolving
//! stalled orders.

use anyhow::Context;
use common::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
    events::Actor,
    outbox, stall,
};
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use sqlx::PgPool;

use crate::republish::{ERROR_HEADER, RETRIES_HEADER};

/// Counts an operator watches.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub orders_pending: i64,
    /// Orders whose oldest unapplied command is older than `STUCK_AFTER_SECS`: what the
    /// watchdog looks at.
    pub orders_stuck: i64,
    pub outbox_unpublished: i64,
    /// Rows the relay set aside (`worker outbox parked`).
    pub outbox_parked: i64,
    /// Orders flagged stalled (`worker orders stalled`).
    pub orders_stalled: i64,
    pub work_queue_messages: u32,
    pub dead_letters: u32,
    /// Webhook deliveries waiting for an attempt or a retry.
    pub webhook_deliveries_pending: i64,
    /// Webhook deliveries whose retries are spent (re-send them from the delivery log).
    pub webhook_deliveries_failed: i64,
    /// Endpoints switched off, by an admin or by the system (`disabled_reason`).
    pub webhook_endpoints_disabled: i64,
    /// Events waiting for a worker's webhook intake.
    pub webhook_queue_messages: u32,
}

pub async fn stats(pool: &PgPool, settings: &Settings) -> anyhow::Result<Stats> {
    let (orders_pending, orders_stuck, orders_stalled): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE status = 'pending'),
                (SELECT count(*) FROM orders o JOIN outbox x ON x.order_id = o.id AND x.seq = o.applied_seq + 1
                   AND x.routing_key NOT IN ('order.status_changed', 'order.stall_changed')
                 WHERE o.applied_seq < o.last_seq AND x.created_at < now() - make_interval(secs => $1)),
                (SELECT count(*) FROM orders WHERE stalled_at IS NOT NULL)",
    )
    .bind(settings.worker.stuck_after.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let (webhook_deliveries_pending, webhook_deliveries_failed, webhook_endpoints_disabled): (
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'),
                (SELECT count(*) FROM webhook_endpoints WHERE NOT enabled)
         FROM webhook_deliveries",
    )
    .fetch_one(pool)
    .await?;
    let backlog = outbox::backlog(pool).await?;
    let topology = Topology::new(&settings.broker);
    let connection = broker::connect(&settings.broker, "orderflow-ops").await?;
    let channel = connection.create_channel().await?;
    let count = |queue: String| {
        let channel = channel.clone();
        async move {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .map(|q| q.message_count())
                .with_context(|| format!("queue {queue} does not exist yet: start a worker once"))
        }
    };
    let work_queue_messages = count(topology.queue.clone()).await?;
    let dead_letters = count(topology.dead_letter_queue.clone()).await?;
    let webhook_queue_messages = count(topology.webhook_queue.clone()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(Stats {
        orders_pending,
        orders_stuck,
        outbox_unpublished: backlog.pending + backlog.parked,
        outbox_parked: backlog.parked,
        orders_stalled,
        work_queue_messages,
        dead_letters,
        webhook_deliveries_pending,
        webhook_deliveries_failed,
        webhook_endpoints_disabled,
        webhook_queue_messages,
    })
}

/// What to do about stalled orders.
pub enum OrderAction {
    ListStalled {
        limit: i64,
    },
    Redrive {
        order_id: uuid::Uuid,
    },
    Skip {
        order_id: uuid::Uuid,
        reason: String,
    },
}

/// Runs `action`, printing what it did. A skip is recorded as done by the system, on an
/// operator's word.
pub async fn orders(pool: &PgPool, action: OrderAction) -> anyhow::Result<()> {
    let resolved = match action {
        OrderAction::ListStalled { limit } => {
            for order in stall::list(pool, limit).await? {
                println!("{}", serde_json::to_string(&order)?);
            }
            return Ok(());
        }
        OrderAction::Redrive { order_id } => {
            let mut tx = pool.begin().await?;
            let resolved = stall::redrive(&mut tx, order_id, &Actor::system()).await?;
            tx.commit().await?;
            resolved
        }
        OrderAction::Skip { order_id, reason } => {
            anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
            let mut tx = pool.begin().await?;
            let resolved = stall::skip(&mut tx, order_id, &Actor::system(), reason.trim()).await?;
            tx.commit().await?;
            resolved
        }
    };
    println!("{}", serde_json::to_string(&resolved)?);
    Ok(())
}

/// A dead letter as shown to an operator.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub routing_key: String,
    pub error: Option<String>,
    pub body: String,
}

/// What to re-drive.
pub enum Selection {
    All,
    MessageIds(Vec<String>),
}

/// Lists up to `limit` dead letters without removing them.
pub async fn list_dead_letters(
    settings: &Settings,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let (connection, channel, topology) = open(settings).await?;
    let mut letters = Vec::new();
    let mut tags = Vec::new();
    while letters.len() < limit {
        let Some(message) = get(&channel, &topology.dead_letter_queue).await? else {
            break;
        };
        letters.push(describe(&message.delivery));
        tags.push(message.delivery.delivery_tag);
    }
    hand_back(connection, &channel, tags).await?;
    Ok(letters)
}

/// Publishes the selected dead letters back to the work exchange with a fresh retry count,
/// each removed from the dead-letter queue only once the broker confirmed its copy.
pub async fn redrive(settings: &Settings, selection: Selection) -> anyhow::Result<usize> {
    let (connection, channel, topology) = open(settings).await?;
    let mut redriven = 0;
    let mut skipped = Vec::new();
    while let Some(message) = get(&channel, &topology.dead_letter_queue).await? {
        let delivery = &message.delivery;
        let wanted = match &selection {
            Selection::All => true,
            Selection::MessageIds(ids) => delivery
                .properties
                .message_id()
                .as_ref()
                .is_some_and(|id| ids.iter().any(|wanted| wanted.as_str() == id.as_str())),
        };
        if !wanted {
            skipped.push(delivery.delivery_tag);
            continue;
        }
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let mut cleaned = FieldTable::default();
        for (key, value) in headers.inner() {
            if key.as_str() != ERROR_HEADER
                && !key.as_str().starts_with("x-orderflow-dead")
                && key.as_str() != RETRIES_HEADER
            {
                cleaned.insert(key.clone(), value.clone());
            }
        }
        headers = cleaned;
        headers.insert("x-orderflow-redriven".into(), AMQPValue::Boolean(true));
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
        let confirm = channel
            .basic_publish(
                topology.exchange.as_str().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                properties,
            )
            .await?;
        match tokio::time::timeout(BROKER_CALL_TIMEOUT, confirm).await?? {
            Confirmation::Ack(None) => {
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await?;
                redriven += 1;
            }
            other => anyhow::bail!("the broker did not take a re-driven message: {other:?}"),
        }
    }
    hand_back(connection, &channel, skipped).await?;
    Ok(redriven)
}

/// Returns the messages behind `tags` to their queue untouched, then closes the connection.
async fn hand_back(
    connection: lapin::Connection,
    channel: &Channel,
    tags: Vec<u64>,
) -> anyhow::Result<()> {
    for tag in tags {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                },
            )
            .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn open(settings: &Settings) -> anyhow::Result<(lapin::Connection, Channel, Topology)> {
    let topology = Topology::new(&settings.broker);
    let connection = broker::connect(&settings.broker, "orderflow-ops").await?;
    let channel = topology
        .open_channel(&connection, settings.worker.max_attempts)
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel, topology))
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<Option<lapin::message::BasicGetMessage>> {
    let get = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false });
    Ok(tokio::time::timeout(BROKER_CALL_TIMEOUT, get).await??)
}

fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let error = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ERROR_HEADER).cloned())
        .map(|value| match value {
            AMQPValue::LongString(text) => text.to_string(),
            other => format!("{other:?}"),
        })
        .or_else(|| {
            Some("dropped by the broker after too many deliveries (x-delivery-limit)".to_owned())
                .filter(|_| {
                    delivery
                        .properties
                        .headers()
                        .as_ref()
                        .is_some_and(|h| h.inner().contains_key("x-death"))
                })
        });
    DeadLetter {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        routing_key: delivery.routing_key.to_string(),
        error,
        body: String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}
