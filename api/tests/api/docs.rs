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
        ("/api/users/me", "get"),
        ("/api/users/me", "put"),
        ("/api/users", "get"),
        ("/api/users/search", "get"),
        ("/api/users/{id}", "get"),
        ("/api/users/{id}", "put"),
        ("/api/users/{id}", "delete"),
        ("/health", "get"),
        ("/health/ready", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
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
