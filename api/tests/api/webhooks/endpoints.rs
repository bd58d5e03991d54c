//! Registering endpoints: the SSRF guard at saving and at delivery, and input checks.

use std::time::Duration;

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{FAST, Receiver, shop};
use crate::helpers::{TestApp, assert_problem, test_settings, wait_until};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_private_address_is_refused_unless_allowlisted(pool: PgPool) {
    let shop = shop(&pool, &[("WEBHOOK_ALLOWED_HOSTS", "")]).await;
    let receiver = Receiver::start(&[]).await;
    for url in [
        receiver.url.clone(),
        receiver.url.replace("127.0.0.1", "localhost"),
        receiver.url.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let body = json!({ "url": url });
        let response = shop
            .app
            .post("/api/webhooks", Some(&shop.admin.token), body)
            .await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}");
        let message = problem["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains("not a public address"), "{url}: {message}");
    }
    let listed: Value = shop
        .app
        .get("/api/webhooks", &shop.admin.token)
        .await
        .json()
        .await
        .expect("list");
    assert_eq!(listed["total"], 0, "nothing saved");

    // One saved while allowed (or whose name now resolves privately) is refused at delivery.
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, secret) VALUES (gen_random_uuid(), $1, $2)",
    )
    .bind(receiver.url.replace("127.0.0.1", "localhost"))
    .bind(common::webhooks::generate_secret())
    .execute(&pool)
    .await
    .expect("endpoint");
    shop.app.order_id(&shop.alice, "LAMP", 1).await;
    wait_until("an attempt is refused", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_attempts WHERE error LIKE '%not a public address%'",
        )
        .fetch_one(&pool)
        .await
        .expect("attempts")
            > 0
    })
    .await;
    assert!(
        receiver.received().is_empty(),
        "nothing reached the private address"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn endpoint_input_is_checked_and_changes_nothing_when_refused(pool: PgPool) {
    let app = TestApp::start(pool.clone(), test_settings(&FAST), false).await;
    let admin = app.user(Role::Admin, "root").await;
    for (body, field) in [
        (json!({ "url": "ftp://127.0.0.1/x" }), "url"),
        (json!({ "url": "http://user:pw@127.0.0.1/x" }), "url"),
        (
            json!({ "url": "http://127.0.0.1/x", "event_types": ["order.exploded"] }),
            "event_types[0]",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "description": "x".repeat(501) }),
            "description",
        ),
    ] {
        let response = app.post("/api/webhooks", Some(&admin.token), body).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
    let unknown = format!("/api/webhooks/{}", uuid::Uuid::now_v7());
    assert_problem(app.get(&unknown, &admin.token).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.delete(&unknown, &admin.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
