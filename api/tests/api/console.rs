//! The web console: its files are served with a strict policy, and it works in a real
//! browser (Debian's Chromium driven by Playwright, see `e2e/console.test.mjs`).

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_console_is_served_from_the_binary_under_a_strict_policy(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (path, content_type) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/views/staff.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("served");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let policy = headers["content-security-policy"].to_str().expect("ascii");
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let missing = app
        .client
        .get(format!("{}/console/../Cargo.toml", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// Where the scenario's screenshots go (kept as test artefacts).
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_customer_and_a_vendor_work_side_by_side_in_a_real_browser(pool: PgPool) {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists()
            && PathBuf::from("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: run scripts/test.sh, which \
         installs them (apt-get install chromium; npm ci in e2e/)"
    );
    let app = TestApp::spawn_pipeline(pool, 1).await;
    app.user(Role::Admin, "admin").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    for (sku, name, price, stock) in [
        ("LAMP-01", "Desk lamp", "39.90", 12),
        ("MUG-02", "Stoneware mug", "12.50", 40),
        ("CHAIR-03", "Oak chair", "149.00", 3),
    ] {
        let product = json!({ "sku": sku, "name": name, "description": "Made to last.", "price": price, "stock": stock });
        let created = app
            .post("/api/products", Some(&vendor.token), product)
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // Some history, so the board is not empty: orders confirmed, in processing, delivered.
    let mut earlier = Vec::new();
    for (sku, moves) in [
        ("MUG-02", vec![]),
        ("CHAIR-03", vec![json!({ "status": "processing" })]),
        (
            "MUG-02",
            vec![
                json!({ "status": "processing" }),
                json!({ "status": "shipped", "tracking_number": "TRK-7731" }),
                json!({ "status": "delivered" }),
            ],
        ),
    ] {
        let order = app.order_id(&alice, sku, 1).await;
        app.wait_for_status(&alice.token, &order, "confirmed").await;
        for change in moves {
            app.move_order(&vendor, &order, change).await;
        }
        earlier.push(order);
    }
    // And a message no worker could apply, for the admin's dead letters page.
    app.publish_raw("order.created", "poison-1", b"{ not json")
        .await;

    let run = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&e2e)
        .env("BASE_URL", &app.address)
        .env("PASSWORD", PASSWORD)
        .env("VENDOR", "vendor")
        .env("CUSTOMER", "alice")
        .env("ADMIN", "admin")
        .env("PRODUCT_NAME", "Desk lamp")
        .env("SCREENSHOTS", screenshots())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser scenario finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "browser scenario failed:\n{stdout}\n{stderr}"
    );

    // What the browser did is what the system recorded.
    // Paid in full by hand, then refunded in full.
    let placed: Vec<(String, Option<String>, String, bool)> = sqlx::query_as(
        "SELECT status::text, tracking_number, payment_status::text,
                amount_refunded_minor = total_amount_minor AND total_amount_minor > 0
         FROM orders WHERE customer_id = $1 AND id::text <> ALL($2::text[])",
    )
    .bind(alice.id)
    .bind(&earlier)
    .fetch_all(&app.pool)
    .await
    .expect("orders");
    assert_eq!(
        placed,
        [(
            "refunded".to_owned(),
            Some("TRK-E2E-0042".to_owned()),
            "refunded".to_owned(),
            true
        )]
    );
}
