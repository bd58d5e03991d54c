//! The catalogue: who may change it, who sees what, and stock adjustments.

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn vendors_create_products_and_customers_cannot(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let vendor = app.user(Role::Vendor, "vendor").await;
    let customer = app.user(Role::Customer, "cust").await;
    let product = app.product(&vendor, "MUG-1", "12.5", 7).await;
    assert_eq!(product["price"], "12.50");
    assert_eq!(product["currency"], "USD");
    assert_eq!(product["stock"], 7);
    let body = json!({ "sku": "X-1", "name": "x", "price": "1.00" });
    assert_problem(
        app.post("/api/products", Some(&customer.token), body).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn product_input_is_validated_and_skus_are_unique(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.user(Role::Admin, "admin").await;
    app.product(&admin, "SKU-1", "1.00", 1).await;
    let duplicate = json!({ "sku": "sku-1", "name": "again", "price": "2.00" });
    assert_eq!(
        assert_problem(
            app.post("/api/products", Some(&admin.token), duplicate)
                .await,
            StatusCode::CONFLICT
        )
        .await["code"],
        "sku_taken"
    );
    let bad =
        json!({ "sku": "has space", "name": "", "price": "1.999", "currency": "usd", "stock": -1 });
    let problem = assert_problem(
        app.post("/api/products", Some(&admin.token), bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        problem["errors"][0]["field"], "price",
        "money is checked while parsing: {problem}"
    );
    let bad_fields =
        json!({ "sku": "has space", "name": "", "price": "1.99", "currency": "usd", "stock": -1 });
    let problem = assert_problem(
        app.post("/api/products", Some(&admin.token), bad_fields)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    for field in ["sku", "name", "currency", "stock"] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_see_only_active_products_and_can_search(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let vendor = app.user(Role::Vendor, "vendor").await;
    let customer = app.user(Role::Customer, "cust").await;
    app.product(&vendor, "TEA-GREEN", "3.00", 5).await;
    app.product(&vendor, "TEA-BLACK", "3.00", 5).await;
    let hidden = app.product(&vendor, "COFFEE", "4.00", 5).await;
    let id = hidden["id"].as_str().expect("id");
    let deactivated = app
        .put(
            &format!("/api/products/{id}"),
            &vendor.token,
            json!({ "is_active": false }),
        )
        .await;
    assert_eq!(deactivated.status(), StatusCode::OK);

    let listed: Value = app
        .get("/api/products/", &customer.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["total"], 2);
    let staff_view: Value = app
        .get("/api/products", &vendor.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(staff_view["total"], 3);
    let search: Value = app
        .get("/api/products?q=green", &customer.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(search["total"], 1);
    assert_eq!(search["items"][0]["sku"], "TEA-GREEN");
    assert_problem(
        app.get(&format!("/api/products/{id}"), &customer.token)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        app.get(&format!("/api/products/{id}"), &vendor.token)
            .await
            .status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn stock_adjustments_never_go_below_zero(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let vendor = app.user(Role::Vendor, "vendor").await;
    let product = app.product(&vendor, "PEN", "1.00", 3).await;
    let path = format!(
        "/api/products/{}/stock",
        product["id"].as_str().expect("id")
    );
    let added: Value = app
        .post(&path, Some(&vendor.token), json!({ "delta": 5 }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(added["stock"], 8);
    let problem = assert_problem(
        app.post(&path, Some(&vendor.token), json!({ "delta": -9 }))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "insufficient_stock");
    assert_eq!(app.stock_of("PEN").await, (8, 0));
    let huge = app
        .post(&path, Some(&vendor.token), json!({ "delta": i32::MAX }))
        .await;
    let problem = assert_problem(huge, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "delta");
    assert_eq!(app.stock_of("PEN").await, (8, 0));
    let missing = format!("/api/products/{}/stock", uuid::Uuid::now_v7());
    assert_problem(
        app.post(&missing, Some(&vendor.token), json!({ "delta": 1 }))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_see_availability_never_stock_levels(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (vendor, customer) = app.vendor_and_customer().await;
    let plenty = app.product(&vendor, "PLENTY", "1.00", 500).await;
    let few = app.product(&vendor, "FEW", "1.00", 3).await;
    let none = app.product(&vendor, "NONE", "1.00", 0).await;
    for (product, in_stock, available) in [(plenty, true, 20), (few, true, 3), (none, false, 0)] {
        let path = format!("/api/products/{}", product["id"].as_str().expect("id"));
        let seen: Value = app
            .get(&path, &customer.token)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(seen["in_stock"], in_stock, "{seen}");
        assert_eq!(seen["available"], available, "{seen}");
        assert!(
            seen.get("stock").is_none() && seen.get("reserved").is_none(),
            "{seen}"
        );
        let staff: Value = app
            .get(&path, &vendor.token)
            .await
            .json()
            .await
            .expect("json");
        assert!(
            staff["stock"].is_i64() && staff["reserved"].is_i64(),
            "{staff}"
        );
    }
    let listed = app
        .get("/api/products", &customer.token)
        .await
        .text()
        .await
        .expect("body");
    assert!(
        !listed.contains("\"stock\"") && !listed.contains("\"reserved\""),
        "{listed}"
    );
}
