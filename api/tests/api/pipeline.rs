//! The whole system at work: api, outbox relay, RabbitMQ and workers, observed over HTTP.

use std::time::{Duration, Instant};

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, order_body, wait_until};

fn kinds_and_targets(timeline: &Value) -> Vec<(String, String)> {
    timeline
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                e["to_status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_order_lives_its_whole_life_through_the_queue(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let vendor = app.user(Role::Vendor, "vendor").await;
    let admin = app.user(Role::Admin, "admin").await;
    let alice = app.user(Role::Customer, "alice").await;
    app.product(&vendor, "LAMP", "40.00", 5).await;

    let placed_at = Instant::now();
    let order = app.order(&alice, "LAMP", 2).await;
    let id = order["id"].as_str().expect("id").to_owned();
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let confirmed_after = placed_at.elapsed();
    assert!(
        confirmed_after < Duration::from_secs(5),
        "confirmation took {confirmed_after:?}"
    );
    assert_eq!(
        app.stock_of("LAMP").await,
        (3, 2),
        "stock reserved on confirmation"
    );

    app.move_order(&vendor, &id, json!({ "status": "processing" }))
        .await;
    let shipped = json!({ "status": "shipped", "tracking_number": "TRK-123" });
    let order = app.move_order(&vendor, &id, shipped).await;
    assert_eq!(order["tracking_number"], "TRK-123");
    assert_eq!(
        app.stock_of("LAMP").await,
        (3, 0),
        "shipped goods are no longer reserved"
    );
    app.move_order(&vendor, &id, json!({ "status": "delivered" }))
        .await;
    // `refunded` is what refunds make of an order, not a word staff set.
    let by_hand = app
        .patch(
            &format!("/api/orders/{id}/status"),
            &admin.token,
            json!({ "status": "refunded" }),
        )
        .await;
    assert_eq!(by_hand.status(), StatusCode::CONFLICT);
    // Cash on delivery, then refunded in full: the order reads `refunded`.
    let paid = json!({ "amount": "80.00", "reference": "COD-1" });
    let response = app
        .post(
            &format!("/api/orders/{id}/payments"),
            Some(&vendor.token),
            paid,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Only money the worker has recorded as captured can be refunded.
    wait_until(
        "the payment is recorded",
        Duration::from_secs(20),
        || async {
            let order: Value = app
                .get(&format!("/api/orders/{id}"), &alice.token)
                .await
                .json()
                .await
                .expect("order");
            order["payment"]["status"] == "paid"
        },
    )
    .await;
    let refund = json!({ "amount": "80.00", "reason": "broken on arrival" });
    let response = app
        .post(
            &format!("/api/orders/{id}/refunds"),
            Some(&admin.token),
            refund,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let order = app.wait_for_status(&alice.token, &id, "refunded").await;
    assert!(order["pending_status"].is_null());
    assert_eq!(order["payment"]["status"], "refunded");
    assert_eq!(order["payment"]["amount_refunded"], "80.00");

    let timeline: Value = app
        .get(&format!("/api/orders/{id}/events"), &admin.token)
        .await
        .json()
        .await
        .expect("json");
    let changes: Vec<String> = kinds_and_targets(&timeline)
        .into_iter()
        .filter(|(kind, _)| kind == "status_changed")
        .map(|(_, to)| to)
        .collect();
    assert_eq!(
        changes,
        [
            "confirmed",
            "processing",
            "shipped",
            "delivered",
            "refunded"
        ]
    );
    let entries = timeline.as_array().expect("entries");
    assert_eq!(entries[0]["kind"], "created");
    assert!(entries.iter().any(|e| e["kind"] == "notified"));
    let refund = entries
        .iter()
        .find(|e| e["to_status"] == "refunded" && e["kind"] == "status_changed")
        .expect("refund");
    assert_eq!(refund["actor_role"], "system");
    assert_eq!(refund["reason"], "refunded in full");

    // The customer's view: what happened, in their words; no staff ids, notes or sequence.
    let seen: Value = app
        .get(&format!("/api/orders/{id}/events"), &alice.token)
        .await
        .json()
        .await
        .expect("json");
    let seen = seen.as_array().expect("entries");
    let refund = seen
        .iter()
        .find(|e| e["to_status"] == "refunded" && e["kind"] == "status_changed")
        .expect("refund");
    assert_eq!(refund["actor_role"], "system");
    assert_eq!(refund["message"], "Your order was refunded.");
    let money: Vec<&str> = seen
        .iter()
        .filter(|e| e["kind"] == "payment_changed")
        .map(|e| e["message"].as_str().expect("message"))
        .collect();
    assert_eq!(
        money,
        [
            "Payment of 80.00 USD received. Thank you.",
            "80.00 USD refunded to you."
        ]
    );
    for entry in seen {
        for staff_only in ["actor_id", "reason", "seq"] {
            assert!(
                entry.get(staff_only).is_none(),
                "{staff_only} shown: {entry}"
            );
        }
        assert_ne!(
            entry["kind"], "status_change_requested",
            "staff requests stay internal"
        );
    }

    let notifications: Value = app
        .get("/api/notifications", &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        notifications["total"], 7,
        "five changes, a payment and a refund"
    );
    let newest = notifications["items"][0]["message"]
        .as_str()
        .expect("message");
    assert!(newest.contains("refunded"), "{newest}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn status_changes_sent_back_to_back_apply_in_order(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 2).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "BOOK", "9.00", 50).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.order_id(&alice, "BOOK", 1).await);
    }
    for id in &ids {
        app.wait_for_status(&alice.token, id, "confirmed").await;
    }
    for id in &ids {
        let path = format!("/api/orders/{id}/status");
        for body in [
            json!({ "status": "processing" }),
            json!({ "status": "shipped", "tracking_number": "T" }),
            json!({ "status": "delivered" }),
        ] {
            assert_eq!(
                app.patch(&path, &vendor.token, body).await.status(),
                StatusCode::ACCEPTED
            );
        }
    }
    for id in &ids {
        app.wait_for_status(&alice.token, id, "delivered").await;
        let timeline: Value = app
            .get(&format!("/api/orders/{id}/events"), &vendor.token)
            .await
            .json()
            .await
            .expect("json");
        let kinds = kinds_and_targets(&timeline);
        assert!(
            kinds.iter().all(|(kind, _)| kind != "rejected"),
            "{kinds:?}"
        );
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_customer_cancels_and_the_stock_comes_back(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "CHAIR", "80.00", 4).await;
    let id = app.order_id(&alice, "CHAIR", 3).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    assert_eq!(app.stock_of("CHAIR").await, (1, 3));
    let cancelled = app.delete(&format!("/api/orders/{id}"), &alice.token).await;
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    app.wait_for_status(&alice.token, &id, "cancelled").await;
    assert_eq!(app.stock_of("CHAIR").await, (4, 0));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_vendor_cancels_a_processing_order_and_the_stock_comes_back(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "DESK", "200.00", 2).await;
    let id = app.order_id(&alice, "DESK", 2).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    app.move_order(&vendor, &id, json!({ "status": "processing" }))
        .await;
    assert_eq!(
        app.delete(&format!("/api/orders/{id}"), &alice.token)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.delete(&format!("/api/orders/{id}"), &vendor.token)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_status(&alice.token, &id, "cancelled").await;
    assert_eq!(app.stock_of("DESK").await, (2, 0));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_order_beyond_the_stock_is_cancelled_as_out_of_stock(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "RARE", "1000.00", 1).await;
    app.product(&vendor, "COMMON", "1.00", 100).await;
    let response = app
        .post(
            "/api/orders",
            Some(&alice.token),
            order_body(&[("COMMON", 5), ("RARE", 2)]),
        )
        .await;
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for_status(&alice.token, &id, "cancelled").await;
    assert_eq!(app.stock_of("RARE").await, (1, 0));
    assert_eq!(
        app.stock_of("COMMON").await,
        (100, 0),
        "all or nothing: no line is reserved"
    );
    let timeline: Value = app
        .get(&format!("/api/orders/{id}/events"), &vendor.token)
        .await
        .json()
        .await
        .expect("json");
    let cancel = timeline
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["kind"] == "status_changed")
        .expect("cancel");
    assert_eq!(cancel["actor_role"], "system");
    assert!(
        cancel["reason"]
            .as_str()
            .expect("reason")
            .starts_with("out_of_stock"),
        "{cancel}"
    );
    let seen = app
        .get(&format!("/api/orders/{id}/events"), &alice.token)
        .await
        .text()
        .await
        .expect("body");
    assert!(seen.contains("some items were out of stock"), "{seen}");
    assert!(
        !seen.contains("RARE"),
        "the customer never learns SKU-level stock: {seen}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn fifty_concurrent_orders_for_ten_units_confirm_exactly_ten(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 3).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "HOT", "5.00", 10).await;
    let placing =
        (0..50).map(|_| app.post("/api/orders", Some(&alice.token), order_body(&[("HOT", 1)])));
    let responses = futures_util::future::join_all(placing).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::CREATED));
    crate::helpers::wait_until("every order is decided", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'pending'")
                    .fetch_one(&pool)
                    .await
                    .expect("count");
            pending == 0
        }
    })
    .await;
    let confirmed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'confirmed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    let cancelled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'cancelled'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!((confirmed, cancelled), (10, 40));
    assert_eq!(app.stock_of("HOT").await, (0, 10));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_cancel_queued_before_an_out_of_stock_refusal_is_recorded_as_refused(pool: PgPool) {
    // No worker yet: both commands are queued before either is applied.
    let app = TestApp::spawn_with_broker(pool).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "GONE", "1.00", 0).await;
    let id = app.order_id(&alice, "GONE", 1).await;
    assert_eq!(
        app.delete(&format!("/api/orders/{id}"), &alice.token)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.start_workers(1);
    app.wait_for_status(&alice.token, &id, "cancelled").await;
    let path = format!("/api/orders/{id}/events");
    crate::helpers::wait_until(
        "the cancel command is applied",
        Duration::from_secs(10),
        || async {
            let timeline: Value = app
                .get(&path, &alice.token)
                .await
                .json()
                .await
                .expect("json");
            timeline
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["kind"] == "rejected")
        },
    )
    .await;
    let timeline: Value = app
        .get(&path, &vendor.token)
        .await
        .json()
        .await
        .expect("json");
    let rejected = timeline
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["kind"] == "rejected")
        .expect("rejected");
    assert!(
        rejected["reason"]
            .as_str()
            .expect("reason")
            .starts_with("unchanged"),
        "{rejected}"
    );
    assert_eq!(rejected["seq"], 2);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_corrupt_outbox_row_is_set_aside_without_stalling_the_relay(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'order.created', '{\"not\": \"an envelope\"}')",
    )
    .execute(&pool)
    .await
    .expect("corrupt row");
    app.start_workers(1);
    let id = app.order_id(&alice, "PEN", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let (error, parked): (Option<String>, bool) = sqlx::query_as(
        "SELECT last_error, parked_at IS NOT NULL FROM outbox WHERE payload->>'not' IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(error.as_deref(), Some("the row holds no valid envelope"));
    assert!(
        parked,
        "a row that can never be published is parked at once"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_deleted_work_queue_is_declared_again_and_orders_keep_flowing(pool: PgPool) {
    // No worker while the queue is gone. The webhook queue still takes `order.created`, so
    // the relay's publish is routed and confirmed, and the command reaches no worker: the
    // worker declares its queue again when it starts, and the watchdog publishes the command
    // again once it is overdue.
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "CUP", "1.00", 5).await;
    let settings = app.settings();
    let connection = common::broker::connect(&settings.broker, "test-saboteur")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(settings.broker.queue.as_str().into(), Default::default())
        .await
        .expect("queue deleted");
    connection.close(200, "done".into()).await.expect("close");
    let id = app.order_id(&alice, "CUP", 1).await;
    let published = || async {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .expect("count");
        unpublished == 0
    };
    wait_until(
        "the relay published the order",
        Duration::from_secs(15),
        published,
    )
    .await;
    app.start_workers(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stuck_after = Duration::from_secs(1);
    let round = worker::watchdog::round(&pool, stuck_after, Duration::from_secs(86_400))
        .await
        .expect("watchdog round")
        .expect("elected");
    assert_eq!(round.requeued_orders, 1, "the command that went nowhere");
    app.wait_for_status(&alice.token, &id, "confirmed").await;
}

/// A customer's list total, optionally for one status, as the api reports it.
async fn listed_total(app: &TestApp, token: &str, status: Option<&str>) -> i64 {
    let path = match status {
        Some(status) => format!("/api/orders/my?status={status}"),
        None => "/api/orders/my".to_owned(),
    };
    let page: Value = app.get(&path, token).await.json().await.expect("json");
    page["total"].as_i64().expect("total")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn list_totals_stay_exact_while_orders_move_between_statuses(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let bob = app.user(Role::Customer, "bob").await;
    app.product(&vendor, "LAMP", "40.00", 2).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.order_id(&alice, "LAMP", 1).await);
    }
    // No worker yet: all three are pending, counted from the orders themselves.
    assert_eq!(listed_total(&app, &alice.token, None).await, 3);
    assert_eq!(listed_total(&app, &alice.token, Some("pending")).await, 3);
    assert_eq!(listed_total(&app, &alice.token, Some("confirmed")).await, 0);

    app.start_workers(1);
    // Two get the stock and one is cancelled; which one depends on how the worker's
    // concurrent batches meet the product lock.
    wait_until("all three are decided", Duration::from_secs(20), || async {
        listed_total(&app, &alice.token, Some("pending")).await == 0
    })
    .await;
    let confirmed: String = sqlx::query_scalar(
        "SELECT id::text FROM orders WHERE status = 'confirmed' ORDER BY id LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("a confirmed order");
    assert!(ids.contains(&confirmed));
    app.move_order(&vendor, &confirmed, json!({ "status": "processing" }))
        .await;

    let expected = [
        (None, 3),
        (Some("pending"), 0),
        (Some("confirmed"), 1),
        (Some("processing"), 1),
        (Some("cancelled"), 1),
        (Some("shipped"), 0),
    ];
    for (status, total) in expected {
        assert_eq!(
            listed_total(&app, &alice.token, status).await,
            total,
            "alice's total for {status:?}"
        );
        assert_eq!(
            listed_total(&app, &bob.token, status).await,
            0,
            "bob's total for {status:?}"
        );
    }
    // Past the last page the total is read on its own, and is the same.
    let past: Value = app
        .get("/api/orders/my?page=5&status=confirmed", &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(past["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(past["total"], 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn with_a_dead_node_in_amqp_url_every_connection_reaches_a_live_one(pool: PgPool) {
    let live = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let dead = "amqp://guest:guest@127.0.0.1:1/%2f";
    let cluster = format!("{dead},{dead},{dead},{live}");
    let settings = crate::helpers::test_settings(&[("AMQP_URL", cluster.as_str())]);
    // Whatever order the nodes are tried in, the live one is reached.
    for _ in 0..10 {
        let connection = common::broker::connect(&settings.broker, "test")
            .await
            .expect("a live node is reached");
        connection.close(200, "done".into()).await.expect("close");
    }
    let app = TestApp::start(pool, settings, true).await;
    app.start_workers(2);
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "LAMP", "40.00", 5).await;
    let order = app.order_id(&alice, "LAMP", 1).await;
    app.wait_for_status(&alice.token, &order, "confirmed").await;
}
