//! Fault injection: killed workers, broker and database outages, duplicate and poison
//! messages, outbound email and webhooks interrupted. These tests stop shared services, so `scripts/test.sh` runs them on their own,
//! one at a time, after the rest of the suite. Every loop is bounded; all traffic is loopback.

mod cluster;
mod outbound;
mod payments;
pub(crate) mod services;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{domain::Role, events::Envelope};
use futures_util::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestUser, assert_problem, order_body, wait_until};
use services::{BrokerOutage, DatabaseOutage, WorkerLog, WorkerProcess, worker_log};

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("query")
}

async fn wait_until_none_pending(pool: &PgPool, limit: Duration) {
    wait_until("no order is pending", limit, || async {
        scalar(pool, "SELECT count(*) FROM orders WHERE status = 'pending'").await == 0
    })
    .await;
}

async fn wait_until_published(pool: &PgPool) {
    wait_until(
        "the relay published everything",
        Duration::from_secs(10),
        || async {
            scalar(
                pool,
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0
        },
    )
    .await;
}

/// Orders whose confirmation was recorded other than exactly once.
async fn orders_not_confirmed_exactly_once(pool: &PgPool) -> i64 {
    scalar(
        pool,
        "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM order_events e
             WHERE e.order_id = o.id AND e.kind = 'status_changed' AND e.to_status = 'confirmed') <> 1",
    )
    .await
}

/// Asserts `orders` orders confirmed, each exactly once, a notification each, and `BULK`
/// (stocked with `stock`) reserved for exactly them.
async fn assert_confirmed_exactly_once(app: &TestApp, pool: &PgPool, orders: usize, stock: i32) {
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM orders WHERE status = 'confirmed'"
        )
        .await,
        orders as i64
    );
    assert_eq!(orders_not_confirmed_exactly_once(pool).await, 0);
    assert_eq!(
        scalar(pool, "SELECT count(*) FROM notifications").await,
        orders as i64
    );
    assert_eq!(
        app.stock_of("BULK").await,
        (stock - orders as i32, orders as i32)
    );
}

/// Sends an order's processing, shipped and delivered back to back, as its vendor.
async fn deliver(app: &TestApp, vendor: &TestUser, id: &str) {
    let path = format!("/api/orders/{id}/status");
    for body in [
        json!({ "status": "processing" }),
        json!({ "status": "shipped", "tracking_number": "T-1" }),
        json!({ "status": "delivered" }),
    ] {
        assert_eq!(
            app.patch(&path, &vendor.token, body).await.status(),
            StatusCode::ACCEPTED
        );
    }
}

async fn wait_until_delivered(pool: &PgPool, limit: Duration) {
    wait_until("every order is delivered", limit, || async {
        scalar(
            pool,
            "SELECT count(*) FROM orders WHERE status <> 'delivered'",
        )
        .await
            == 0
    })
    .await;
}

/// Asserts no change was rejected and every order went confirmed → processing → shipped →
/// delivered, each step once.
async fn assert_every_timeline_in_order(pool: &PgPool) {
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM order_events WHERE kind = 'rejected'"
        )
        .await,
        0
    );
    let out_of_order = scalar(
        pool,
        "SELECT count(*) FROM (
             SELECT order_id, array_agg(to_status::text ORDER BY created_at, id) AS path
             FROM order_events WHERE kind = 'status_changed' GROUP BY order_id
         ) t WHERE path <> ARRAY['confirmed', 'processing', 'shipped', 'delivered']",
    )
    .await;
    assert_eq!(out_of_order, 0, "every timeline is complete and in order");
}

