//! The worker's handler and watchdog called directly (no broker): exactly-once effects,
//! per-order sequence, permanent failures, stuck orders and key pruning.

use std::time::Duration;

use common::{
    domain::Role,
    events::{Actor, Envelope, EventType},
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use worker::{
    handlers::{HandleError, Outcome, PaymentPolicy},
    watchdog,
};

use crate::helpers::{TestApp, TestUser};

/// Applies one command as a worker under the `manual` provider does.
async fn handle(pool: &PgPool, command: &Envelope) -> Result<Outcome, HandleError> {
    worker::handlers::handle(pool, PaymentPolicy::MANUAL, command).await
}

/// The events an order's requests wrote to the outbox, in order.
async fn outbox_envelopes(pool: &PgPool) -> Vec<Envelope> {
    let payloads: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("outbox");
    payloads
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("envelope"))
        .collect()
}

async fn confirmed_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM order_events WHERE kind = 'status_changed' AND to_status = 'confirmed'")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_same_event_delivered_three_times_has_one_effect(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    app.order(&alice, "MUG", 2).await;
    let created = outbox_envelopes(&pool).await.remove(0);
    assert_eq!(
        handle(&pool, &created).await.expect("first"),
        Outcome::Applied
    );
    assert_eq!(
        handle(&pool, &created).await.expect("second"),
        Outcome::Duplicate
    );
    assert_eq!(
        handle(&pool, &created).await.expect("third"),
        Outcome::Duplicate
    );
    assert_eq!(confirmed_rows(&pool).await, 1);
    assert_eq!(app.stock_of("MUG").await, (8, 2));
    let notifications: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(notifications, 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_command_that_arrives_early_waits_for_its_predecessor(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let id = app.order_id(&alice, "MUG", 1).await;
    assert_eq!(
        app.delete(&format!("/api/orders/{id}"), &alice.token)
            .await
            .status(),
        reqwest::StatusCode::ACCEPTED
    );
    let envelopes = outbox_envelopes(&pool).await;
    let (created, cancel) = (&envelopes[0], &envelopes[1]);
    assert_eq!(cancel.seq, 2);

    assert_eq!(
        handle(&pool, cancel).await.expect("early"),
        Outcome::Early { next_expected: 1 }
    );
    assert_eq!(
        handle(&pool, created).await.expect("created"),
        Outcome::Applied
    );
    // The early command was not remembered as processed: its retry applies.
    assert_eq!(
        handle(&pool, cancel).await.expect("cancel"),
        Outcome::Applied
    );
    let status: String = sqlx::query_scalar("SELECT status::text FROM orders")
        .fetch_one(&pool)
        .await
        .expect("status");
    assert_eq!(status, "cancelled");
    assert_eq!(app.stock_of("MUG").await, (10, 0));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn commands_for_unknown_orders_or_with_bad_payloads_are_permanent_failures(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let order_id: Uuid = app.order(&alice, "MUG", 1).await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let actor = Actor::user(vendor.id, common::domain::Role::Vendor);

    let ghost = Envelope::new(
        EventType::OrderCreated,
        Uuid::now_v7(),
        1,
        actor.clone(),
        "test",
        json!({}),
    );
    assert!(
        matches!(handle(&pool, &ghost).await, Err(HandleError::Permanent(reason)) if reason.contains("does not exist"))
    );

    let created = outbox_envelopes(&pool).await.remove(0);
    handle(&pool, &created).await.expect("created");
    let garbled = Envelope::new(
        EventType::StatusChangeRequested,
        order_id,
        2,
        actor.clone(),
        "test",
        json!({ "status": "teleported" }),
    );
    assert!(
        matches!(handle(&pool, &garbled).await, Err(HandleError::Permanent(reason)) if reason.contains("payload"))
    );

    let fact = Envelope::new(
        EventType::StatusChanged,
        order_id,
        2,
        actor,
        "test",
        json!({}),
    );
    assert!(matches!(
        handle(&pool, &fact).await,
        Err(HandleError::Permanent(_))
    ));
    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(processed, 1, "failed messages leave no inbox row");
}

async fn watchdog_round(pool: &PgPool) -> watchdog::Round {
    watchdog::round(pool, Duration::from_secs(60), Duration::from_secs(86_400))
        .await
        .expect("round")
        .expect("elected")
}

/// Orders with a command waiting for the relay (the watchdog re-sends by unstamping).
async fn unpublished_orders(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT order_id::text FROM outbox
         WHERE published_at IS NULL AND routing_key <> 'order.stall_changed' ORDER BY order_id",
    )
    .fetch_all(pool)
    .await
    .expect("rows")
}

async fn stalled_reason(pool: &PgPool, order: &str) -> Option<String> {
    sqlx::query_scalar("SELECT stalled_reason FROM orders WHERE id = $1::uuid")
        .bind(order)
        .fetch_one(pool)
        .await
        .expect("order")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_watchdog_resends_a_lost_command_ever_more_rarely_and_flags_its_order(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let lost = app.order_id(&alice, "MUG", 1).await;
    let fine = app.order_id(&alice, "MUG", 1).await;
    let young = app.order_id(&alice, "MUG", 1).await;
    // All three were published 90 s ago; the second was applied; the third command is
    // only 30 s old (the watchdog judges by the age of the oldest unapplied command).
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '90 seconds', publications = 1,
             created_at = now() - CASE WHEN order_id = $1::uuid THEN interval '30 seconds' ELSE interval '90 seconds' END",
    )
    .bind(&young)
    .execute(&pool)
    .await
    .expect("publish");
    sqlx::query("UPDATE orders SET applied_seq = 1 WHERE id = $1::uuid")
        .bind(&fine)
        .execute(&pool)
        .await
        .expect("applied");

    assert_eq!(watchdog_round(&pool).await.requeued_orders, 1);
    assert_eq!(unpublished_orders(&pool).await, std::slice::from_ref(&lost));
    assert_eq!(stalled_reason(&pool, &lost).await, None);

    // Published a second time 90 s ago: the pause has doubled to 120 s, so not yet.
    sqlx::query("UPDATE outbox SET published_at = now() - interval '90 seconds', publications = 2 WHERE order_id = $1::uuid")
        .bind(&lost)
        .execute(&pool)
        .await
        .expect("second publication");
    assert_eq!(watchdog_round(&pool).await.requeued_orders, 0);

    // A third publication without effect flags the order, and the watchdog keeps trying.
    sqlx::query("UPDATE outbox SET published_at = now() - interval '5 minutes', publications = 3 WHERE order_id = $1::uuid")
        .bind(&lost)
        .execute(&pool)
        .await
        .expect("third publication");
    let round = watchdog_round(&pool).await;
    assert_eq!((round.flagged_orders, round.requeued_orders), (1, 1));
    assert_eq!(
        stalled_reason(&pool, &lost).await.as_deref(),
        Some("command 1 (order.created) was not applied after 3 publications")
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_watchdog_never_resends_a_command_that_is_still_queued(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let dead = app.order_id(&alice, "MUG", 1).await;
    let waiting = app.order_id(&alice, "MUG", 1).await;
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '1 hour', publications = 1,
             created_at = now() - interval '1 hour'",
    )
    .execute(&pool)
    .await
    .expect("publish");
    // One sits in the dead-letter queue (a worker said so); the other was put in a delay
    // queue by a worker 10 s ago.
    sqlx::query(
        "UPDATE outbox SET dead_lettered_at = now(), last_error = 'boom' WHERE order_id = $1::uuid",
    )
    .bind(&dead)
    .execute(&pool)
    .await
    .expect("dead-lettered");
    sqlx::query(
        "UPDATE outbox SET retried_at = now() - interval '10 seconds' WHERE order_id = $1::uuid",
    )
    .bind(&waiting)
    .execute(&pool)
    .await
    .expect("retried");

    let round = watchdog_round(&pool).await;
    assert_eq!((round.flagged_orders, round.requeued_orders), (1, 0));
    assert!(unpublished_orders(&pool).await.is_empty());
    let announced: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id::text, kind FROM order_feed")
            .fetch_all(&pool)
            .await
            .expect("feed");
    assert_eq!(
        announced,
        [(dead.clone(), "stalled".to_owned())],
        "the flagged order is announced to live streams"
    );
    assert_eq!(
        stalled_reason(&pool, &dead).await.as_deref(),
        Some("command 1 (order.created) was dead-lettered: boom")
    );
    assert_eq!(stalled_reason(&pool, &waiting).await, None);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_watchdog_prunes_expired_idempotency_keys(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let alice = app.user(Role::Customer, "alice").await;
    for (key, age) in [("old", "25 hours"), ("fresh", "1 hour")] {
        sqlx::query("INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) VALUES ($1, $2, '\\x00', now() - $3::interval)")
            .bind(alice.id)
            .bind(key)
            .bind(age)
            .execute(&pool)
            .await
            .expect("key");
    }
    let round = watchdog::round(
        &pool,
        Duration::from_secs(60),
        Duration::from_secs(24 * 3600),
    )
    .await
    .expect("round")
    .expect("elected");
    assert_eq!(round.pruned_keys, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .expect("keys");
    assert_eq!(left, ["fresh"]);
}

/// Handles the order's `order.created` command while another transaction moves the stock of
/// "LAST" by `stock_change` and holds the row until the batch, having decided on the stock
/// it read without a lock, waits to move it; then commits. Returns the order's status.
async fn decide_while_stock_moves(
    app: &TestApp,
    pool: &PgPool,
    customer: &TestUser,
    stock_change: i32,
) -> String {
    let id: Uuid = app.order_id(customer, "LAST", 1).await.parse().expect("id");
    let created = outbox_envelopes(pool).await.remove(0);
    let mut rival = pool.begin().await.expect("rival");
    sqlx::query("UPDATE products SET stock = stock + $1 WHERE sku = 'LAST'")
        .bind(stock_change)
        .execute(&mut *rival)
        .await
        .expect("rival's stock change");
    let handling = tokio::spawn({
        let pool = pool.clone();
        async move { handle(&pool, &created).await }
    });
    crate::helpers::wait_until(
        "the batch waits to move the stock",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock')",
            )
            .fetch_one(pool)
            .await
            .unwrap_or(false)
        },
    )
    .await;
    rival.commit().await.expect("rival commits");
    let outcome = handling.await.expect("task").expect("handled");
    assert_eq!(outcome, Outcome::Applied);
    sqlx::query_scalar("SELECT status::text FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("status")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn stock_sold_elsewhere_while_a_batch_decides_is_never_sold_twice(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAST", "5.00", 1).await;
    // The batch read one unit left; the rival took it before the batch could.
    let status = decide_while_stock_moves(&app, &pool, &alice, -1).await;
    assert_eq!(
        status, "cancelled",
        "decided again on the stock that is left"
    );
    assert_eq!(app.stock_of("LAST").await, (0, 0));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn stock_put_back_while_a_batch_decides_is_not_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAST", "5.00", 0).await;
    // The batch read none left and refused; the rival restocked one before the batch wrote.
    let status = decide_while_stock_moves(&app, &pool, &alice, 1).await;
    assert_eq!(status, "confirmed", "decided again on the stock now there");
    assert_eq!(app.stock_of("LAST").await, (0, 1));
}
