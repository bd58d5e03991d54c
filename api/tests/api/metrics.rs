//! Prometheus metrics: present in the exposition text and moving once an order flows.

use std::{collections::HashMap, time::Duration};

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::{
    binary::start_api,
    fault::services::{WorkerProcess, worker_log},
    helpers::{TestApp, wait_until},
};

/// Sums the samples of `name` whose labels include every pair in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let present: HashMap<&str, &str> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key, value.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| present.get(k) == Some(v)) {
            let value: f64 = value.parse().expect("a number");
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("text")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn metrics_are_exported_and_move_when_an_order_flows(pool: PgPool) {
    let app = TestApp::spawn_pipeline(pool, 1).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    let url = format!("{}/metrics", app.address);
    let before = scrape(&app.client, &url).await;
    let created = |text: &str| sample(text, "orderflow_orders_created_total", &[]).unwrap_or(0.0);
    let id = app.order_id(&alice, "PEN", 1).await;
    app.wait_for_status(&alice.token, &id, "confirmed").await;
    let refused = app
        .patch(
            &format!("/api/orders/{id}/status"),
            &vendor.token,
            serde_json::json!({"status": "delivered"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    // The worker's relay publishes its order.status_changed event after the commit, on its own time.
    let published =
        |text: &str| sample(text, "orderflow_outbox_published_total", &[]).unwrap_or(0.0);
    wait_until(
        "both events are published",
        Duration::from_secs(10),
        || async { published(&scrape(&app.client, &url).await) >= 2.0 },
    )
    .await;

    let after = scrape(&app.client, &url).await;
    assert_eq!(created(&after), created(&before) + 1.0);
    let requests = sample(
        &after,
        "orderflow_http_request_duration_seconds_count",
        &[
            ("method", "POST"),
            ("route", "/api/orders"),
            ("status", "2xx"),
        ],
    );
    assert_eq!(requests, Some(1.0), "{after}");
    // Buckets, not a summary: the route template, never the id, labels the series.
    assert!(after.contains("orderflow_http_request_duration_seconds_bucket{"));
    assert!(after.contains(r#"route="/api/orders/{id}/status""#));
    assert!(!after.contains(&id));
    assert_eq!(
        sample(
            &after,
            "orderflow_order_commands_total",
            &[("command", "status_change"), ("outcome", "refused")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "orderflow_worker_messages_total",
            &[("type", "order.created"), ("outcome", "applied")]
        ),
        Some(1.0)
    );
    assert!(sample(&after, "orderflow_worker_queue_lag_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert!(sample(&after, "orderflow_worker_handling_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    // The order's command and the worker's order.status_changed event.
    assert!(published(&after) >= 2.0);
    assert!(sample(&after, "orderflow_outbox_publish_seconds_count", &[]).unwrap_or(0.0) >= 2.0);

    // The worker's own listener serves the same process-wide registry.
    let listener = common::metrics::listen("127.0.0.1:0")
        .await
        .expect("listener");
    let address = listener.local_addr().expect("address");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(common::metrics::serve(listener, stop.clone()));
    let worker_text = scrape(&app.client, &format!("http://{address}/metrics")).await;
    assert!(worker_text.contains("orderflow_worker_messages_total"));
    stop.cancel();
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_outbox_backlog_gauges_show_waiting_and_parked_rows(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "PEN", "1.00", 5).await;
    // No relay runs: both orders' commands wait; one is parked.
    app.order_id(&alice, "PEN", 1).await;
    app.order_id(&alice, "PEN", 1).await;
    sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '42 seconds',
             parked_at = CASE WHEN id = (SELECT min(id) FROM outbox) THEN now() END",
    )
    .execute(&pool)
    .await
    .expect("age");
    let backlog = common::outbox::backlog(&pool).await.expect("backlog");
    assert_eq!((backlog.pending, backlog.parked), (1, 1));
    assert!(
        (41.0..60.0).contains(&backlog.oldest_age_secs),
        "{backlog:?}"
    );
}

/// Alerts on `increase(...)` see a first event only if its series existed before it: the
/// real binaries export the series README's alerts use at zero from start-up.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_series_alerts_use_are_exported_at_zero_from_start_up(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.clean_up_broker_on_drop();
    let api = start_api(&app, &pool, &[]).await;
    let api_text = scrape(&app.client, &format!("{}/metrics", api.base)).await;
    let server_errors = [
        ("method", "POST"),
        ("route", "/api/orders"),
        ("status", "5xx"),
    ];
    assert_eq!(
        sample(
            &api_text,
            "orderflow_http_request_duration_seconds_count",
            &server_errors
        ),
        Some(0.0),
        "{api_text}"
    );
    assert_eq!(
        sample(&api_text, "orderflow_outbox_unconfirmed_total", &[]),
        Some(0.0)
    );

    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let _worker = WorkerProcess::start_with(
        &app,
        &pool,
        &worker_log(&app),
        &[("METRICS_ADDR", &address)],
    );
    let url = format!("http://{address}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let worker_text = loop {
        if let Ok(response) = app.client.get(&url).send().await {
            break response.text().await.expect("text");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never served metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for kind in common::events::EventType::COMMANDS {
        for outcome in ["dead_lettered", "retried", "refused", "duplicate", "early"] {
            let labels = [("type", kind.routing_key()), ("outcome", outcome)];
            assert_eq!(
                sample(&worker_text, "orderflow_worker_messages_total", &labels),
                Some(0.0),
                "{kind:?} {outcome}: {worker_text}"
            );
        }
    }
    assert_eq!(
        sample(&worker_text, "orderflow_worker_redeliveries_total", &[]),
        Some(0.0)
    );
}
