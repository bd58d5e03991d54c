//! Graceful shutdown of the real `api` binary: SIGTERM lets in-flight requests finish, then
//! the relay publishes what they wrote, then the process exits cleanly; open live streams
//! end at once rather than hold it up. It also refuses to
//! start with the development signing key where others could reach it.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::domain::Role;
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::process::Child;

use crate::{
    helpers::{TestApp, database_url, wait_until},
    live::LiveStream,
};

/// Starts the `api` binary on a free port against the test's database and exchanges, with
/// `env` added; returns it once ready, with its base URL.
async fn start_api(app: &TestApp, pool: &PgPool, env: &[(&str, &str)]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("address")
        .port();
    let broker = &app.settings().broker;
    let api = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .env("DATABASE_URL", database_url(pool))
        .env("AMQP_EXCHANGE", &broker.exchange)
        .env("AMQP_QUEUE", &broker.queue)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_DIR", "")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("api starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the api is ready", Duration::from_secs(20), || async {
        let ready = app.client.get(format!("{base}/health/ready")).send().await;
        ready.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    (api, base)
}

fn terminate(api: &Child) {
    let pid = api.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sigterm_finishes_in_flight_requests_and_drains_the_outbox(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.clean_up_broker_on_drop();
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let order = app.order_id(&alice, "MUG", 1).await;

    let (mut api, base) = start_api(&app, &pool, &[]).await;

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
        api.try_wait().expect("status").is_none(),
        "the api waits for its in-flight request"
    );
    blocker.rollback().await.expect("release the lock");

    assert_eq!(in_flight.await.expect("request task"), StatusCode::ACCEPTED);
    let exit = tokio::time::timeout(Duration::from_secs(15), api.wait())
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
    let (mut api, base) = start_api(&app, &pool, &[("STREAM_MAX_PER_USER", "50")]).await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let response = app
            .client
            .get(format!("{base}/api/orders/stream"))
            .bearer_auth(&staff.token)
            .send()
            .await
            .expect("stream opens");
        streams.push(LiveStream::from_response(response).await);
    }

    let stopping = Instant::now();
    terminate(&api);
    let exit = tokio::time::timeout(Duration::from_secs(10), api.wait())
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
