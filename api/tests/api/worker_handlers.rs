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
    handlers::{HandleError, Outcome, handle},
    watchdog,
};

use crate::helpers::TestApp;

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
    let actor = Actor {
        user_id: Some(vendor.id),
        role: "vendor".into(),
    };

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

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_watchdog_re_enqueues_commands_that_were_never_applied(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let lost = app.order_id(&alice, "MUG", 1).await;
    let fine = app.order_id(&alice, "MUG", 1).await;
    // Both were published an hour ago; only the second was ever applied.
    sqlx::query("UPDATE outbox SET published_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .expect("publish");
    sqlx::query("UPDATE orders SET updated_at = now() - interval '1 hour', applied_seq = CASE WHEN id = $1::uuid THEN 1 ELSE 0 END")
        .bind(&fine)
        .execute(&pool)
        .await
        .expect("age");

    let round = watchdog::round(&pool, Duration::from_secs(60), Duration::from_secs(86_400))
        .await
        .expect("round")
        .expect("elected");
    assert_eq!(round.requeued_orders, 1);
    let unpublished: Vec<String> =
        sqlx::query_scalar("SELECT order_id::text FROM outbox WHERE published_at IS NULL")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(unpublished, [lost]);

    // A command the broker has taken three times and that still is not applied (it keeps
    // landing in the dead-letter queue) is left there for an operator.
    sqlx::query("UPDATE outbox SET published_at = now() - interval '1 hour', publications = 3")
        .execute(&pool)
        .await
        .expect("published thrice");
    let round = watchdog::round(&pool, Duration::from_secs(60), Duration::from_secs(86_400))
        .await
        .expect("round")
        .expect("elected");
    assert_eq!(round.requeued_orders, 0);
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
