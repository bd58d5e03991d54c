//! Delayed retries keep their delays: a short wait is not held behind a long one.

use std::time::{Duration, Instant};

use common::broker::{self, Topology};
use common::config::Settings;
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use sqlx::PgPool;
use worker::republish;

use crate::helpers::TestApp;

/// One message off `queue`, unacknowledged, if any.
pub async fn get(channel: &Channel, queue: &str) -> Option<Delivery> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
        .map(|message| message.delivery)
}

/// A connection, and a channel on it with the topology declared and publisher confirms on.
pub async fn confirming_channel(settings: &Settings, topology: &Topology) -> (Connection, Channel) {
    let connection = broker::connect(&settings.broker, "retry-tier-test")
        .await
        .expect("broker");
    let channel = topology
        .open_channel(&connection, settings.worker.max_attempts)
        .await
        .expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (connection, channel)
}

/// Publishes `body` as a persistent `order.created` and waits for the broker's confirm.
pub async fn publish_command(channel: &Channel, topology: &Topology, body: &[u8]) {
    channel
        .basic_publish(
            topology.exchange.as_str().into(),
            "order.created".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[test]
fn a_delay_rounds_up_to_the_next_tier() {
    let settings = crate::helpers::test_settings(&[]);
    let topology = Topology::new(&settings.broker);
    let tier = |ms| {
        topology
            .retry_tier(Duration::from_millis(ms))
            .delay
            .as_millis()
    };
    assert_eq!(tier(50), 50);
    assert_eq!(tier(400), 500);
    assert_eq!(tier(1_600), 2_000);
    assert_eq!(
        tier(120_000),
        30_000,
        "beyond the longest tier: the longest"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_short_retry_overtakes_a_long_one(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.clean_up_broker_on_drop();
    let settings = app.settings();
    let topology = Topology::new(&settings.broker);
    let (connection, channel) = confirming_channel(&settings, &topology).await;
    for body in [b"long".as_slice(), b"short".as_slice()] {
        publish_command(&channel, &topology, body).await;
    }
    let long = get(&channel, &topology.queue).await.expect("long");
    let short = get(&channel, &topology.queue).await.expect("short");
    republish::retry_later(&channel, &topology, &long, Duration::from_secs(30))
        .await
        .expect("long retry");
    republish::retry_later(&channel, &topology, &short, Duration::from_millis(50))
        .await
        .expect("short retry");
    for original in [long, short] {
        original
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
    }

    let started = Instant::now();
    let back = loop {
        if let Some(delivery) = get(&channel, &topology.queue).await {
            break delivery;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the short retry never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(back.data, b"short", "the short wait came back first");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(republish::retries(&back), 1);
    back.acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    assert!(
        get(&channel, &topology.queue).await.is_none(),
        "the long one still waits"
    );
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
}
