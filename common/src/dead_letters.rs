//! Dead letters: the messages workers could not apply, listed without being taken off the
//! dead-letter queue, and re-driven (published back to the work exchange with a fresh retry
//! count, each removed only once the broker confirmed its copy). Used by `worker
//! dead-letters` and the admin API alike.

use lapin::{
    BasicProperties, Channel, Confirmation,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;

use crate::{
    broker::{self, BROKER_CALL_TIMEOUT, Topology},
    config::Settings,
};

/// Header counting how often a message was scheduled for a retry.
pub const RETRIES_HEADER: &str = "x-orderflow-retries";
/// Header naming why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-orderflow-error";

/// A dead letter, as an operator sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
pub async fn list(settings: &Settings, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
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
///
/// Only the letters in the queue when it starts are looked at: one that fails again and
/// comes back meanwhile joins the queue's tail and waits for the next re-drive, rather than
/// going round for as long as the workers keep refusing it.
pub async fn redrive(settings: &Settings, selection: Selection) -> anyhow::Result<usize> {
    let (connection, channel, topology) = open(settings).await?;
    let waiting = channel
        .queue_declare(
            topology.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut redriven = 0;
    let mut skipped = Vec::new();
    for _ in 0..waiting {
        let Some(message) = get(&channel, &topology.dead_letter_queue).await? else {
            break;
        };
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