async fn place_orders(
    app: &TestApp,
    customer: &TestUser,
    count: usize,
    concurrency: usize,
) -> Vec<String> {
    stream::iter(0..count)
        .map(|_| async {
            let response = app
                .post(
                    "/api/orders",
                    Some(&customer.token),
                    order_body(&[("BULK", 1)]),
                )
                .await;
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Kills one of `workers` with SIGKILL every half second, in turn, starting a new one in its
/// place, until `done` is set and at least 5 were killed (for at most 120 s); the kills.
async fn keep_killing(
    app: &TestApp,
    pool: &PgPool,
    log: &Path,
    workers: &mut [Option<WorkerProcess>],
    done: &AtomicBool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    while (kills < 5 || !done.load(Ordering::SeqCst)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let victim = kills % workers.len();
        if let Some(worker) = workers[victim].take() {
            worker.kill_hard().await;
        }
        workers[victim] = Some(WorkerProcess::start(app, pool, log));
        kills += 1;
    }
    kills
}

async fn shop(app: &TestApp, stock: i32) -> TestUser {
    let vendor = app.user(Role::Vendor, "vendor").await;
    app.product(&vendor, "BULK", "1.00", stock).await;
    app.user(Role::Customer, "alice").await
}

/// Scenario 1: 1,000 orders through 3 worker processes, one killed with SIGKILL every
/// half second (at least 5 times); then one stopped with SIGTERM.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn killing_workers_mid_flight_loses_no_order_and_confirms_none_twice(pool: PgPool) {
    const ORDERS: usize = 1000;
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 5000).await;
    let log = worker_log(&app);
    let mut workers: Vec<Option<WorkerProcess>> = (0..3)
        .map(|_| Some(WorkerProcess::start(&app, &pool, &log)))
        .collect();
    let placing_done = AtomicBool::new(false);
    let started = Instant::now();

    let placing = async {
        let ids = place_orders(&app, &alice, ORDERS, 16).await;
        placing_done.store(true, Ordering::SeqCst);
        ids
    };
    let killing = keep_killing(&app, &pool, &log, &mut workers, &placing_done);
    let (ids, kills) = tokio::join!(placing, killing);
    assert_eq!(ids.len(), ORDERS);
    assert!(kills >= 5);

    wait_until_none_pending(&pool, Duration::from_secs(120)).await;
    let drained = started.elapsed();
    assert_confirmed_exactly_once(&app, &pool, ORDERS, 5000).await;

    // A graceful stop: the worker drains and exits cleanly.
    let worker = workers[0].take().expect("worker");
    let status = worker.terminate().await;
    assert!(status.success(), "worker exited with {status}");
    let seen = WorkerLog::read(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "fault 1: {ORDERS} orders, {kills} SIGKILLs, {} redeliveries seen, {} duplicates dropped; \
         all confirmed exactly once in {drained:?}",
        seen.redelivered, seen.duplicates
    );
}

/// Scenario 2: RabbitMQ stopped for 10 s while orders keep coming.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn orders_are_accepted_while_rabbitmq_is_down_and_confirmed_after(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 2).await;
    let alice = shop(&app, 1000).await;
    place_orders(&app, &alice, 5, 5).await;
    wait_until_none_pending(&pool, Duration::from_secs(10)).await;

    let outage = BrokerOutage::begin().await;
    let began = Instant::now();
    let mut during = 0;
    while began.elapsed() < Duration::from_secs(10) {
        let response = app
            .post(
                "/api/orders",
                Some(&alice.token),
                order_body(&[("BULK", 1)]),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "orders are accepted during the outage"
        );
        during += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), StatusCode::OK, "the api stays in rotation");
    let readiness: Value = ready.json().await.expect("json");
    assert_eq!(readiness["status"], "degraded");
    assert_eq!(readiness["broker"], "down");
    outage.end().await;

    let restarted = Instant::now();
    wait_until_none_pending(&pool, Duration::from_secs(30)).await;
    let recovery = restarted.elapsed();
    assert_eq!(orders_not_confirmed_exactly_once(&pool).await, 0);
    eprintln!(
        "fault 2: {during} orders accepted during a 10 s outage; all confirmed {recovery:?} after restart"
    );
}

/// Scenario 3: processing → shipped → delivered sent back to back for 200 orders, 3 workers.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn back_to_back_changes_for_200_orders_apply_in_order(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 3).await;
    let vendor = app.user(Role::Vendor, "boss").await;
    let alice = shop(&app, 1000).await;
    let ids = place_orders(&app, &alice, 200, 16).await;
    wait_until_none_pending(&pool, Duration::from_secs(30)).await;
    let started = Instant::now();
    stream::iter(&ids)
        .for_each_concurrent(16, |id| {
            let (app, vendor) = (&app, &vendor);
            async move { deliver(app, vendor, id).await }
        })
        .await;
    wait_until_delivered(&pool, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    assert_every_timeline_in_order(&pool).await;
    eprintln!("fault 3: 600 back-to-back changes for 200 orders applied in order in {elapsed:?}");
}

