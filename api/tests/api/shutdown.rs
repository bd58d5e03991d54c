//! Graceful shutdown of the real `api` binary: SIGTERM lets in-flight requests finish, then
//! the relay publishes what they wrote, then the process exits cleanly; open live streams
//! end at once rather than hold it up, and no ticket or token reaches the log. It also
//! refuses to start with the development signing key where others could reach it.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::domain::Role;
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::{
    binary::{start_api, terminate},
    helpers::TestApp,
    live::LiveStream,
};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sigterm_finishes_in_flight_requests_and_drains_the_outbox(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.clean_up_broker_on_drop();
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let order = app.order_id(&alice, "MUG", 1).await;

    let mut api = start_api(&app, &pool, &[]).await;
    let base = api.base.clone();

    // A cancellation that is still waiting for a row lock when SIGTERM arrives.
    let mut blocker = pool.begin().await.expect("tx");
    sqlx::query("SELECT id FROM orders FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let in_flight = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            format!("{base}/api/orders/{order}"),
            vendor.token.clone(),
        );
        async move {
            client
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answered")
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        api.process.try_wait().expect("status").is_none(),
        "the api waits for its in-flight request"
    );
    blocker.rollback().await.expect("release the lock");

    assert_eq!(in_flight.await.expect("request task"), StatusCode::ACCEPTED);
    let exit = tokio::time::timeout(Duration::from_secs(15), api.process.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(exit.success(), "api exited with {exit}");
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        unpublished, 0,
        "the relay published the cancellation before exiting"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sigterm_with_50_open_streams_ends_them_and_exits_within_seconds(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.clean_up_broker_on_drop();
    let staff = app.user(Role::Vendor, "vendor").await;
    let env = [
        ("STREAM_MAX_PER_USER", "50"),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
    ];
    let mut api = start_api(&app, &pool, &env).await;
    let ticket: serde_json::Value = app
        .client
        .post(format!("{}/api/auth/stream-ticket", api.base))
        .bearer_auth(&staff.token)
        .send()
        .await
        .expect("ticket")
        .json()
        .await
        .expect("json");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let mut streams = Vec::new();
    for n in 0..50 {
        // One opened as a browser does, with a ticket in the URL; the rest with the token.
        let request = if n == 0 {
            app.client
                .get(format!("{}/api/orders/stream?ticket={ticket}", api.base))
        } else {
            app.client
                .get(format!("{}/api/orders/stream", api.base))
                .bearer_auth(&staff.token)
        };
        let response = request.send().await.expect("stream opens");
        streams.push(LiveStream::from_response(response).await);
    }

    let stopping = Instant::now();
    terminate(&api);
    let exit = tokio::time::timeout(Duration::from_secs(10), api.process.wait())
        .await
        .expect("exits although streams were open")
        .expect("status");
    let took = stopping.elapsed();
    assert!(exit.success(), "api exited with {exit}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for stream in &mut streams {
        assert!(stream.ends_within(Duration::from_secs(1)).await);
    }
    eprintln!("50 open streams: exited {took:?} after SIGTERM");

    let logs = api.output.lock().expect("output").clone();
    assert!(
        logs.contains("/api/orders/stream"),
        "the streams were logged: {logs}"
    );
    for secret in [&ticket, &staff.token] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn the_api_refuses_the_development_key_beyond_loopback() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .env_remove("SECRET_KEY")
        .env("ENVIRONMENT", "development")
        .env("HOST", "0.0.0.0")
        .env("LOG_DIR", "")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("api runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SECRET_KEY"), "{stderr}");
    assert!(
        stderr.contains("openssl rand"),
        "the message says how to fix it: {stderr}"
    );
}
