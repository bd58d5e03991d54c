//! Scenario: the worker capturing shipped orders' payments is killed with SIGKILL as the
//! captures go out to Stripe (localstripe). Each order is captured exactly once: in the
//! ledger, and at Stripe.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use super::{
    scalar,
    services::{WorkerProcess, worker_log},
};
use crate::{
    helpers::{TestApp, test_settings, wait_until},
    stripe::{GOOD_CARD, Localstripe, WEBHOOK_SECRET, authorised_event, awaiting_payment, deliver},
};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_worker_killed_around_captures_captures_each_order_exactly_once(pool: PgPool) {
    const ORDERS: usize = 8;
    let stripe = Localstripe::start().await;
    let settings = stripe.settings("30m");
    let app = TestApp::start(pool.clone(), test_settings(&settings), true).await;
    let log = worker_log(&app);
    // A short call timeout keeps the lease of a call the killed worker held short.
    let mut env = settings.to_vec();
    env.push(("STRIPE_TIMEOUT", "1s"));
    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG-1", "10.00", 100).await;
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let order = app.order_id(&alice, "MUG-1", 1).await;
        let read = awaiting_payment(&app, &alice, &order).await;
        let secret = read["payment"]["client_secret"].as_str().expect("secret");
        let intent_id = secret.split("_secret_").next().expect("id").to_owned();
        let (status, _) = stripe.pay(secret, GOOD_CARD).await;
        assert!(status.is_success(), "{status}");
        let intent = stripe
            .get(&format!("/v1/payment_intents/{intent_id}"))
            .await;
        let event = authorised_event(&format!("evt_authorised_{i}"), &intent);
        assert_eq!(
            deliver(&app, &event, WEBHOOK_SECRET).await.status(),
            StatusCode::OK
        );
        orders.push((order, intent_id));
    }
    for (order, _) in &orders {
        app.wait_for_status(&alice.token, order, "confirmed").await;
        app.move_order(&vendor, order, json!({ "status": "processing" }))
            .await;
    }
    for (order, _) in &orders {
        let path = format!("/api/orders/{order}/status");
        let shipped = json!({ "status": "shipped", "tracking_number": "TRACK-1" });
        let response = app.patch(&path, &vendor.token, shipped).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    wait_until(
        "a capture is under way",
        Duration::from_secs(30),
        || async {
            scalar(
                &pool,
                "SELECT count(*) FROM payment_calls WHERE kind = 'capture' AND attempts > 0",
            )
            .await
                > 0
        },
    )
    .await;
    worker.kill_hard().await;
    let in_flight = scalar(
        &pool,
        "SELECT count(*) FROM payment_calls WHERE kind = 'capture' AND done_at IS NULL",
    )
    .await;

    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    wait_until("every order is paid", Duration::from_secs(60), || async {
        scalar(
            &pool,
            "SELECT count(*) FROM orders WHERE payment_status = 'paid'",
        )
        .await
            == ORDERS as i64
    })
    .await;
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM payment_transactions WHERE kind = 'capture'"
        )
        .await,
        ORDERS as i64,
        "one capture in the ledger per order"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM orders WHERE amount_captured_minor <> 1000"
        )
        .await,
        0
    );
    for (_, intent_id) in &orders {
        let intent = stripe
            .get(&format!("/v1/payment_intents/{intent_id}"))
            .await;
        assert_eq!(intent["status"], "succeeded", "{intent}");
        let charge = &intent["latest_charge"];
        assert_eq!(charge["captured"], true, "{intent}");
        assert_eq!(
            charge["amount_refunded"], 0,
            "captured whole, once: {intent}"
        );
    }
    let status = worker.terminate().await;
    assert!(status.success(), "worker exited with {status}");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "fault stripe: {ORDERS} captures, worker killed with {in_flight} of them not recorded; each captured once"
    );
}
