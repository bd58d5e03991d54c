//! The OpenAPI document and the Swagger UI.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_openapi_document_lists_every_route_and_the_bearer_scheme(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let expected = [
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/me", "get"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/logout-all", "post"),
        ("/api/auth/stream-ticket", "post"),
        ("/api/orders/stream", "get"),
        ("/api/orders/{id}/stream", "get"),
        ("/api/users/me", "get"),
        ("/api/users/me", "put"),
        ("/api/users", "get"),
        ("/api/users/search", "get"),
        ("/api/users/{id}", "get"),
        ("/api/users/{id}", "put"),
        ("/api/users/{id}", "delete"),
        ("/api/users/{id}/login-lockout", "delete"),
        ("/api/products", "get"),
        ("/api/products", "post"),
        ("/api/products/{id}", "get"),
        ("/api/products/{id}", "put"),
        ("/api/products/{id}/stock", "post"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/my", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}", "put"),
        ("/api/orders/{id}", "delete"),
        ("/api/orders/{id}/status", "patch"),
        ("/api/orders/{id}/events", "get"),
        ("/api/orders/{id}/redrive", "post"),
        ("/api/orders/{id}/skip", "post"),
        ("/api/notifications", "get"),
        ("/api/notifications/{id}/read", "post"),
        ("/api/notifications/read-all", "post"),
        ("/api/dead-letters", "get"),
        ("/api/dead-letters/redrive", "post"),
        ("/api/webhooks", "get"),
        ("/api/webhooks", "post"),
        ("/api/webhooks/{id}", "get"),
        ("/api/webhooks/{id}", "put"),
        ("/api/webhooks/{id}", "delete"),
        ("/api/webhooks/{id}/rotate-secret", "post"),
        ("/api/webhooks/{id}/deliveries", "get"),
        ("/api/webhooks/{id}/deliveries/{event_id}/resend", "post"),
        ("/api/webhooks/{id}/deliveries/resend-failed", "post"),
        ("/api/orders/{id}/payments", "get"),
        ("/api/orders/{id}/payments", "post"),
        ("/api/orders/{id}/refunds", "post"),
        ("/api/orders/{id}/capture", "post"),
        ("/api/orders/{id}/fulfillments", "get"),
        ("/api/orders/{id}/fulfillments", "post"),
        ("/api/orders/{id}/fulfillments/{fulfillment_id}", "patch"),
        ("/api/orders/{id}/cancellations", "post"),
        ("/api/payments/stripe/webhook", "post"),
        ("/health", "get"),
        ("/health/ready", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().expect("item").len())
        .sum();
    assert_eq!(
        documented,
        expected.len(),
        "a route is documented that this test does not know"
    );
    // Every response of every operation says what it means (OpenAPI requires it).
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn swagger_ui_is_served_offline(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let page = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains("swagger-ui"));
    let script = app
        .client
        .get(format!("{}/docs/swagger-ui-bundle.js", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(script.status(), StatusCode::OK);
}
