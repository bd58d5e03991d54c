//! Placing and reading orders through the API alone (no worker): validation, pricing,
//! isolation, and the checks made before a command is queued.

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestUser, assert_problem, order_body};

async fn shop(app: &TestApp) -> (TestUser, TestUser) {
    let vendor = app.user(Role::Vendor, "vendor").await;
    let customer = app.user(Role::Customer, "alice").await;
    app.product(&vendor, "MUG", "12.50", 100).await;
    app.product(&vendor, "TEA", "3.99", 100).await;
    (vendor, customer)
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_order_snapshots_catalogue_prices_and_merges_repeated_products(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (_, customer) = shop(&app).await;
    let body = order_body(&[("MUG", 2), ("TEA", 1), ("mug", 1)]);
    let response = app.post("/api/orders/", Some(&customer.token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let order: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/api/orders/{}", order["id"].as_str().expect("id"))
    );
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total_amount"], "41.49");
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["items_count"], 4);
    let items = order["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let mug = items
        .iter()
        .find(|i| i["product_sku"] == "MUG")
        .expect("mug line");
    assert_eq!(mug["quantity"], 3);
    assert_eq!(mug["unit_price"], "12.50");
    assert_eq!(mug["total_price"], "37.50");
    assert_eq!(mug["product_name"], "Product MUG");
    assert_eq!(mug["product_description"], "test product");

    let outbox: Value = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("outbox row");
    assert_eq!(outbox["type"], "order.created");
    assert_eq!(outbox["seq"], 1);
    assert_eq!(outbox["order_id"], order["id"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_stale_client_price_is_refused_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (_, customer) = shop(&app).await;
    let mut body = order_body(&[("MUG", 1)]);
    body["items"][0]["unit_price"] = json!("9.99");
    let problem = assert_problem(
        app.post("/api/orders", Some(&customer.token), body).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["code"], "price_changed");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("12.50")
    );
    let mut matching = order_body(&[("MUG", 1)]);
    matching["items"][0]["unit_price"] = json!("12.50");
    assert_eq!(
        app.post("/api/orders", Some(&customer.token), matching)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(count(&pool, "orders").await, 1);
    assert_eq!(count(&pool, "outbox").await, 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_or_inactive_products_are_named_by_line(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, customer) = shop(&app).await;
    let retired = app.product(&vendor, "OLD", "1.00", 5).await;
    app.put(
        &format!("/api/products/{}", retired["id"].as_str().expect("id")),
        &vendor.token,
        json!({ "is_active": false }),
    )
    .await;
    let mut body = order_body(&[("MUG", 1), ("NOPE", 1), ("OLD", 1)]);
    body["items"][0] = json!({ "product_id": uuid::Uuid::now_v7(), "quantity": 1 });
    let problem = assert_problem(
        app.post("/api/orders", Some(&customer.token), body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "items[0].product_id",
            "items[1].product_sku",
            "items[2].product_sku"
        ]
    );
    assert_eq!(count(&pool, "orders").await, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn order_input_is_validated_field_by_field(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (_, customer) = shop(&app).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "items": [] }), "items"),
        (
            json!({ "items": vec![json!({ "product_sku": "MUG", "quantity": 1 }); 101] }),
            "items",
        ),
        (
            json!({ "items": [{ "product_sku": "MUG", "quantity": 0 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "product_sku": "MUG", "quantity": 1001 }] }),
            "items[0].quantity",
        ),
        (json!({ "items": [{ "quantity": 1 }] }), "items[0]"),
        (
            json!({ "items": [{ "product_sku": "MUG", "product_id": uuid::Uuid::now_v7(), "quantity": 1 }] }),
            "items[0]",
        ),
        (json!({ "customer_email": "nope" }), "customer_email"),
        (
            json!({ "customer_phone": "1".repeat(21) }),
            "customer_phone",
        ),
        (json!({ "customer_name": "" }), "customer_name"),
        (json!({ "shipping_address": "  " }), "shipping_address"),
        (
            json!({ "items": [{ "product_sku": "MUG", "quantity": 1, "price": "1.00" }] }),
            "items[0].price",
        ),
        (json!({ "status": "delivered" }), "status"),
    ];
    for (change, field) in cases {
        let mut body = order_body(&[("MUG", 1)]);
        for (key, value) in change.as_object().expect("object") {
            body[key] = value.clone();
        }
        let problem = assert_problem(
            app.post("/api/orders", Some(&customer.token), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].as_str().expect("field"))
            .collect();
        assert!(fields.contains(&field), "expected {field} in {problem}");
    }
    let mut missing = order_body(&[("MUG", 1)]);
    missing
        .as_object_mut()
        .expect("object")
        .remove("shipping_address");
    assert_problem(
        app.post("/api/orders", Some(&customer.token), missing)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(count(&pool, "orders").await, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn one_order_cannot_mix_currencies(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (vendor, customer) = shop(&app).await;
    let body = json!({ "sku": "EURO", "name": "Euro thing", "price": "1.00", "currency": "EUR", "stock": 5 });
    assert_eq!(
        app.post("/api/products", Some(&vendor.token), body)
            .await
            .status(),
        StatusCode::CREATED
    );
    let problem = assert_problem(
        app.post(
            "/api/orders",
            Some(&customer.token),
            order_body(&[("MUG", 1), ("EURO", 1)]),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "items");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_only_ever_see_their_own_orders(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (vendor, alice) = shop(&app).await;
    let bob = app.user(Role::Customer, "bob").await;
    let order = app.order(&alice, "MUG", 1).await;
    let id = order["id"].as_str().expect("id");
    let path = format!("/api/orders/{id}");

    // Bob: every route on Alice's order answers as if it did not exist.
    assert_problem(app.get(&path, &bob.token).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.put(&path, &bob.token, json!({ "notes": "mine now" }))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.delete(&path, &bob.token).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.get(&format!("{path}/events"), &bob.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Status changes are staff-only, so a customer is refused before the order is looked up.
    assert_problem(
        app.patch(
            &format!("{path}/status"),
            &bob.token,
            json!({ "status": "processing" }),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let bobs: Value = app
        .get("/api/orders/my", &bob.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["total"], 0);
    assert_problem(
        app.get("/api/orders", &bob.token).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Alice and the vendor see it.
    assert_eq!(app.get(&path, &alice.token).await.status(), StatusCode::OK);
    assert_eq!(app.get(&path, &vendor.token).await.status(), StatusCode::OK);
    let alices: Value = app
        .get("/api/orders/my/", &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(alices["total"], 1);
    let all: Value = app
        .get("/api/orders?status=pending", &vendor.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["total"], 1);
    let none: Value = app
        .get("/api/orders?status=shipped", &vendor.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["total"], 0);
    assert_problem(
        app.get("/api/orders?status=lost", &vendor.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        app.get("/api/orders/not-a-uuid", &alice.token).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn customers_edit_contact_details_but_not_tracking(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (vendor, alice) = shop(&app).await;
    let order = app.order(&alice, "MUG", 1).await;
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));
    let edited: Value = app
        .put(
            &path,
            &alice.token,
            json!({ "shipping_address": "2 New Road", "notes": "ring twice" }),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(edited["shipping_address"], "2 New Road");
    assert_eq!(edited["notes"], "ring twice");
    assert_problem(
        app.put(&path, &alice.token, json!({ "tracking_number": "TRK" }))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        app.put(&path, &alice.token, json!({ "customer_email": "bad" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let tracked: Value = app
        .put(&path, &vendor.token, json!({ "tracking_number": "TRK-1" }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(tracked["tracking_number"], "TRK-1");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn commands_are_checked_against_the_projected_status(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = shop(&app).await;
    let order = app.order(&alice, "MUG", 1).await;
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));
    // Not yet confirmed by a worker: it cannot be processed yet.
    let early = app
        .patch(
            &format!("{path}/status"),
            &vendor.token,
            json!({ "status": "processing" }),
        )
        .await;
    assert_eq!(
        assert_problem(early, StatusCode::CONFLICT).await["code"],
        "invalid_transition"
    );

    // Pretend a worker confirmed it.
    sqlx::query(
        "UPDATE orders SET status = 'confirmed', projected_status = 'confirmed', applied_seq = 1",
    )
    .execute(&pool)
    .await
    .expect("confirm");
    let skipping_processing = app
        .patch(
            &format!("{path}/status"),
            &vendor.token,
            json!({ "status": "shipped" }),
        )
        .await;
    assert_eq!(
        assert_problem(skipping_processing, StatusCode::CONFLICT).await["code"],
        "invalid_transition"
    );
    for (status, tracking) in [
        ("processing", None),
        ("shipped", Some("TRK-9")),
        ("delivered", None),
    ] {
        let response = app
            .patch(
                &format!("{path}/status"),
                &vendor.token,
                json!({ "status": status, "tracking_number": tracking }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{status}");
        let accepted: Value = response.json().await.expect("json");
        assert_eq!(accepted["requested_status"], status);
        assert_eq!(accepted["status"], "confirmed");
    }
    let shown: Value = app
        .get(&path, &alice.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["status"], "confirmed");
    assert_eq!(shown["pending_status"], "delivered");
    // Delivered (projected) cannot be cancelled by anyone, nor processed again.
    assert_problem(app.delete(&path, &alice.token).await, StatusCode::CONFLICT).await;
    assert_problem(app.delete(&path, &vendor.token).await, StatusCode::CONFLICT).await;
    assert_problem(
        app.patch(
            &format!("{path}/status"),
            &vendor.token,
            json!({ "status": "processing" }),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT (payload->>'seq')::bigint FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("seqs");
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn shipping_needs_a_tracking_number(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = shop(&app).await;
    let order = app.order(&alice, "MUG", 1).await;
    let path = format!("/api/orders/{}/status", order["id"].as_str().expect("id"));
    sqlx::query(
        "UPDATE orders SET status = 'processing', projected_status = 'processing', applied_seq = 1",
    )
    .execute(&pool)
    .await
    .expect("processing");
    let problem = assert_problem(
        app.patch(&path, &vendor.token, json!({ "status": "shipped" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "tracking_number");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn cancellation_rules_differ_for_customers_and_staff(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = shop(&app).await;
    let first = app.order(&alice, "MUG", 1).await;
    let second = app.order(&alice, "MUG", 1).await;
    let set_processing = |id: String| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE orders SET status = 'processing', projected_status = 'processing', applied_seq = 1 WHERE id = $1::uuid")
                .bind(id)
                .execute(&pool)
                .await
                .expect("processing");
        }
    };
    set_processing(first["id"].as_str().expect("id").to_owned()).await;
    set_processing(second["id"].as_str().expect("id").to_owned()).await;
    let first_path = format!("/api/orders/{}", first["id"].as_str().expect("id"));
    let second_path = format!("/api/orders/{}", second["id"].as_str().expect("id"));
    assert_problem(
        app.delete(&first_path, &alice.token).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        app.delete(&first_path, &vendor.token).await.status(),
        StatusCode::ACCEPTED
    );
    let by_patch = app
        .patch(
            &format!("{second_path}/status"),
            &vendor.token,
            json!({ "status": "cancelled", "note": "damaged" }),
        )
        .await;
    assert_eq!(by_patch.status(), StatusCode::ACCEPTED);
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'type' FROM outbox WHERE (payload->>'seq')::bigint = 2",
    )
    .fetch_all(&pool)
    .await
    .expect("types");
    assert_eq!(kinds, ["order.cancel_requested", "order.cancel_requested"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_request_stuck_behind_a_lock_answers_503_instead_of_hanging(pool: PgPool) {
    let settings = crate::helpers::test_settings(&[("DATABASE_STATEMENT_TIMEOUT_MS", "300")]);
    let app = TestApp::start(pool.clone(), settings, false).await;
    let (vendor, alice) = shop(&app).await;
    let order = app.order(&alice, "MUG", 1).await;
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));
    let mut blocker = pool.begin().await.expect("tx");
    sqlx::query("SELECT id FROM orders FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let problem = assert_problem(
        app.delete(&path, &vendor.token).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(problem["detail"].as_str().expect("detail").contains("busy"));
    blocker.rollback().await.expect("rollback");
    assert_eq!(
        app.delete(&path, &vendor.token).await.status(),
        StatusCode::ACCEPTED
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn racing_status_changes_for_one_order_are_accepted_once_and_numbered_in_turn(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool.clone(), 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let id = app.order_id(&alice, "MUG", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let path = format!("/api/orders/{id}/status");
    let racing = (0..8).map(|_| app.patch(&path, &vendor.token, json!({"status": "processing"})));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(racing)
        .await
        .into_iter()
        .map(|response| response.status())
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM outbox WHERE routing_key <> 'order.status_changed' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .expect("commands");
    assert_eq!(seqs, [1, 2]);
    app.wait_for_status(&alice.token, &id, "processing").await;
}

/// `order_counts` as (customer, status, orders), and the same counted from `orders`.
async fn kept_and_actual_counts(
    pool: &PgPool,
) -> (Vec<(String, String, i64)>, Vec<(String, String, i64)>) {
    let kept = sqlx::query_as(
        "SELECT customer_id::text, status::text, orders FROM order_counts WHERE orders <> 0 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("kept counts");
    let actual = sqlx::query_as(
        "SELECT customer_id::text, status::text, count(*) FROM orders WHERE status <> 'pending'
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("actual counts");
    (kept, actual)
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn kept_order_counts_match_the_orders_after_any_insert_update_or_delete(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (_, alice) = shop(&app).await;
    let bob = app.user(Role::Customer, "bob").await;
    for customer in [&alice, &bob] {
        for _ in 0..3 {
            app.order_id(customer, "MUG", 1).await;
        }
    }
    // Writers other than the worker too: rows inserted decided, moved in bulk, deleted.
    let steps = [
        "INSERT INTO orders (id, customer_id, status, projected_status, currency, total_amount_minor,
             items_count, customer_name, customer_email, shipping_address)
         SELECT gen_random_uuid(), id, 'delivered', 'delivered', 'USD', 100, 1, 'x', 'x@example.com', 'x'
         FROM users WHERE role = 'customer'",
        "UPDATE orders SET status = 'confirmed' WHERE status = 'pending'",
        "UPDATE orders SET status = 'shipped'
         WHERE id IN (SELECT id FROM orders WHERE status = 'confirmed' ORDER BY id LIMIT 4)",
        "UPDATE orders SET updated_at = now()",
        "DELETE FROM order_items",
        "DELETE FROM orders WHERE status = 'delivered'",
    ];
    for step in steps {
        sqlx::query(sqlx::AssertSqlSafe(step))
            .execute(&pool)
            .await
            .expect(step);
        let (kept, actual) = kept_and_actual_counts(&pool).await;
        assert_eq!(kept, actual, "after: {step}");
    }
    let (kept, _) = kept_and_actual_counts(&pool).await;
    assert_eq!(kept.iter().map(|(_, _, n)| n).sum::<i64>(), 6);
}
