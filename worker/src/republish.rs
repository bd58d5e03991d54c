//! Putting a delivery back on the broker: into the delay queue for a later retry, or into
//! the dead-letter queue with the reason in its headers. Both wait for the broker's confirm,
//! so the original is acked only once its copy is safe.

use std::time::Duration;

use anyhow::Context;
use common::broker::{BROKER_CALL_TIMEOUT, Topology};
use lapin::{
    BasicProperties, Channel, Confirmation,
    message::Delivery,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};

pub use common::dead_letters::{ERROR_HEADER, RETRIES_HEADER};

/// Earlier retries of this message (0 on its first delivery).
pub fn retries(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(RETRIES_HEADER).cloned())
        .and_then(|value| match value {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

fn headers_of(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
}

/// Sends a copy through the delay queue of `delay`'s tier (rounded up); it comes back to the
/// work queue after that wait.
pub async fn retry_later(
    channel: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    delay: Duration,
) -> anyhow::Result<()> {
    let mut headers = headers_of(delivery);
    headers.insert(
        RETRIES_HEADER.into(),
        AMQPValue::LongUInt(retries(delivery) + 1),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let tier = topology.retry_tier(delay);
    publish(channel, &tier.exchange, delivery, properties).await
}

/// Sends a copy to the dead-letter queue with `reason`.
pub async fn dead_letter(
    channel: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    let mut headers = headers_of(delivery);
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(
        "x-orderflow-dead-lettered-at".into(),
        AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
    );
    let properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    publish(
        channel,
        &topology.dead_letter_exchange,
        delivery,
        properties,
    )
    .await
}

async fn publish(
    channel: &Channel,
    exchange: &str,
    delivery: &Delivery,
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = tokio::time::timeout(
        BROKER_CALL_TIMEOUT,
        channel.basic_publish(
            exchange.into(),
            delivery.routing_key.clone(),
            options,
            &delivery.data,
            properties,
        ),
    )
    .await
    .context("republish timed out")??;
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, confirm)
        .await
        .context("no confirm in time")??
    {
        Confirmation::Ack(None) => Ok(()),
        other => anyhow::bail!("broker did not take the message to {exchange}: {other:?}"),
    }
}
