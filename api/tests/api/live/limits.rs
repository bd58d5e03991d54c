//! Who may open a stream, and how many: tickets for browsers, a share per user, a bound
//! per process; and a stream whose user may no longer watch is ended.

use std::time::Duration;

use common::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::LiveStream;
use crate::helpers::{TestApp, assert_problem, test_settings};

async fn ticket(app: &TestApp, token: &str) -> String {
    let response = app
        .post("/api/auth/stream-ticket", Some(token), json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    body["ticket"].as_str().expect("ticket").to_owned()
}

async fn open_with_ticket(app: &TestApp, ticket: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/api/orders/stream?ticket={ticket}", app.address))
        .send()
        .await
        .expect("answered")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_stream_ticket_opens_one_stream_once(pool: PgPool) {
    let app = TestApp::spawn_with_broker(pool).await;
    let (_, alice) = app.vendor_and_customer().await;

    let good = ticket(&app, &alice.token).await;
    let stream = LiveStream::from_response(open_with_ticket(&app, &good).await).await;
    drop(stream);
    let again = open_with_ticket(&app, &good).await;
    let problem = assert_problem(again, StatusCode::UNAUTHORIZED).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("ticket")
    );
    assert_problem(
        open_with_ticket(&app, "made-up").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let anonymous = app
        .client
        .get(format!("{}/api/orders/stream", app.address))
        .send()
        .await
        .expect("answered");
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;

    // Signing out everywhere voids tickets not used yet; expired ones are refused too.
    let unused = ticket(&app, &alice.token).await;
    let stale = ticket(&app, &alice.token).await;
    sqlx::query("UPDATE stream_tickets SET expires_at = now() - interval '1 second' WHERE user_id = $1 AND expires_at = (SELECT min(expires_at) FROM stream_tickets WHERE user_id = $1)")
        .bind(alice.id)
        .execute(&app.pool)
        .await
        .expect("expire one");
    let out = app
        .post("/api/auth/logout-all", Some(&alice.token), json!({}))
        .await;
    assert!(out.status().is_success());
    for refused in [unused, stale] {
        assert_problem(
            open_with_ticket(&app, &refused).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_tickets")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0, "a used ticket is gone, even a refused one");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn streams_beyond_a_users_share_get_429_and_beyond_the_process_503(pool: PgPool) {
    let settings = test_settings(&[("STREAM_MAX_PER_USER", "2"), ("STREAM_MAX_OPEN", "3")]);
    let app = TestApp::start(pool, settings, true).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let path = "/api/orders/stream";
    let first = LiveStream::open(&app, path, &alice.token, None).await;
    let _second = LiveStream::open(&app, path, &alice.token, None).await;

    let third = app.get(path, &alice.token).await;
    assert_eq!(third.headers()["retry-after"], "5");
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS).await;
    let _vendors = LiveStream::open(&app, path, &vendor.token, None).await;
    let full = app.get(path, &vendor.token).await;
    assert!(full.headers().contains_key("retry-after"));
    assert_problem(full, StatusCode::SERVICE_UNAVAILABLE).await;

    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        let response = app.get(path, &alice.token).await;
        if response.status() == StatusCode::OK {
            reopened = Some(LiveStream::from_response(response).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed stream gives its slot back");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_open_stream_ends_when_its_user_may_no_longer_watch(pool: PgPool) {
    let app = TestApp::start(pool, test_settings(&[("STREAM_RECHECK_SECS", "1")]), true).await;
    let admin = app.user(Role::Admin, "admin").await;
    let (vendor, alice) = app.vendor_and_customer().await;
    let path = "/api/orders/stream";
    let mut alices = LiveStream::open(&app, path, &alice.token, None).await;
    let mut vendors = LiveStream::open(&app, path, &vendor.token, None).await;
    let mut admins = LiveStream::open(&app, path, &admin.token, None).await;

    let deactivated = app
        .delete(&format!("/api/users/{}", alice.id), &admin.token)
        .await;
    assert!(deactivated.status().is_success());
    let demoted = app
        .put(
            &format!("/api/users/{}", vendor.id),
            &admin.token,
            json!({ "role": "customer" }),
        )
        .await;
    assert!(demoted.status().is_success());
    for (who, stream) in [("deactivated", &mut alices), ("demoted", &mut vendors)] {
        assert_eq!(stream.next_name().await, "revoked", "{who}");
        assert!(stream.ends_within(Duration::from_secs(1)).await, "{who}");
    }
    assert!(
        admins
            .next_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "a stream its user may still watch stays open"
    );
}
