//! What streams carry: every applied change, in order, to whoever may see it; a replay of
//! exactly what a reconnecting client missed; every api process's clients alike.

use std::time::Duration;

use common::{
    domain::Role,
    events::{Actor, Envelope, EventType, OrderCreated},
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::LiveStream;
use crate::{binary::start_api, helpers::TestApp};

const QUIET: Duration = Duration::from_millis(700);

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_customer_sees_their_order_move_live_in_order_and_nothing_of_anyone_elses(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let bob = app.user(Role::Customer, "bob").await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let mut alices = LiveStream::open(&app, "/api/orders/stream", &alice.token, None).await;
    let mut bobs = LiveStream::open(&app, "/api/orders/stream", &bob.token, None).await;

    let order = app.order_id(&alice, "LAMP", 1).await;
    let confirmed = alices.next().await;
    let mut followed = LiveStream::open(
        &app,
        &format!("/api/orders/{order}/stream"),
        &alice.token,
        None,
    )
    .await;
    app.move_order(&vendor, &order, json!({ "status": "processing" }))
        .await;
    app.move_order(
        &vendor,
        &order,
        json!({ "status": "shipped", "tracking_number": "TRK-9" }),
    )
    .await;
    app.move_order(&vendor, &order, json!({ "status": "delivered" }))
        .await;

    // Shipping and delivering the order ships its one parcel and delivers it: each parcel
    // change comes just before the status change it causes.
    let mut seen = vec![confirmed];
    let mut parcels = Vec::new();
    while seen.len() < 4 {
        let update = alices.next().await;
        if update.kind == "fulfillment_changed" {
            parcels.push(update);
        } else {
            seen.push(update);
        }
    }
    let parcel_statuses: Vec<&str> = parcels.iter().map(|u| u.status()).collect();
    assert_eq!(parcel_statuses, ["shipped", "delivered"]);
    assert_eq!(parcels[0].data["tracking_number"], "TRK-9");
    let statuses: Vec<&str> = seen.iter().map(|u| u.status()).collect();
    assert_eq!(
        statuses,
        ["confirmed", "processing", "shipped", "delivered"]
    );
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert!(
        seen.iter()
            .all(|u| u.kind == "status_changed" && u.order_id() == order)
    );
    assert_eq!(seen[2].data["tracking_number"], "TRK-9");
    assert_eq!(seen[1].data["from_status"], "confirmed");
    for customer_view in &seen {
        assert!(customer_view.data.get("reason").is_none());
        assert!(customer_view.data.get("customer_id").is_none());
        assert_ne!(
            customer_view.data["actor_role"], "vendor",
            "staff stay anonymous"
        );
    }
    let mut on_the_order_stream = Vec::new();
    for _ in 0..5 {
        let update = followed.next().await;
        on_the_order_stream.push(format!("{} {}", update.kind, update.status()));
    }
    assert_eq!(
        on_the_order_stream,
        [
            "status_changed processing",
            "fulfillment_changed shipped",
            "status_changed shipped",
            "fulfillment_changed delivered",
            "status_changed delivered"
        ]
    );

    assert!(
        bobs.next_within(QUIET).await.is_none(),
        "another customer's stream carries nothing of alice's order"
    );
    let bobs_order = app.order_id(&bob, "LAMP", 1).await;
    assert_eq!(bobs.next().await.order_id(), bobs_order);
    assert!(alices.next_within(QUIET).await.is_none());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn reconnecting_with_last_event_id_replays_exactly_what_was_missed(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let mut board = LiveStream::open(&app, "/api/orders/stream", &vendor.token, None).await;
    let order = app.order_id(&alice, "LAMP", 1).await;
    let confirmed = board.next().await;
    assert_eq!(confirmed.status(), "confirmed");
    drop(board);

    app.move_order(&vendor, &order, json!({ "status": "processing" }))
        .await;
    app.move_order(
        &vendor,
        &order,
        json!({ "status": "shipped", "tracking_number": "TRK-1" }),
    )
    .await;
    let mut resumed = LiveStream::open(
        &app,
        "/api/orders/stream",
        &vendor.token,
        Some(confirmed.id),
    )
    .await;
    assert_eq!(resumed.start, confirmed.id);
    let (processing, parcel, shipped) = (
        resumed.next().await,
        resumed.next().await,
        resumed.next().await,
    );
    assert_eq!(
        (processing.status(), parcel.kind.as_str(), shipped.status()),
        ("processing", "fulfillment_changed", "shipped")
    );
    assert!(confirmed.id < processing.id && processing.id < parcel.id && parcel.id < shipped.id);
    assert!(
        resumed.next_within(QUIET).await.is_none(),
        "nothing twice, nothing more"
    );
    app.move_order(&vendor, &order, json!({ "status": "delivered" }))
        .await;
    let (arrived, delivered) = (resumed.next().await, resumed.next().await);
    assert_eq!(
        (arrived.kind.as_str(), delivered.status()),
        ("fulfillment_changed", "delivered")
    );
    assert!(arrived.id > shipped.id, "then live, after the replay");

    // A customer's replay reads their own orders only, the same events.
    let mut alices =
        LiveStream::open(&app, "/api/orders/stream", &alice.token, Some(confirmed.id)).await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(alices.next().await.id);
    }
    assert_eq!(
        replayed,
        [
            processing.id,
            parcel.id,
            shipped.id,
            arrived.id,
            delivered.id
        ]
    );

    // `?since=` does the same for clients that cannot set the header.
    let mut again = LiveStream::open(
        &app,
        &format!("/api/orders/{order}/stream?since={}", shipped.id),
        &vendor.token,
        None,
    )
    .await;
    assert_eq!(again.next().await.id, arrived.id);
    assert_eq!(again.next().await.id, delivered.id);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn two_api_processes_each_deliver_an_event_applied_once(pool: PgPool) {
    // This test's api (with its worker), and the real binary beside it on the same
    // database and exchange: each has its own queue and its own streams.
    let app = TestApp::spawn_pipeline(pool.clone(), 1).await;
    let other = start_api(&app, &pool, &[]).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let mut here = LiveStream::open(&app, "/api/orders/stream", &vendor.token, None).await;
    let mut there = LiveStream::open_at(
        &app.client,
        &other.base,
        "/api/orders/stream",
        &vendor.token,
        None,
    )
    .await;

    let order = app.order_id(&alice, "LAMP", 1).await;
    let (a, b) = (here.next().await, there.next().await);
    assert_eq!(
        (a.order_id(), b.order_id()),
        (order.as_str(), order.as_str())
    );
    assert_eq!(a.id, b.id, "the same event, applied once");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM order_feed")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(applied, 1);
    assert!(here.next_within(QUIET).await.is_none());
    assert!(there.next_within(QUIET).await.is_none(), "and only once");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_gap_in_what_the_broker_brought_is_filled_from_the_feed(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let first = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &first, "confirmed").await;
    let mut board = LiveStream::open(&app, "/api/orders/stream", &vendor.token, None).await;
    // A change whose event never reached this process (its message was lost).
    sqlx::query(
        "INSERT INTO order_feed (id, order_id, customer_id, kind, from_status, status, actor_role, created_at)
         SELECT nextval('order_feed_id_seq'), id, customer_id, 'status_changed', 'confirmed', 'processing', 'vendor', now()
         FROM orders WHERE id = $1::uuid",
    )
    .bind(&first)
    .execute(&app.pool)
    .await
    .expect("a change without its message");
    let second = app.order_id(&alice, "LAMP", 1).await;
    let (filled, live) = (board.next().await, board.next().await);
    assert_eq!(
        (filled.order_id(), filled.status()),
        (first.as_str(), "processing")
    );
    assert_eq!(
        (live.order_id(), live.status()),
        (second.as_str(), "confirmed")
    );
    assert_eq!(live.id, filled.id + 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn staff_see_an_order_stall_and_resume_and_may_follow_one_status(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool).await;
    let admin = app.user(Role::Admin, "admin").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let mut everything = LiveStream::open(&app, "/api/orders/stream", &admin.token, None).await;
    let mut confirmations = LiveStream::open(
        &app,
        "/api/orders/stream?status=confirmed",
        &vendor.token,
        None,
    )
    .await;
    let mut customers = LiveStream::open(&app, "/api/orders/stream", &alice.token, None).await;

    // No worker runs yet: the order's first command is dead-lettered.
    let order = app.order_id(&alice, "LAMP", 1).await;
    let order_id: Uuid = order.parse().expect("id");
    let command = Envelope::new(
        EventType::OrderCreated,
        order_id,
        1,
        Actor::system(),
        "test",
        OrderCreated {
            customer_id: alice.id,
            total_amount: common::domain::Money::from_minor(4_000),
            currency: "USD".into(),
            items_count: 1,
        },
    );
    common::stall::record_dead_letter(&app.pool, &command, "poisoned")
        .await
        .expect("recorded");
    let stalled = everything.next().await;
    assert_eq!(
        (stalled.kind.as_str(), stalled.status()),
        ("stalled", "pending")
    );
    assert!(
        stalled.data["reason"]
            .as_str()
            .expect("reason")
            .contains("poisoned")
    );

    let redriven = app
        .post(
            &format!("/api/orders/{order}/redrive"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(redriven.status(), reqwest::StatusCode::OK);
    assert_eq!(everything.next().await.kind, "resumed");
    app.start_workers(1);
    assert_eq!(everything.next().await.status(), "confirmed");
    assert_eq!(confirmations.next().await.status(), "confirmed");
    app.move_order(&vendor, &order, json!({ "status": "processing" }))
        .await;
    assert_eq!(everything.next().await.status(), "processing");
    assert!(
        confirmations.next_within(QUIET).await.is_none(),
        "a stream of one status shows only changes into it"
    );
    let seen_by_the_customer = customers.next().await;
    assert_eq!(
        (
            seen_by_the_customer.kind.as_str(),
            seen_by_the_customer.status()
        ),
        ("status_changed", "confirmed"),
        "customers are not told of stalls"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_customer_sees_money_move_live_in_their_words(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let order = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &order, "confirmed").await;
    let path = format!("/api/orders/{order}/stream");
    let mut followed = LiveStream::open(&app, &path, &alice.token, None).await;
    let paid = json!({ "amount": "40.00", "note": "staff-only note" });
    let response = app
        .post(
            &format!("/api/orders/{order}/payments"),
            Some(&vendor.token),
            paid,
        )
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let update = followed.next().await;
    assert_eq!(update.kind, "payment_changed");
    assert_eq!(
        update.status(),
        "confirmed",
        "money does not move the status"
    );
    assert_eq!(
        update.data["message"],
        "Payment of 40.00 USD received. Thank you."
    );
    assert!(update.data.get("reason").is_none(), "{:?}", update.data);
}
