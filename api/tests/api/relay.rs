//! The outbox relay and the worker's publishing: bad rows are parked instead of stopping
//! the rest, workers relay their own events, and a refused re-publish does not spin.

use std::time::{Duration, Instant};

use common::{
    broker::{self, Topology},
    domain::OrderStatus,
    events::{Actor, Envelope, EventType, StatusChanged},
    relay::{BrokerStatus, Relay},
};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, test_settings, wait_until};

/// A connection with the test's topology declared, and an exclusive queue bound to its
/// exchange for `routing_key` (gone when the connection closes).
async fn listen(app: &TestApp, routing_key: &str) -> (Connection, Channel, String) {
    let settings = app.settings();
    let connection = broker::connect(&settings.broker, "relay-test")
        .await
        .expect("broker");
    let channel = Topology::new(&settings.broker)
        .open_channel(&connection, settings.worker.max_attempts)
        .await
        .expect("channel");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue")
        .name()
        .to_string();
    channel
        .queue_bind(
            queue.as_str().into(),
            settings.broker.exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    (connection, channel, queue)
}

async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

fn status_changed(order_id: Uuid) -> Envelope {
    Envelope::new(
        EventType::StatusChanged,
        order_id,
        1,
        Actor::system(),
        "relay-test",
        StatusChanged {
            from: OrderStatus::Pending,
            to: OrderStatus::Confirmed,
            reason: None,
            tracking_number: None,
            customer_id: None,
            feed_id: None,
        },
    )
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_poisoned_outbox_row_is_parked_while_500_good_ones_publish(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.clean_up_broker_on_drop();
    let (_connection, channel, queue) = listen(&app, "order.status_changed").await;
    // The poisoned row comes first, where it used to hold up every row behind it.
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'order.status_changed', '[\"not an envelope\"]')",
    )
    .execute(&pool)
    .await
    .expect("poisoned row");
    let mut tx = pool.begin().await.expect("tx");
    for _ in 0..500 {
        crate::helpers::enqueue(&mut tx, &status_changed(Uuid::now_v7())).await;
    }
    tx.commit().await.expect("commit");

    let relay = Relay {
        pool: pool.clone(),
        settings: app.settings(),
        status: BrokerStatus::default(),
        wake: Default::default(),
        name: "test relay",
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    tokio::spawn(relay.run(stop.clone()));
    wait_until("500 messages arrive", Duration::from_secs(20), || async {
        depth(&channel, &queue).await == 500
    })
    .await;
    eprintln!(
        "500 rows relayed past a poisoned one in {:?}",
        started.elapsed()
    );
    // The broker counts a message before the relay has stamped its row (after the confirm).
    wait_until(
        "every good row is stamped",
        Duration::from_secs(10),
        || async {
            common::outbox::backlog(&pool)
                .await
                .expect("backlog")
                .pending
                == 0
        },
    )
    .await;
    let backlog = common::outbox::backlog(&pool).await.expect("backlog");
    assert_eq!((backlog.pending, backlog.parked), (0, 1));
    let parked = common::outbox::parked(&pool, 10).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 1);
    assert_eq!(
        parked[0].last_error.as_deref(),
        Some("the row holds no valid envelope")
    );

    // An operator re-queues it; still no envelope, so it is parked again, alone.
    assert_eq!(
        common::outbox::requeue(&pool, None).await.expect("requeue"),
        1
    );
    wait_until(
        "the row is parked again",
        Duration::from_secs(10),
        || async {
            common::outbox::backlog(&pool)
                .await
                .expect("backlog")
                .parked
                == 1
        },
    )
    .await;
    assert_eq!(depth(&channel, &queue).await, 500);
    stop.cancel();
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn with_no_api_relay_running_a_workers_status_changed_still_reaches_a_bound_queue(
    pool: PgPool,
) {
    // The api here relays nothing; only the worker's own relay publishes.
    let mut app = TestApp::spawn(pool).await;
    app.clean_up_broker_on_drop();
    let (_connection, channel, queue) = listen(&app, "order.status_changed").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    let id = app.order_id(&alice, "PEN", 1).await;
    app.start_workers(1);
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "relay-test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("an event in time")
        .expect("a delivery")
        .expect("ok");
    let event = Envelope::decode(&delivery.data).expect("envelope");
    assert_eq!(event.event_type, EventType::StatusChanged);
    assert_eq!(event.order_id.to_string(), id);
    assert_eq!(event.payload["to"], "confirmed");
}

/// Publishes a persistent, mandatory message and waits for the broker's confirm.
async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8]) -> lapin::Confirmation {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm")
}

/// Runs `rabbitmqctl` with `args`, asserting success.
fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

fn settle_failures() -> f64 {
    common::metrics::handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("orderflow_worker_settle_failures_total "))
        .map_or(0.0, |value| value.parse().expect("number"))
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_refused_republish_ends_the_session_instead_of_spinning(pool: PgPool) {
    // A high delivery limit, so the broker does not end the loop for us.
    let settings = test_settings(&[("WORKER_MAX_ATTEMPTS", "100")]);
    let mut app = TestApp::start(pool, settings, false).await;
    app.clean_up_broker_on_drop();
    let settings = app.settings();
    let topology = Topology::new(&settings.broker);
    // The dead-letter queue will be full and refuse more, as a full or alarmed broker
    // would. (A policy set before the queue exists applies from its first message.)
    let policy = format!("refuse-{}", Uuid::now_v7().simple());
    let pattern = format!("^{}$", topology.dead_letter_queue.replace('.', "\\."));
    rabbitmqctl(&[
        "set_policy",
        "--apply-to",
        "queues",
        &policy,
        &pattern,
        r#"{"max-length":1,"overflow":"reject-publish"}"#,
    ]);
    let (connection, channel, _) = listen(&app, "unused").await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    publish(
        &channel,
        &topology.dead_letter_exchange,
        "filler",
        b"filler",
    )
    .await;
    let overflow = publish(
        &channel,
        &topology.dead_letter_exchange,
        "filler",
        b"filler",
    )
    .await;
    // Quorum queues take one message past the limit; the next is refused.
    assert!(matches!(overflow, lapin::Confirmation::Ack(None)));
    publish(
        &channel,
        &settings.broker.exchange,
        "order.created",
        b"not json",
    )
    .await;

    let before = settle_failures();
    app.start_workers(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = settle_failures() - before;
    // Not lost either: it waits, unacknowledged, in the work queue.
    assert_eq!(depth(&channel, &topology.queue).await, 1);
    rabbitmqctl(&["clear_policy", &policy]);
    eprintln!("{failures} refused dead-letterings in 3 s");
    // Each failure costs a reconnect (a 500 ms pause first), not a millisecond requeue
    // (which would have spent the delivery limit of 100 within the first second).
    assert!(
        (1.0..=10.0).contains(&failures),
        "{failures} failures in 3 s"
    );

    // Once the broker takes it, the message is dead-lettered: never lost on the way.
    wait_until(
        "the message is dead-lettered",
        Duration::from_secs(15),
        || async { depth(&channel, &topology.dead_letter_queue).await == 3 },
    )
    .await;
    assert_eq!(depth(&channel, &topology.queue).await, 0);
    let _ = connection.close(200, "done".into()).await;
}
