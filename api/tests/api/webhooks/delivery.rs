//! What a receiver gets: signed events of the types it chose, retried until they arrive,
//! under both secrets during a rotation, never through a redirect.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Receiver, shop, verifies};
use crate::{helpers::wait_until, mail::free_port};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_failing_twice_then_succeeding_sees_three_signed_attempts_logged_once_each(
    pool: PgPool,
) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[500, 503]).await;
    let (endpoint, secret) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;

    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let delivery = &log["items"][0];
    assert_eq!(delivery["order_id"], order.as_str());
    assert_eq!(delivery["event_type"], "order.created");
    assert_eq!(delivery["attempts"], 3);
    let statuses: Vec<&Value> = delivery["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["response_status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(
        delivery["attempt_log"][2]["response_excerpt"],
        "receiver says hi"
    );
    let failed = shop.deliveries(&endpoint, "?status=failed").await;
    assert_eq!(failed["total"], 0);

    let received = receiver.received();
    assert_eq!(received.len(), 3, "three attempts, then silence");
    for attempt in &received {
        assert_eq!(
            attempt.header("webhook-id"),
            delivery["event_id"].as_str().expect("id")
        );
        assert_eq!(attempt.header("content-type"), "application/json");
        assert!(verifies(&secret, attempt), "the signature verifies");
        assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", attempt));
        let body = attempt.json();
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["order_id"], order.as_str());
        assert_eq!(body["seq"], 1);
    }
    let endpoint_state = shop.endpoint_state(&endpoint).await;
    assert_eq!(
        endpoint_state["failing_since"],
        Value::Null,
        "a success ends the run"
    );
    assert!(
        endpoint_state.get("secret").is_none(),
        "the secret is shown once"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_endpoint_gets_the_types_it_chose_and_a_cancellation_as_order_cancelled(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let changes = Receiver::start(&[]).await;
    let cancellations = Receiver::start(&[]).await;
    let (changes_id, _) = shop.endpoint(&changes.url, &["order.status_changed"]).await;
    let (cancellations_id, _) = shop
        .endpoint(&cancellations.url, &["order.cancelled"])
        .await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.app
        .wait_for_status(&shop.alice.token, &order, "confirmed")
        .await;
    let response = shop
        .app
        .delete(&format!("/api/orders/{order}"), &shop.alice.token)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    shop.app
        .wait_for_status(&shop.alice.token, &order, "cancelled")
        .await;

    shop.wait_for_deliveries(&changes_id, "succeeded", 1).await;
    shop.wait_for_deliveries(&cancellations_id, "succeeded", 1)
        .await;
    let change = &changes.received()[0].json();
    assert_eq!(change["type"], "order.status_changed");
    assert_eq!(change["payload"]["to"], "confirmed");
    let cancellation = &cancellations.received()[0].json();
    assert_eq!(cancellation["type"], "order.cancelled");
    assert_eq!(cancellation["payload"]["from"], "confirmed");
    assert_eq!(changes.received().len(), 1);
    assert_eq!(cancellations.received().len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_receiver_down_for_a_while_gets_every_event_once_it_returns(pool: PgPool) {
    let shop = shop(
        &pool,
        &[(
            "WEBHOOK_RETRY_SCHEDULE",
            "200ms,400ms,800ms,1600ms,3200ms,6400ms",
        )],
    )
    .await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (endpoint, secret) = shop.endpoint(&url, &[]).await;
    let order = shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.app
        .wait_for_status(&shop.alice.token, &order, "confirmed")
        .await;
    for status in ["processing", "shipped", "delivered"] {
        let mut change = json!({ "status": status });
        if status == "shipped" {
            change["tracking_number"] = json!("TRK-1");
        }
        shop.app.move_order(&shop.vendor, &order, change).await;
    }
    wait_until(
        "every event failed at least once",
        Duration::from_secs(10),
        || async {
            let log = shop.deliveries(&endpoint, "?status=pending").await;
            log["total"] == 7
                && log["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .all(|d| d["attempts"].as_i64() >= Some(1))
        },
    )
    .await;
    let log = shop.deliveries(&endpoint, "?status=pending").await;
    let refused = &log["items"][0]["attempt_log"][0];
    assert_eq!(refused["response_status"], Value::Null);
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("could not connect"),
        "{refused}"
    );

    let receiver = Receiver::start_on(port, &[]).await;
    shop.wait_for_deliveries(&endpoint, "succeeded", 7).await;
    let received = receiver.received();
    let mut types: Vec<(i64, String)> = received
        .iter()
        .map(|r| {
            assert!(verifies(&secret, r));
            let body = r.json();
            (
                body["seq"].as_i64().expect("seq"),
                body["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    types.sort();
    let expected: Vec<(i64, String)> = [
        (1, "order.created"),
        (1, "order.status_changed"),
        (2, "order.status_changed"),
        (3, "order.fulfillment_created"),
        (3, "order.status_changed"),
        (4, "order.fulfillment_delivered"),
        (4, "order.status_changed"),
    ]
    .iter()
    .map(|(seq, kind)| (*seq, (*kind).to_owned()))
    .collect();
    assert_eq!(types, expected, "every event, once each");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn after_a_rotation_deliveries_verify_with_the_new_secret_and_the_old(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[]).await;
    let (endpoint, old) = shop.endpoint(&receiver.url, &["order.created"]).await;
    let response = shop
        .app
        .post(
            &format!("/api/webhooks/{endpoint}/rotate-secret"),
            Some(&shop.admin.token),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated: Value = response.json().await.expect("rotated");
    let new = rotated["secret"].as_str().expect("secret");
    assert_ne!(new, old);
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let received = &receiver.received()[0];
    assert_eq!(received.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(new, received), "the new secret verifies");
    assert!(
        verifies(&old, received),
        "the old one too, during the overlap"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn redirects_are_not_followed(pool: PgPool) {
    let shop = shop(&pool, &[]).await;
    let elsewhere = Receiver::start(&[]).await;
    let receiver = Receiver::start(&[307, 308]).await;
    receiver.redirect_to(&elsewhere.url);
    let (endpoint, _) = shop.endpoint(&receiver.url, &["order.created"]).await;
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    let log = shop.wait_for_deliveries(&endpoint, "succeeded", 1).await;
    let statuses: Vec<&Value> = log["items"][0]["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| &attempt["response_status"])
        .collect();
    assert_eq!(statuses, [&json!(307), &json!(308), &json!(200)]);
    assert!(
        elsewhere.received().is_empty(),
        "the redirect's target was never called"
    );
}
