//! `Idempotency-Key` on order creation.

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{TestApp, TestUser, assert_problem, order_body};

async fn post_with_key(
    app: &TestApp,
    user: &TestUser,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}/api/orders", app.address))
        .bearer_auth(&user.token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn orders(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_same_key_and_body_replays_the_first_response(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let body = order_body(&[("MUG", 1)]);
    let first = post_with_key(&app, &alice, "order-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again = post_with_key(&app, &alice, "order-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    assert_eq!(orders(&pool).await, 1);

    let different = post_with_key(&app, &alice, "order-1", &order_body(&[("MUG", 2)])).await;
    assert_problem(different, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Keys belong to their user: Bob's "order-1" is a new order.
    let bob = app.user(Role::Customer, "bob").await;
    assert_eq!(
        post_with_key(&app, &bob, "order-1", &body).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(orders(&pool).await, 2);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_failed_request_frees_its_key(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let body = order_body(&[("LATER", 1)]);
    assert_problem(
        post_with_key(&app, &alice, "k", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    app.product(&vendor, "LATER", "1.00", 1).await;
    assert_eq!(
        post_with_key(&app, &alice, "k", &body).await.status(),
        StatusCode::CREATED
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn fifty_concurrent_requests_with_one_key_create_one_order(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 100).await;
    let body = order_body(&[("MUG", 1)]);
    let requests = (0..50).map(|_| post_with_key(&app, &alice, "burst", &body));
    let responses = futures_util::future::join_all(requests).await;
    let mut created = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created.push(response.json::<Value>().await.expect("json")),
            StatusCode::CONFLICT => {
                assert_eq!(
                    assert_problem(response, StatusCode::CONFLICT).await["code"],
                    "request_in_flight"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|body| body == &created[0]),
        "every success carries the same order"
    );
    assert_eq!(orders(&pool).await, 1);
    let replay = post_with_key(&app, &alice, "burst", &body).await;
    assert_eq!(replay.json::<Value>().await.expect("json"), created[0]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_malformed_key_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let alice = app.user(Role::Customer, "alice").await;
    let too_long = "k".repeat(256);
    let problem = assert_problem(
        post_with_key(&app, &alice, &too_long, &order_body(&[("X", 1)])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn creating_a_product_is_idempotent_too(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let vendor = app.user(Role::Vendor, "vendor").await;
    let body = serde_json::json!({ "sku": "ONCE", "name": "Once", "price": "2.00" });
    let post = || {
        app.client
            .post(format!("{}/api/products", app.address))
            .bearer_auth(&vendor.token)
            .header("idempotency-key", "product-1")
            .json(&body)
            .send()
    };
    let first: Value = post().await.expect("sent").json().await.expect("json");
    let again = post().await.expect("sent");
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "a replay, not a duplicate-SKU conflict"
    );
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(products, 1);
}
