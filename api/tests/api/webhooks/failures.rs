//! Receivers that fail: 410 Gone, failing for too long, hanging, or down while others
//! are up — and what admins do about it (enable, re-send).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Receiver, shop};
use crate::helpers::{assert_problem, wait_until};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn gone_disables_the_endpoint_and_tells_the_admins(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[410]).await;
    // One type, so the first order makes one delivery (no second one racing the 410).
    let (endpoint, _) = shop.endpoint(&receiver.url, &["order.created"]).await;
    shop.app.order_id(&shop.alice, "LAMP", 1).await;

    wait_until(
        "the endpoint is disabled",
        Duration::from_secs(20),
        || async { shop.endpoint_state(&endpoint).await["enabled"] == false },
    )
    .await;
    let state = shop.endpoint_state(&endpoint).await;
    assert_eq!(state["disabled_reason"], "the endpoint answered 410 Gone");
    let failed = shop.deliveries(&endpoint, "?status=failed").await;
    assert_eq!(failed["items"][0]["attempts"], 1, "410 is not retried");
    let stats = worker::ops::stats(&pool, &shop.app.settings())
        .await
        .expect("stats");
    assert_eq!(
        (
            stats.webhook_endpoints_disabled,
            stats.webhook_deliveries_failed
        ),
        (1, 1),
        "operators see it in `worker stats`"
    );
    assert_eq!(
        shop.admins_latest_notification().await,
        "webhook_endpoint_disabled"
    );

    // Events after that are not delivered; re-sending waits until an admin enables it.
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1);
    let resend = format!("/api/webhooks/{endpoint}/deliveries/resend-failed");
    let since = json!({ "since": "2020-01-01T00:00:00Z" });
    let response = shop.app.post(&resend, Some(&shop.admin.token), since).await;
    assert_problem(response, StatusCode::CONFLICT).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_endpoint_failing_too_long_is_disabled_then_failed_deliveries_are_resent(pool: PgPool) {
    let shop = shop(
        &pool,
        &[
            ("WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
            ("WEBHOOK_DISABLE_AFTER", "2s"),
        ],
    )
    .await;
    let receiver = Receiver::start(&[500; 100]).await;
    let (endpoint, _) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let first = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.wait_for_deliveries(&endpoint, "failed", 1).await;
    assert!(shop.endpoint_state(&endpoint).await["failing_since"].is_string());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    wait_until(
        "the endpoint is disabled",
        Duration::from_secs(20),
        || async { shop.endpoint_state(&endpoint).await["enabled"] == false },
    )
    .await;
    let state = shop.endpoint_state(&endpoint).await;
    assert_eq!(
        state["disabled_reason"],
        "no delivery succeeded for 2 seconds"
    );
    assert_eq!(
        shop.admins_latest_notification().await,
        "webhook_endpoint_disabled"
    );

    // The receiver is mended; the admin enables the endpoint and re-sends what failed.
    receiver.answer_from_now_on(&[]);
    let response = shop
        .app
        .put(
            &format!("/api/webhooks/{endpoint}"),
            &shop.admin.token,
            json!({ "enabled": true }),
        )
        .await;
    let enabled: Value = response.json().await.expect("endpoint");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["failing_since"], Value::Null);
    wait_until(
        "the second is failed or sent",
        Duration::from_secs(20),
        || async { shop.deliveries(&endpoint, "?status=pending").await["total"] == 0 },
    )
    .await;
    let resend = format!("/api/webhooks/{endpoint}/deliveries/resend-failed");
    let response = shop
        .app
        .post(
            &resend,
            Some(&shop.admin.token),
            json!({ "since": "2020-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let resent: Value = response.json().await.expect("resent");
    assert!(resent["resent"].as_i64() >= Some(1));
    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 2).await;
    let orders: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["order_id"].as_str().expect("id"))
        .collect();
    assert!(orders.contains(&first.as_str()) && orders.contains(&second.as_str()));

    // Re-sending one delivery sends it again under the same webhook-id.
    let event_id = log["items"][0]["event_id"].as_str().expect("event id");
    let before = receiver.received().len();
    let response = shop
        .app
        .post(
            &format!("/api/webhooks/{endpoint}/deliveries/{event_id}/resend"),
            Some(&shop.admin.token),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until("the re-send arrives", Duration::from_secs(20), || async {
        receiver.received().len() > before
    })
    .await;
    assert_eq!(receiver.received()[before].header("webhook-id"), event_id);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_that_hangs_is_timed_out_and_delays_no_order(pool: PgPool) {
    let shop = shop(&pool, &[("WEBHOOK_TIMEOUT", "500ms")]).await;
    let receiver = Receiver::start(&[]).await;
    receiver.take_time(Duration::from_secs(30));
    let (endpoint, _) = shop.endpoint(&receiver.url, &[]).await;
    let started = tokio::time::Instant::now();
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(shop.app.order_id(&shop.alice, "LAMP", 1).await);
    }
    for order in &orders {
        shop.app
            .wait_for_status(&shop.alice.token, order, "confirmed")
            .await;
    }
    let confirming = started.elapsed();
    wait_until("attempts time out", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_attempts WHERE error LIKE 'timed out%'",
        )
        .fetch_one(&pool)
        .await
        .expect("attempts")
            >= 10
    })
    .await;
    // 10 orders created and 10 confirmed, none delivered (retrying, or failed by now).
    wait_until(
        "20 deliveries are recorded",
        Duration::from_secs(20),
        || async { shop.deliveries(&endpoint, "").await["total"] == 20 },
    )
    .await;
    let succeeded = shop.deliveries(&endpoint, "?status=succeeded").await;
    assert_eq!(succeeded["total"], 0);
    let log = shop.deliveries(&endpoint, "?size=100").await;
    let attempt = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .find_map(|delivery| delivery["attempt_log"].get(0))
        .expect("an attempt");
    assert_eq!(attempt["response_status"], Value::Null);
    assert!(
        attempt["latency_ms"].as_i64().expect("latency") < 5_000,
        "{attempt}"
    );
    assert!(
        confirming < Duration::from_secs(10),
        "orders waited on the receiver: {confirming:?}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_failing_endpoint_gets_a_quarter_of_the_attempts_while_others_flow(pool: PgPool) {
    let shop = shop(
        &pool,
        &[
            ("WEBHOOK_TIMEOUT", "1s"),
            ("WEBHOOK_CONCURRENCY", "8"),
            (
                "WEBHOOK_RETRY_SCHEDULE",
                "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms",
            ),
        ],
    )
    .await;
    let down = Receiver::start(&[]).await;
    down.take_time(Duration::from_secs(30));
    let healthy = Receiver::start(&[]).await;
    let (down_id, _) = shop.endpoint(&down.url, &[]).await;
    let (healthy_id, _) = shop.endpoint(&healthy.url, &["order.created"]).await;
    for _ in 0..12 {
        shop.app.order_id(&shop.alice, "LAMP", 1).await;
    }
    wait_until(
        "the endpoint that is down is failing",
        Duration::from_secs(10),
        || async { shop.endpoint_state(&down_id).await["failing_since"].is_string() },
    )
    .await;
    // The first attempts, made before it was known to fail, time out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    down.reset_most_in_flight();
    let before = down.received().len();
    shop.wait_for_deliveries(&healthy_id, "succeeded", 12).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        down.received().len() > before,
        "the failing endpoint is still tried"
    );
    assert!(
        down.most_in_flight() <= 2,
        "a quarter of 8 slots at most, saw {}",
        down.most_in_flight()
    );
}
