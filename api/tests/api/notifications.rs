//! Notifications belong to their user, and can be marked read.

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn notifications_are_private_and_can_be_marked_read(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let bob = app.user(Role::Customer, "bob").await;
    app.product(&vendor, "CUP", "2.00", 5).await;
    let id = app.order_id(&alice, "CUP", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;

    let unread: Value = app
        .get("/api/notifications?unread=true", &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unread["total"], 1);
    let notification_id = unread["items"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(unread["items"][0]["kind"], "order_confirmed");
    assert_eq!(unread["items"][0]["order_id"], id.as_str());

    let bobs: Value = app
        .get("/api/notifications", &bob.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["total"], 0);
    let path = format!("/api/notifications/{notification_id}/read");
    assert_problem(
        app.post(&path, Some(&bob.token), Value::Null).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let read: Value = app
        .post(&path, Some(&alice.token), Value::Null)
        .await
        .json()
        .await
        .expect("json");
    assert!(read["read_at"].is_string());
    let unread: Value = app
        .get("/api/notifications?unread=true", &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unread["total"], 0);
    let all = app
        .post(
            "/api/notifications/read-all",
            Some(&alice.token),
            Value::Null,
        )
        .await;
    assert_eq!(all.status(), StatusCode::NO_CONTENT);
}
