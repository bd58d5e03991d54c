//! No silently stuck order: a command that cannot be applied flags its order stalled,
//! staff see it and new commands are refused until an admin re-drives or skips it.

use std::time::Duration;

use common::{
    events::{Actor, Envelope, EventType},
    stall,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem, test_settings, wait_until};

async fn stalled_reason(app: &TestApp, staff: &TestUser, id: &str) -> Option<String> {
    let order: Value = app
        .get(&format!("/api/orders/{id}"), &staff.token)
        .await
        .json()
        .await
        .expect("order");
    order["stalled_reason"].as_str().map(str::to_owned)
}

async fn wait_until_stalled(app: &TestApp, staff: &TestUser, id: &str) -> String {
    wait_until(
        "the order is flagged stalled",
        Duration::from_secs(20),
        || async { stalled_reason(app, staff, id).await.is_some() },
    )
    .await;
    stalled_reason(app, staff, id).await.expect("reason")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_dead_lettered_command_stalls_its_order_until_an_admin_skips_it(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let admin = app.user(common::domain::Role::Admin, "root").await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    let id = app.order_id(&alice, "PEN", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;

    // A command no worker can apply (a status this version does not know), accepted as
    // the order's second.
    let order_id: Uuid = id.parse().expect("uuid");
    let poison = Envelope::new(
        EventType::StatusChangeRequested,
        order_id,
        2,
        Actor::system(),
        "test",
        json!({"status": "teleported"}),
    );
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("UPDATE orders SET last_seq = 2 WHERE id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .expect("seq");
    crate::helpers::enqueue(&mut tx, &poison).await;
    tx.commit().await.expect("commit");

    let reason = wait_until_stalled(&app, &admin, &id).await;
    assert!(
        reason.starts_with("command 2 (order.status_change_requested) was dead-lettered"),
        "{reason}"
    );
    let listed: Value = app
        .get("/api/orders?stalled=true", &admin.token)
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let others: Value = app
        .get("/api/orders?stalled=false", &admin.token)
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(others["total"], 0);
    let operators_view = stall::list(&pool, 10).await.expect("stalled");
    assert_eq!(operators_view.len(), 1);
    assert_eq!(operators_view[0].stalled_seq, 2);

    // The customer sees neither the flag nor the reason, and no change goes through.
    let mine: Value = app
        .get(&format!("/api/orders/{id}"), &alice.token)
        .await
        .json()
        .await
        .expect("order");
    assert!(mine.get("stalled_reason").is_none(), "{mine}");
    let refused = app
        .patch(
            &format!("/api/orders/{id}/status"),
            &vendor.token,
            json!({"status": "processing"}),
        )
        .await;
    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert_eq!(problem["code"], "order_stalled");
    let refused = app.delete(&format!("/api/orders/{id}"), &alice.token).await;
    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert_eq!(problem["code"], "order_stalled");
    assert!(
        !problem["detail"]
            .as_str()
            .expect("detail")
            .contains("dead-lettered")
    );

    let skipped = app
        .post(
            &format!("/api/orders/{id}/skip"),
            Some(&admin.token),
            json!({"reason": "written by a broken client"}),
        )
        .await;
    assert_eq!(skipped.status(), StatusCode::OK);
    let skipped: Value = skipped.json().await.expect("body");
    assert_eq!(skipped["skipped_seq"], 2);
    assert_eq!(stalled_reason(&app, &admin, &id).await, None);

    // The order moves again, and the skip is on the staff timeline only.
    app.move_order(&vendor, &id, json!({"status": "processing"}))
        .await;
    let staff_timeline: Value = app
        .get(&format!("/api/orders/{id}/events"), &admin.token)
        .await
        .json()
        .await
        .expect("timeline");
    let skip = staff_timeline
        .as_array()
        .expect("entries")
        .iter()
        .find(|entry| entry["kind"] == "skipped")
        .expect("a skipped entry");
    assert_eq!(skip["reason"], "written by a broken client");
    assert_eq!(skip["seq"], 2);
    let customer_timeline: Value = app
        .get(&format!("/api/orders/{id}/events"), &alice.token)
        .await
        .json()
        .await
        .expect("timeline");
    assert!(
        customer_timeline
            .as_array()
            .expect("entries")
            .iter()
            .all(|entry| entry["kind"] != "skipped")
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_command_dead_lettered_by_a_database_fault_moves_on_when_re_driven(pool: PgPool) {
    // One attempt: the first failure dead-letters.
    let settings = test_settings(&[("WORKER_MAX_ATTEMPTS", "1")]);
    let app = TestApp::start(pool.clone(), settings, true).await;
    app.start_workers(1);
    let (vendor, alice) = app.vendor_and_customer().await;
    let admin = app.user(common::domain::Role::Admin, "root").await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    let id = app.order_id(&alice, "PEN", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;

    // Every applied transition now fails to write its timeline entry.
    sqlx::query("ALTER TABLE order_events ADD CONSTRAINT injected_fault CHECK (kind <> 'status_changed') NOT VALID")
        .execute(&pool)
        .await
        .expect("fault");
    let path = format!("/api/orders/{id}/status");
    let accepted = app
        .patch(&path, &vendor.token, json!({"status": "processing"}))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let reason = wait_until_stalled(&app, &admin, &id).await;
    assert!(reason.contains("gave up after 1 attempts"), "{reason}");
    let refused = app
        .patch(
            &path,
            &vendor.token,
            json!({"status": "shipped", "tracking_number": "TRK-1"}),
        )
        .await;
    assert_eq!(
        assert_problem(refused, StatusCode::CONFLICT).await["code"],
        "order_stalled"
    );

    sqlx::query("ALTER TABLE order_events DROP CONSTRAINT injected_fault")
        .execute(&pool)
        .await
        .expect("repair");
    let redriven = app
        .post(
            &format!("/api/orders/{id}/redrive"),
            Some(&admin.token),
            json!(null),
        )
        .await;
    assert_eq!(redriven.status(), StatusCode::OK);
    let redriven: Value = redriven.json().await.expect("body");
    assert_eq!(redriven["requeued_commands"], 1);
    app.wait_for_status(&alice.token, &id, "processing").await;
    assert_eq!(stalled_reason(&app, &admin, &id).await, None);

    // Resolving an order that is not stalled is refused and changes nothing.
    let again = app
        .post(
            &format!("/api/orders/{id}/redrive"),
            Some(&admin.token),
            json!(null),
        )
        .await;
    assert_eq!(
        assert_problem(again, StatusCode::CONFLICT).await["code"],
        "not_stalled"
    );
}