/// Scenario 3b: 300 orders of 3 units each shipped in two parcels (1 unit, then 2) while
/// worker processes are killed with SIGKILL every half second: every unit ships exactly
/// once, every parcel exists once, stock is exact.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn parcels_shipped_while_workers_are_killed_ship_every_unit_exactly_once(pool: PgPool) {
    const ORDERS: usize = 300;
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let vendor = app.user(Role::Vendor, "boss").await;
    let alice = shop(&app, 1000).await;
    let log = worker_log(&app);
    let mut workers: Vec<Option<WorkerProcess>> = (0..2)
        .map(|_| Some(WorkerProcess::start(&app, &pool, &log)))
        .collect();
    let orders: Vec<(String, String)> = stream::iter(0..ORDERS)
        .map(|_| async {
            let body = order_body(&[("BULK", 3)]);
            let response = app.post("/api/orders", Some(&alice.token), body).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            let order: Value = response.json().await.expect("json");
            let id = order["id"].as_str().expect("id").to_owned();
            (
                id,
                order["items"][0]["id"].as_str().expect("item").to_owned(),
            )
        })
        .buffer_unordered(16)
        .collect()
        .await;
    wait_until_none_pending(&pool, Duration::from_secs(60)).await;

    let shipping_done = AtomicBool::new(false);
    let started = Instant::now();
    let shipping = async {
        stream::iter(&orders)
            .for_each_concurrent(16, |(id, item)| {
                let (app, vendor) = (&app, &vendor);
                async move {
                    let status = format!("/api/orders/{id}/status");
                    let response = app
                        .patch(&status, &vendor.token, json!({ "status": "processing" }))
                        .await;
                    assert_eq!(response.status(), StatusCode::ACCEPTED);
                    let parcels = format!("/api/orders/{id}/fulfillments");
                    for (quantity, tracking) in [(1, "P-1"), (2, "P-2")] {
                        let body = json!({
                            "lines": [{ "item_id": item, "quantity": quantity }],
                            "tracking_number": tracking,
                        });
                        let response = app.post(&parcels, Some(&vendor.token), body).await;
                        assert_eq!(response.status(), StatusCode::ACCEPTED);
                    }
                }
            })
            .await;
        shipping_done.store(true, Ordering::SeqCst);
    };
    let killing = keep_killing(&app, &pool, &log, &mut workers, &shipping_done);
    let ((), kills) = tokio::join!(shipping, killing);
    wait_until("every order shipped", Duration::from_secs(120), || async {
        scalar(
            &pool,
            "SELECT count(*) FROM orders WHERE status <> 'shipped'",
        )
        .await
            == 0
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM order_events WHERE kind = 'rejected'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM fulfillments").await,
        2 * ORDERS as i64
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM order_items WHERE quantity_shipped <> 3 OR quantity_claimed <> 3"
        )
        .await,
        0,
        "every unit shipped once"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM (SELECT i.id FROM order_items i JOIN fulfillment_lines l
                 ON l.order_item_id = i.id GROUP BY i.id HAVING sum(l.quantity) <> 3) wrong"
        )
        .await,
        0,
        "the parcels of each line add up to it"
    );
    let paths = scalar(
        &pool,
        "SELECT count(*) FROM (
             SELECT order_id, array_agg(to_status::text ORDER BY created_at, id) AS path
             FROM order_events WHERE kind = 'status_changed' GROUP BY order_id
         ) t WHERE path <> ARRAY['confirmed', 'processing', 'partially_shipped', 'shipped']",
    )
    .await;
    assert_eq!(
        paths, 0,
        "every order went through partially_shipped once, in order"
    );
    assert_eq!(app.stock_of("BULK").await, (1000 - 3 * ORDERS as i32, 0));
    let seen = WorkerLog::read(&log);
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "fault 3b: {ORDERS} orders in 2 parcels each, {} SIGKILLs, {} redeliveries seen, {} \
         duplicates dropped; every unit shipped once in {elapsed:?}",
        kills, seen.redelivered, seen.duplicates
    );
}

/// Publishes, as message `ghost-1`, an `order.created` for an order that does not exist.
async fn publish_ghost(app: &TestApp) {
    let ghost = Envelope::new(
        common::events::EventType::OrderCreated,
        uuid::Uuid::now_v7(),
        1,
        common::events::Actor::system(),
        "test",
        json!({}),
    );
    let body = serde_json::to_string(&ghost).expect("json");
    app.publish_raw("order.created", "ghost-1", body.as_bytes())
        .await;
}

