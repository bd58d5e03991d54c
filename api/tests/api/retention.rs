//! Retention: the sweep deletes only rows old enough to be useless, and nothing else.

use common::config::Settings;
use sqlx::PgPool;
use uuid::Uuid;
use worker::retention;

use crate::helpers::{TestApp, test_settings};

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn exec(pool: &PgPool, sql: &'static str, id: Uuid) {
    sqlx::query(sql)
        .bind(id)
        .execute(pool)
        .await
        .expect("statement");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_sweep_deletes_only_what_is_old_enough(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (vendor, alice) = app.vendor_and_customer().await;
    app.product(&vendor, "MUG", "5.00", 10).await;
    let order: Uuid = app.order_id(&alice, "MUG", 1).await.parse().expect("id");
    let db = &app.pool;

    // Outbox: the order's command, published long ago but not yet applied, stays; an old
    // published status change goes; a recent one stays.
    exec(
        db,
        "UPDATE outbox SET published_at = now() - interval '8 days' WHERE order_id = $1",
        order,
    )
    .await;
    exec(db, "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload, published_at)
              VALUES (gen_random_uuid(), $1, 1, 'order.status_changed', '{}', now() - interval '8 days')", order).await;
    exec(db, "INSERT INTO outbox (event_id, order_id, seq, routing_key, payload, published_at)
              VALUES (gen_random_uuid(), $1, 1, 'order.status_changed', '{}', now() - interval '1 day')", order).await;
    // Inbox: one old entry, one recent.
    exec(
        db,
        "INSERT INTO processed_messages (event_id, order_id, processed_at)
              VALUES (gen_random_uuid(), $1, now() - interval '15 days'),
                     (gen_random_uuid(), $1, now() - interval '1 day')",
        order,
    )
    .await;
    // Refresh tokens: alice's live one stays; one long expired goes.
    exec(db, "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
              VALUES (gen_random_uuid(), $1, gen_random_uuid(), sha256(random()::text::bytea), now() - interval '8 days')", alice.id).await;
    // Notifications: read long ago goes; unread old and recently read stay.
    exec(db, "INSERT INTO notifications (id, user_id, kind, message, read_at, created_at)
              VALUES (gen_random_uuid(), $1, 'x', 'old read', now() - interval '91 days', now() - interval '100 days')", alice.id).await;
    exec(
        db,
        "INSERT INTO notifications (id, user_id, kind, message, created_at)
              VALUES (gen_random_uuid(), $1, 'x', 'old unread', now() - interval '100 days')",
        alice.id,
    )
    .await;
    exec(
        db,
        "INSERT INTO notifications (id, user_id, kind, message, read_at)
              VALUES (gen_random_uuid(), $1, 'x', 'read today', now())",
        alice.id,
    )
    .await;

    // Emails: sent long ago goes; given up on long ago goes; still to send stays, however old.
    exec(
        db,
        "INSERT INTO emails (id, order_id, status, recipient, message, created_at, sent_at, given_up_at)
              VALUES (gen_random_uuid(), $1, 'confirmed', 'a@example.com', 'x', now() - interval '40 days', now() - interval '31 days', NULL),
                     (gen_random_uuid(), $1, 'shipped', 'a@example.com', 'x', now() - interval '40 days', NULL, now() - interval '31 days'),
                     (gen_random_uuid(), $1, 'delivered', 'a@example.com', 'x', now() - interval '40 days', NULL, NULL),
                     (gen_random_uuid(), $1, 'refunded', 'a@example.com', 'x', now(), now(), NULL)",
        order,
    )
    .await;

    // Webhook deliveries: older than the retention go, whatever their state.
    exec(
        db,
        "WITH e AS (INSERT INTO webhook_endpoints (id, url, secret)
                    VALUES (gen_random_uuid(), 'https://example.com/', 'whsec_x') RETURNING id)
         INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, order_id, body, status, created_at)
         SELECT e.id, gen_random_uuid(), 'order.created', $1, '{}', s, c FROM e,
              (VALUES ('pending', now() - interval '31 days'), ('failed', now() - interval '31 days'),
                      ('succeeded', now())) AS v (s, c)",
        order,
    )
    .await;

    // Live feed entries older than a week go; expired stream tickets go.
    exec(
        db,
        "INSERT INTO order_feed (id, order_id, customer_id, kind, status, actor_role, created_at)
         SELECT v.id, o.id, o.customer_id, 'status_changed', 'confirmed', 'system', v.at
         FROM orders o, (VALUES (1, now() - interval '8 days'), (2, now())) AS v (id, at)
         WHERE o.id = $1",
        order,
    )
    .await;
    exec(
        db,
        "INSERT INTO stream_tickets (ticket_hash, user_id, token_version, expires_at)
         VALUES (decode('01', 'hex'), $1, 0, now() - interval '1 minute'),
                (decode('02', 'hex'), $1, 0, now() + interval '1 minute')",
        alice.id,
    )
    .await;

    // Stripe events received long ago go; payment calls made long ago go, undone ones stay.
    exec(
        db,
        "INSERT INTO stripe_events (event_id, kind, order_id, received_at)
         VALUES ('evt_old', 'payment_intent.succeeded', $1, now() - interval '100 days'),
                ('evt_new', 'payment_intent.succeeded', $1, now())",
        order,
    )
    .await;
    exec(
        db,
        "INSERT INTO payment_calls (id, order_id, kind, idempotency_key, created_at, done_at)
         VALUES (gen_random_uuid(), $1, 'capture', 'k-old', now() - interval '100 days', now() - interval '100 days'),
                (gen_random_uuid(), $1, 'refund', 'k-undone', now() - interval '100 days', NULL)",
        order,
    )
    .await;

    let settings: Settings = test_settings(&[]);
    let swept = retention::sweep(db, &settings.worker.retention)
        .await
        .expect("sweep");
    assert_eq!(
        swept,
        retention::Swept {
            outbox: 1,
            inbox: 1,
            refresh_tokens: 1,
            read_notifications: 1,
            emails: 2,
            webhook_deliveries: 2,
            live_feed: 1,
            stream_tickets: 1,
            stripe_events: 1,
            payment_calls: 1,
        }
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM outbox WHERE routing_key = 'order.created'"
        )
        .await,
        1,
        "an unapplied command is kept"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM processed_messages").await,
        1
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM emails WHERE status IN ('delivered', 'refunded')"
        )
        .await,
        2,
        "an email still to send, and one sent today, are kept"
    );
    assert_eq!(count(db, "SELECT count(*) FROM notifications").await, 2);
    assert!(
        count(db, "SELECT count(*) FROM refresh_tokens").await >= 1,
        "live sessions are kept"
    );

    // Once the command is applied, its old outbox row may go too.
    exec(
        db,
        "UPDATE orders SET applied_seq = last_seq WHERE id = $1",
        order,
    )
    .await;
    let swept = retention::sweep(db, &settings.worker.retention)
        .await
        .expect("sweep");
    assert_eq!(swept.outbox, 1);
    assert_eq!(swept.total(), 1, "a second sweep finds nothing else");
}
