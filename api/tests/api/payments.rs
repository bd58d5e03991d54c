//! Money on an order with the `manual` provider: staff record money received and refunds,
//! through the queue and a real worker; the ledger, the order, the timeline and webhooks
//! agree, and the database refuses money that drifts.

use std::time::Duration;

use common::{
    domain::Role,
    events::{Actor, Envelope, EventType},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, TestUser, assert_problem, wait_until},
    webhooks::{Receiver, shop},
};

async fn ask(app: &TestApp, staff: &TestUser, order: &str, what: &str, body: Value) -> Value {
    let path = format!("/api/orders/{order}/{what}");
    let response = app.post(&path, Some(&staff.token), body.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{what} {body}");
    response.json().await.expect("accepted")
}

/// The order's payment once the worker applied every command accepted for it.
async fn payment_once_applied(app: &TestApp, token: &str, order: &str) -> Value {
    wait_until(
        "the worker applied every command",
        Duration::from_secs(20),
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT applied_seq = last_seq FROM orders WHERE id = $1::uuid",
            )
            .bind(order)
            .fetch_one(&app.pool)
            .await
            .unwrap_or(false)
        },
    )
    .await;
    let path = format!("/api/orders/{order}");
    let order: Value = app.get(&path, token).await.json().await.expect("order");
    order["payment"].clone()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn money_received_in_parts_and_refunded_in_parts_keeps_order_ledger_and_webhooks_in_step(
    pool: PgPool,
) {
    let shop = shop(&pool, &[]).await;
    let receiver = Receiver::start(&[]).await;
    shop.endpoint(&receiver.url, &["order.paid", "order.refunded"])
        .await;
    let (app, vendor, admin, alice) = (&shop.app, &shop.vendor, &shop.admin, &shop.alice);
    let order = app.order_id(alice, "LAMP", 2).await; // 80.00
    app.wait_for_status(&alice.token, &order, "confirmed").await;
    let unpaid = payment_once_applied(app, &alice.token, &order).await;
    assert_eq!(unpaid["status"], "unpaid");
    assert_eq!(unpaid["amount_due"], "80.00");

    ask(
        app,
        vendor,
        &order,
        "payments",
        json!({ "amount": "30.00", "reference": "INV-1" }),
    )
    .await;
    let part = payment_once_applied(app, &alice.token, &order).await;
    assert_eq!(
        (&part["status"], &part["amount_due"]),
        (&json!("partially_paid"), &json!("50.00"))
    );
    let over = app
        .post(
            &format!("/api/orders/{order}/payments"),
            Some(&vendor.token),
            json!({ "amount": "50.01" }),
        )
        .await;
    assert_eq!(
        assert_problem(over, StatusCode::CONFLICT).await["code"],
        "payment_exceeds_outstanding"
    );
    ask(
        app,
        vendor,
        &order,
        "payments",
        json!({ "amount": 50, "note": "rest in cash" }),
    )
    .await;
    let paid = payment_once_applied(app, &alice.token, &order).await;
    assert_eq!(
        (&paid["status"], &paid["amount_captured"]),
        (&json!("paid"), &json!("80.00"))
    );

    let too_much = app
        .post(
            &format!("/api/orders/{order}/refunds"),
            Some(&admin.token),
            json!({ "amount": "80.01" }),
        )
        .await;
    let problem = assert_problem(too_much, StatusCode::CONFLICT).await;
    assert_eq!(problem["code"], "refund_exceeds_captured");

    // The same refund sent twice with one key is one refund, answered the same both times.
    let refund = json!({ "amount": "20.00", "reason": "scratched" });
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .request(
                Method::POST,
                format!("{}/api/orders/{order}/refunds", app.address),
            )
            .bearer_auth(&admin.token)
            .header("Idempotency-Key", "refund-scratch-1")
            .json(&refund)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        answers.push(response.json::<Value>().await.expect("accepted"));
    }
    assert_eq!(answers[0], answers[1]);
    let part = payment_once_applied(app, &alice.token, &order).await;
    assert_eq!(
        (&part["status"], &part["amount_refunded"]),
        (&json!("partially_refunded"), &json!("20.00"))
    );
    // Two refunds of the rest racing: exactly one is accepted.
    let rest = json!({ "amount": "60.00" });
    let path = format!("/api/orders/{order}/refunds");
    let (a, b) = tokio::join!(
        app.post(&path, Some(&admin.token), rest.clone()),
        app.post(&path, Some(&vendor.token), rest.clone())
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT]);
    let refunded = payment_once_applied(app, &alice.token, &order).await;
    assert_eq!(
        (&refunded["status"], &refunded["amount_refunded"]),
        (&json!("refunded"), &json!("80.00"))
    );
    let still_confirmed: Value = app
        .get(&format!("/api/orders/{order}"), &alice.token)
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(
        still_confirmed["status"], "confirmed",
        "only a delivered order becomes refunded"
    );

    let ledger: Value = app
        .get(&format!("/api/orders/{order}/payments"), &admin.token)
        .await
        .json()
        .await
        .expect("ledger");
    let entries: Vec<(&str, &str, &str)> = ledger["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap(),
                t["amount"].as_str().unwrap(),
                t["payment_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("receipt", "30.00", "partially_paid"),
            ("receipt", "50.00", "paid"),
            ("refund", "20.00", "partially_refunded"),
            ("refund", "60.00", "refunded"),
        ]
    );
    assert_eq!(ledger["transactions"][0]["note"], "INV-1");
    let seen: Value = app
        .get(&format!("/api/orders/{order}/payments"), &alice.token)
        .await
        .json()
        .await
        .expect("ledger");
    for transaction in seen["transactions"].as_array().expect("transactions") {
        for staff_only in ["note", "actor_id", "provider_reference"] {
            assert!(
                transaction.get(staff_only).is_none(),
                "{staff_only} shown: {transaction}"
            );
        }
    }

    wait_until("four payment webhooks", Duration::from_secs(20), || async {
        receiver.received().len() >= 4
    })
    .await;
    let mut kinds: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|r| r.json())
        .map(|body| {
            (
                body["type"].as_str().unwrap().to_owned(),
                body["payload"]["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("order.paid".into(), "30.00".into()),
            ("order.paid".into(), "50.00".into()),
            ("order.refunded".into(), "20.00".into()),
            ("order.refunded".into(), "60.00".into()),
        ]
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_cannot_move_money_and_a_cancelled_order_takes_none(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 3).await;
    let order = app.order_id(&alice, "MUG", 1).await;
    for what in ["payments", "refunds"] {
        let response = app
            .post(
                &format!("/api/orders/{order}/{what}"),
                Some(&alice.token),
                json!({ "amount": "5.00" }),
            )
            .await;
        assert_problem(response, StatusCode::FORBIDDEN).await;
    }
    let zero = app
        .post(
            &format!("/api/orders/{order}/payments"),
            Some(&vendor.token),
            json!({ "amount": "0" }),
        )
        .await;
    assert_eq!(
        assert_problem(zero, StatusCode::UNPROCESSABLE_ENTITY).await["errors"][0]["field"],
        "amount"
    );
    let cancel = app
        .delete(&format!("/api/orders/{order}"), &alice.token)
        .await;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let late = app
        .post(
            &format!("/api/orders/{order}/payments"),
            Some(&vendor.token),
            json!({ "amount": "5.00" }),
        )
        .await;
    assert_eq!(
        assert_problem(late, StatusCode::CONFLICT).await["code"],
        "order_cancelled"
    );
    let cancelled = app.wait_for_status(&alice.token, &order, "cancelled").await;
    assert_eq!(cancelled["payment"]["amount_due"], "0.00");
    let bob = app.user(Role::Customer, "bob").await;
    let response = app
        .get(&format!("/api/orders/{order}/payments"), &bob.token)
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_payment_command_delivered_three_times_is_applied_once(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 3).await;
    let order: Uuid = app.order_id(&alice, "MUG", 1).await.parse().expect("uuid");
    let mut conn = pool.acquire().await.expect("connection");
    let created = Envelope::new(
        EventType::OrderCreated,
        order,
        1,
        Actor::system(),
        "t",
        json!({}),
    );
    let staff = Actor::user(vendor.id, Role::Vendor);
    let paid = Envelope::new(
        EventType::PaymentRecorded,
        order,
        2,
        staff,
        "t",
        json!({ "amount": "5.00" }),
    );
    sqlx::query("UPDATE orders SET last_seq = 2 WHERE id = $1")
        .bind(order)
        .execute(&mut *conn)
        .await
        .expect("seq");
    assert_eq!(
        worker::handlers::handle(&pool, worker::handlers::PaymentPolicy::MANUAL, &created)
            .await
            .expect("created"),
        worker::handlers::Outcome::Applied
    );
    let outcomes: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| {
            worker::handlers::handle(&pool, worker::handlers::PaymentPolicy::MANUAL, &paid)
        }))
        .await
        .into_iter()
        .map(|outcome| outcome.expect("handled"))
        .collect();
    let applied = outcomes
        .iter()
        .filter(|o| **o == worker::handlers::Outcome::Applied)
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    let (entries, captured): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_transactions WHERE order_id = $1), amount_captured_minor
         FROM orders WHERE id = $1",
    )
    .bind(order)
    .fetch_one(&pool)
    .await
    .expect("money");
    assert_eq!((entries, captured), (1, 500));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_database_keeps_the_ledger_append_only_and_refuses_money_that_drifts(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 3).await;
    let order: Uuid = app.order_id(&alice, "MUG", 2).await.parse().expect("uuid");
    let ledger_row = "INSERT INTO payment_transactions (id, order_id, kind, amount_minor, provider,
                          provider_reference, payment_status)
                      VALUES ($1, $2, 'receipt', 1000, 'manual', $3, 'paid')";
    let reference = Uuid::now_v7().to_string();
    sqlx::query(ledger_row)
        .bind(Uuid::now_v7())
        .bind(order)
        .bind(&reference)
        .execute(&pool)
        .await
        .expect("append");
    let twice = sqlx::query(ledger_row)
        .bind(Uuid::now_v7())
        .bind(order)
        .bind(&reference)
        .execute(&pool)
        .await;
    assert!(twice.is_err(), "one provider reference is applied once");
    for tampering in [
        "UPDATE payment_transactions SET amount_minor = 1",
        "DELETE FROM payment_transactions",
        "TRUNCATE payment_transactions",
    ] {
        let error = sqlx::query(tampering)
            .execute(&pool)
            .await
            .expect_err(tampering);
        assert!(
            error.to_string().contains("append-only"),
            "{tampering}: {error}"
        );
    }
    for drift in [
        // more refunded than captured, captured beyond authorised, authorised beyond the total
        "UPDATE orders SET amount_authorized_minor = 1000, amount_captured_minor = 1000,
             amount_refunded_minor = 1001, refunds_accepted_minor = 1001, payment_status = 'refunded'",
        "UPDATE orders SET amount_authorized_minor = 500, amount_captured_minor = 600, payment_status = 'partially_paid'",
        "UPDATE orders SET amount_authorized_minor = 1001, payment_status = 'authorized'",
        "UPDATE orders SET amount_refunded_minor = -1",
        // a status the amounts do not bear out
        "UPDATE orders SET payment_status = 'paid'",
    ] {
        let error = sqlx::query(drift).execute(&pool).await.expect_err(drift);
        assert!(error.to_string().contains("check constraint"), "{drift}: {error}");
    }
}