/// Scenario 4: the same message delivered three times has one effect.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_message_delivered_three_times_has_one_effect(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 10).await;
    let id = app.order_id(&alice, "BULK", 3).await;
    wait_until_published(&pool).await;
    let payload: Value = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("payload");
    let envelope: Envelope = serde_json::from_value(payload.clone()).expect("envelope");
    for _ in 0..2 {
        app.publish_raw(
            "order.created",
            &envelope.event_id.to_string(),
            payload.to_string().as_bytes(),
        )
        .await;
    }
    app.start_workers(2);
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    wait_until("the queue is drained", Duration::from_secs(10), || async {
        stats(&app).await["work_queue_messages"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(orders_not_confirmed_exactly_once(&pool).await, 0);
    assert_eq!(app.stock_of("BULK").await, (7, 3));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM notifications").await, 1);
}

/// A counter or sum of this process's metrics (0 when never recorded).
fn metric_value(name: &str) -> f64 {
    common::metrics::handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn stats(app: &TestApp) -> Value {
    serde_json::to_value(
        worker::ops::stats(&app.pool, &app.settings())
            .await
            .expect("stats"),
    )
    .expect("json")
}

/// Scenario 5: a poison message goes to the dead-letter queue with its reason, other orders
/// flow; the operator commands list and re-drive it.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_poison_message_is_dead_lettered_with_its_reason(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 1).await;
    let alice = shop(&app, 10).await;
    app.publish_raw("order.created", "poison-1", b"{ not json")
        .await;
    publish_ghost(&app).await;
    let id = app.order_id(&alice, "BULK", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;

    let settings = app.settings();
    wait_until(
        "both poison messages are dead-lettered",
        Duration::from_secs(10),
        || async { stats(&app).await["dead_letters"] == 2 },
    )
    .await;
    let letters = common::dead_letters::list(&settings, 10)
        .await
        .expect("list");
    let reasons: Vec<String> = letters
        .iter()
        .map(|l| l.error.clone().unwrap_or_default())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("malformed message")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not exist")),
        "{reasons:?}"
    );
    assert_eq!(
        stats(&app).await["dead_letters"],
        2,
        "listing leaves them in place"
    );

    // Re-driven, they fail again and return with the same reasons: nothing is lost either way.
    let redriven = common::dead_letters::redrive(
        &settings,
        common::dead_letters::Selection::MessageIds(vec!["ghost-1".into()]),
    )
    .await
    .expect("redrive");
    assert_eq!(redriven, 1);
    wait_until(
        "the re-driven message is dead-lettered again",
        Duration::from_secs(10),
        || async {
            let letters = common::dead_letters::list(&settings, 10)
                .await
                .expect("list");
            letters.len() == 2
                && letters
                    .iter()
                    .any(|l| l.message_id.as_deref() == Some("ghost-1"))
        },
    )
    .await;
}

/// Scenario 5b: a batch of queued commands with a command for an order that does not exist
/// in its midst: the batch's transaction fails, its commands are applied one by one, and
/// only the bad one is dead-lettered.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_bad_command_in_a_batch_fails_only_itself(pool: PgPool) {
    const ORDERS: usize = 20;
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 100).await;
    place_orders(&app, &alice, ORDERS / 2, 4).await;
    publish_ghost(&app).await;
    place_orders(&app, &alice, ORDERS / 2, 4).await;
    wait_until_published(&pool).await;

    app.start_workers(1);
    wait_until_none_pending(&pool, Duration::from_secs(20)).await;
    wait_until(
        "the ghost is dead-lettered",
        Duration::from_secs(10),
        || async { stats(&app).await["dead_letters"] == 1 },
    )
    .await;
    assert_eq!(orders_not_confirmed_exactly_once(&pool).await, 0);
    assert_eq!(
        app.stock_of("BULK").await,
        (100 - ORDERS as i32, ORDERS as i32)
    );
    assert!(
        metric_value("orderflow_worker_batch_size_sum")
            > metric_value("orderflow_worker_batch_size_count"),
        "queued commands were taken in batches"
    );
    assert!(
        metric_value("orderflow_worker_batch_fallbacks_total") >= 1.0,
        "the batch holding the ghost was applied again one by one"
    );
}

/// PostgreSQL stopped: the api answers 503 problem+json quickly, readiness names the
/// database, a worker holding a command retries it, and everything recovers by itself.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_database_outage_answers_503_quickly_and_recovers(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 10).await;
    // An order whose command is on the queue, with no worker yet to apply it.
    let waiting = app.order_id(&alice, "BULK", 1).await;
    wait_until_published(&pool).await;

    let outage = DatabaseOutage::begin().await;
    app.start_workers(1);
    let asked = Instant::now();
    let response = app
        .post(
            "/api/orders",
            Some(&alice.token),
            order_body(&[("BULK", 1)]),
        )
        .await;
    let answered_in = asked.elapsed();
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(answered_in < Duration::from_secs(5), "took {answered_in:?}");
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("sent");
    let problem = assert_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("PostgreSQL")
    );
    outage.end().await;

    let recovered = Instant::now();
    app.wait_for_status(&alice.token, &waiting, "confirmed")
        .await;
    let confirmed_after = recovered.elapsed();
    wait_until(
        "orders are accepted again",
        Duration::from_secs(20),
        || async {
            app.post(
                "/api/orders",
                Some(&alice.token),
                order_body(&[("BULK", 1)]),
            )
            .await
            .status()
                == StatusCode::CREATED
        },
    )
    .await;
    assert_eq!(
        stats(&app).await["dead_letters"],
        0,
        "the worker retried instead of giving up"
    );
    eprintln!(
        "database outage: 503 in {answered_in:?}; the held command applied {confirmed_after:?} after restart; accepting orders {:?} after restart",
        recovered.elapsed()
    );
}
