//! Retention: deletes rows that only ever grow once they are old enough to be useless —
//! published outbox rows of applied commands, inbox rows, long-expired refresh tokens, read
//! notifications, order emails long sent, old live feed entries, expired stream tickets
//! and expired sign-in budgets — in bounded batches, so no sweep holds locks
//! or bloats a transaction. Run by the elected watchdog after its round.

use std::time::Duration;

use common::config::RetentionSettings;
use sqlx::PgPool;

/// Rows deleted per statement.
const BATCH: i64 = 1_000;
/// Statements per table per sweep, so one sweep is bounded even after a long pause.
const MAX_BATCHES: u32 = 100;

/// Rows deleted by one sweep, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub outbox: u64,
    pub inbox: u64,
    pub refresh_tokens: u64,
    pub read_notifications: u64,
    pub emails: u64,
    pub webhook_deliveries: u64,
    pub live_feed: u64,
    pub stream_tickets: u64,
    pub stripe_events: u64,
    pub payment_calls: u64,
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.outbox
            + self.inbox
            + self.refresh_tokens
            + self.read_notifications
            + self.emails
            + self.webhook_deliveries
            + self.live_feed
            + self.stream_tickets
            + self.stripe_events
            + self.payment_calls
    }
}

/// Each statement deletes up to `$2` rows older than `$1` seconds.
const OUTBOX: &str = "DELETE FROM outbox WHERE id IN (
     SELECT o.id FROM outbox o LEFT JOIN orders ord ON ord.id = o.order_id
     WHERE o.published_at < now() - make_interval(secs => $1)
       AND (o.routing_key IN ('order.status_changed', 'order.stall_changed', 'order.payment_changed') OR ord.id IS NULL OR ord.applied_seq >= o.seq)
     LIMIT $2)";
const INBOX: &str = "DELETE FROM processed_messages WHERE event_id IN (
     SELECT event_id FROM processed_messages
     WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)";
const REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens WHERE id IN (
     SELECT id FROM refresh_tokens
     WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)";
const READ_NOTIFICATIONS: &str = "DELETE FROM notifications WHERE id IN (
     SELECT id FROM notifications
     WHERE read_at < now() - make_interval(secs => $1) LIMIT $2)";
const EMAILS: &str = "DELETE FROM emails WHERE id IN (
     SELECT id FROM emails
     WHERE coalesce(sent_at, given_up_at) < now() - make_interval(secs => $1) LIMIT $2)";
/// Whatever their state: one still pending after this long belongs to an endpoint left
/// disabled, and its event is long stale.
const WEBHOOK_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE (endpoint_id, event_id) IN (
     SELECT endpoint_id, event_id FROM webhook_deliveries
     WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)";

const LIVE_FEED: &str = "DELETE FROM order_feed WHERE id IN (
     SELECT id FROM order_feed
     WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)";
/// Tickets live a minute; an unused one is useless once expired.
const STREAM_TICKETS: &str = "DELETE FROM stream_tickets WHERE ticket_hash IN (
     SELECT ticket_hash FROM stream_tickets
     WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)";

/// Kept as long as the inbox: Stripe retries an event for up to three days, and one
/// redelivered later still applies nothing twice (the ledger's references refuse it).
const STRIPE_EVENTS: &str = "DELETE FROM stripe_events WHERE event_id IN (
     SELECT event_id FROM stripe_events
     WHERE received_at < now() - make_interval(secs => $1) LIMIT $2)";
/// Calls made (their answer is in the ledger and the outbox), kept as long as the outbox.
const PAYMENT_CALLS: &str = "DELETE FROM payment_calls WHERE id IN (
     SELECT id FROM payment_calls
     WHERE done_at < now() - make_interval(secs => $1) LIMIT $2)";

pub async fn sweep(pool: &PgPool, settings: &RetentionSettings) -> sqlx::Result<Swept> {
    Ok(Swept {
        outbox: delete_older(pool, OUTBOX, settings.outbox).await?,
        inbox: delete_older(pool, INBOX, settings.inbox).await?,
        refresh_tokens: delete_older(pool, REFRESH_TOKENS, settings.refresh_tokens).await?,
        read_notifications: delete_older(pool, READ_NOTIFICATIONS, settings.read_notifications)
            .await?,
        emails: delete_older(pool, EMAILS, settings.emails).await?,
        webhook_deliveries: delete_older(pool, WEBHOOK_DELIVERIES, settings.webhook_deliveries)
            .await?,
        live_feed: delete_older(pool, LIVE_FEED, settings.live_feed).await?,
        stream_tickets: delete_older(pool, STREAM_TICKETS, Duration::ZERO).await?,
        stripe_events: delete_older(pool, STRIPE_EVENTS, settings.inbox).await?,
        payment_calls: delete_older(pool, PAYMENT_CALLS, settings.outbox).await?,
    })
}

async fn delete_older(pool: &PgPool, statement: &'static str, age: Duration) -> sqlx::Result<u64> {
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let deleted = sqlx::query(statement)
            .bind(age.as_secs_f64())
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}
