//! Dead letters through the admin API: listed with their reasons and left in place,
//! re-driven to the workers by id.

use std::time::Duration;

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem, wait_until};

async fn letters(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get("/api/dead-letters", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_admin_lists_dead_letters_with_their_reasons_and_redrives_one(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let admin = app.user(Role::Admin, "admin").await;
    app.publish_raw("order.created", "poison-1", b"{ not json")
        .await;
    wait_until(
        "the poison is dead-lettered",
        Duration::from_secs(10),
        || async { letters(&app, &admin.token).await.len() == 1 },
    )
    .await;

    let listed = letters(&app, &admin.token).await;
    assert_eq!(listed[0]["message_id"], "poison-1");
    assert_eq!(listed[0]["routing_key"], "order.created");
    assert_eq!(listed[0]["body"], "{ not json");
    assert!(
        listed[0]["error"]
            .as_str()
            .expect("reason")
            .starts_with("malformed message")
    );
    assert_eq!(
        letters(&app, &admin.token).await.len(),
        1,
        "listing leaves letters in place"
    );

    let none = app
        .post("/api/dead-letters/redrive", Some(&admin.token), json!({}))
        .await;
    assert_problem(none, StatusCode::UNPROCESSABLE_ENTITY).await;
    let redriven = app
        .post(
            "/api/dead-letters/redrive",
            Some(&admin.token),
            json!({ "message_ids": ["poison-1"] }),
        )
        .await;
    assert_eq!(redriven.status(), StatusCode::OK);
    let body: Value = redriven.json().await.expect("json");
    assert_eq!(body["redriven"], 1);
    // Still poison: a worker takes it again and dead-letters it again, reason and all.
    wait_until(
        "it is dead-lettered again",
        Duration::from_secs(10),
        || async {
            let again = letters(&app, &admin.token).await;
            again.len() == 1 && again[0]["message_id"] == "poison-1"
        },
    )
    .await;
}
