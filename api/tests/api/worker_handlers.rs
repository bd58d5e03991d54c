//! The worker's handler called directly (no broker): exactly-once effects, per-order
//! sequence, and permanent failures.

use common::{
    domain::Role,
    events::{Actor, Envelope, EventType},
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use worker::handlers::{HandleError, Outcome, handle};

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
    let vendor = app.user(Role::Vendor, "vendor").await;
    let alice = app.user(Role::Customer, "alice").await;
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
    let vendor = app.user(Role::Vendor, "vendor").await;
    let alice = app.user(Role::Customer, "alice").await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let id = app.order(&alice, "MUG", 1).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
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
    let vendor = app.user(Role::Vendor, "vendor").await;
    let alice = app.user(Role::Customer, "alice").await;
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
