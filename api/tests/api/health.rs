//! Health probes, routing conventions and request ids.

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem, test_settings};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn liveness_answers_without_auth_in_both_path_forms(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in ["/health", "/health/"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn readiness_is_200_when_database_and_broker_answer(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool).await;
    let response = app
        .client
        .get(format!("{}/health/ready/", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "up");
    assert_eq!(body["broker"], "up");
    let node = body["broker_node"].as_str().expect("the node in use");
    assert!(
        node.starts_with("amqp://") && !node.contains("guest:"),
        "{node}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn readiness_stays_200_but_degraded_when_only_the_broker_is_unreachable(pool: PgPool) {
    let settings = test_settings(&[("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")]);
    let app = TestApp::start(pool, settings, false).await;
    let response = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "orders are still accepted"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"], "up");
    assert_eq!(body["broker"], "down");
    assert_eq!(body["broker_node"], Value::Null);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn readiness_is_503_naming_postgresql_when_the_database_is_gone(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool).await;
    app.pool.close().await;
    let response = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("PostgreSQL"),
        "{body}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unknown_routes_and_wrong_methods_answer_with_problems(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let missing = app
        .client
        .get(format!("{}/api/nothing-here", app.address))
        .send()
        .await
        .expect("sent");
    assert_problem(missing, StatusCode::NOT_FOUND).await;
    let wrong_method = app
        .client
        .delete(format!("{}/health", app.address))
        .send()
        .await
        .expect("sent");
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_request_id_is_generated_or_echoed_but_never_trusted_blindly(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = format!("{}/health", app.address);
    let generated = app.client.get(&url).send().await.expect("sent");
    let id = generated.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app
        .client
        .get(&url)
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(echoed.headers()["x-request-id"], "client-id-42");

    let forged = app
        .client
        .get(&url)
        .header("x-request-id", "bad id\" injected=1")
        .send()
        .await
        .expect("sent");
    assert_ne!(forged.headers()["x-request-id"], "bad id\" injected=1");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn cors_allows_configured_origins_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/auth/login", app.address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.expect("sent");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let refused = preflight("http://evil.example").await.expect("sent");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
