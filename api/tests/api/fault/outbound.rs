//! A worker killed while it sends order emails or webhooks: nothing is lost, and what is
//! repeated is recognisably the same message (same Message-ID, same `webhook-id`).

use std::{collections::HashSet, time::Duration};

use sqlx::PgPool;
use uuid::Uuid;

use super::{place_orders, scalar, services::WorkerProcess, shop, wait_until_none_pending};
use crate::{
    helpers::{TestApp, wait_until},
    mail::{SmtpServer, free_port, header},
    webhooks::Receiver,
};

/// Scenario: the worker sending order emails is killed mid-send (an SMTP server that takes
/// 0.3 s per message). Every email still arrives; one caught mid-send may arrive twice, but
/// only ever as the same email (same Message-ID).
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_worker_killed_mid_send_loses_no_email_and_repeats_one_only_as_itself(pool: PgPool) {
    const ORDERS: usize = 20;
    let smtp = SmtpServer::start_on(free_port(), true).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = [("SMTP_URL", smtp_url.as_str()), ("EMAIL_CLAIM_SECS", "2")];
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 100).await;
    let log = std::env::temp_dir().join(format!("{}.log", app.settings().broker.queue));
    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    place_orders(&app, &alice, ORDERS, 4).await;
    wait_until("a few emails are sent", Duration::from_secs(30), || async {
        smtp.messages().len() >= 3
    })
    .await;
    worker.kill_hard().await;
    let unsent = scalar(&pool, "SELECT count(*) FROM emails WHERE sent_at IS NULL").await;
    assert!(unsent > 0, "killed with emails still to send");

    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    wait_until_none_pending(&pool, Duration::from_secs(60)).await;
    wait_until("every email is sent", Duration::from_secs(60), || async {
        scalar(&pool, "SELECT count(*) FROM emails WHERE sent_at IS NULL").await == 0
    })
    .await;
    let ids: std::collections::HashSet<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM emails")
            .fetch_all(&pool)
            .await
            .expect("emails")
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    assert_eq!(ids.len(), ORDERS, "one email per confirmation");
    let received: Vec<String> = smtp
        .messages()
        .iter()
        .map(|message| {
            let id = header(message, "Message-ID");
            id.trim_start_matches('<')
                .split('@')
                .next()
                .expect("id")
                .to_owned()
        })
        .collect();
    let distinct: std::collections::HashSet<String> = received.iter().cloned().collect();
    assert_eq!(distinct, ids, "every email arrived, and nothing else");
    let repeats = received.len() - distinct.len();
    assert!(
        repeats <= 1,
        "only an email caught mid-send repeats: {repeats}"
    );
    let status = worker.terminate().await;
    assert!(status.success(), "worker exited with {status}");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "fault mail: {ORDERS} emails, worker killed after {unsent} unsent; {repeats} sent twice"
    );
}

/// Scenario: the worker delivering webhooks is killed mid-delivery (a receiver that takes
/// 0.3 s per request). Every event still arrives; those caught mid-delivery may arrive
/// twice, but only under their own `webhook-id`.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_worker_killed_mid_delivery_loses_no_webhook_and_repeats_one_only_as_itself(
    pool: PgPool,
) {
    const ORDERS: usize = 20;
    let receiver = Receiver::start(&[]).await;
    receiver.take_time(Duration::from_millis(300));
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, secret, event_types)
         VALUES ($1, $2, $3, '{order.created}')",
    )
    .bind(Uuid::now_v7())
    .bind(&receiver.url)
    .bind(common::webhooks::generate_secret())
    .execute(&pool)
    .await
    .expect("endpoint");
    let env = [
        ("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1"),
        ("WEBHOOK_TIMEOUT", "1s"),
        ("WEBHOOK_CONCURRENCY", "2"),
    ];
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 100).await;
    let log = std::env::temp_dir().join(format!("{}.log", app.settings().broker.queue));
    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    place_orders(&app, &alice, ORDERS, 4).await;
    wait_until("a few webhooks arrive", Duration::from_secs(30), || async {
        receiver.received().len() >= 3
    })
    .await;
    worker.kill_hard().await;
    let unsent = scalar(
        &pool,
        "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'",
    )
    .await;

    let worker = WorkerProcess::start_with(&app, &pool, &log, &env);
    wait_until_none_pending(&pool, Duration::from_secs(60)).await;
    wait_until(
        "every webhook is delivered",
        Duration::from_secs(60),
        || async {
            scalar(
                &pool,
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            )
            .await
                == ORDERS as i64
        },
    )
    .await;
    let ids: HashSet<String> =
        sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM webhook_deliveries")
            .fetch_all(&pool)
            .await
            .expect("deliveries")
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    assert_eq!(ids.len(), ORDERS, "one delivery per order placed");
    let received: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.header("webhook-id").to_owned())
        .collect();
    let distinct: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(distinct, ids, "every event arrived, and nothing else");
    let repeats = received.len() - distinct.len();
    assert!(
        repeats <= 2,
        "only the two deliveries under way can repeat: {repeats}"
    );
    let status = worker.terminate().await;
    assert!(status.success(), "worker exited with {status}");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "fault webhooks: {ORDERS} deliveries, worker killed with {unsent} not yet delivered; {repeats} sent twice"
    );
}
