//! The live order feed (`order_feed`): one row per applied transition and per stall flagged
//! or cleared, numbered in commit order, each announced on the broker by an event that
//! carries its number (`feed_id`). The api's live streams forward those events as they
//! come, fill a gap in them from this table, and replay it after a reconnect.
//!
//! Rows are numbered under a transaction-scoped advisory lock taken just before commit, so
//! transactions commit in the order of their numbers: a reader that sees row N sees every
//! row numbered before it, and a replay of "everything after N" never misses a row that
//! commits later with a smaller number.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::OrderStatus,
    events::{Actor, Envelope, EventType, StallChanged, StatusChanged},
};

/// Fixed key of the advisory lock that numbers feed rows ("orderfed").
const FEED_LOCK: i64 = 0x6f72_6465_7266_6564;

/// What a feed entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FeedKind {
    /// A transition (cancellations included) was applied.
    StatusChanged,
    /// The order stopped moving: its next command cannot be applied (staff only).
    Stalled,
    /// Staff re-drove or skipped the command it was stalled on (staff only).
    Resumed,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::StatusChanged => "status_changed",
            FeedKind::Stalled => "stalled",
            FeedKind::Resumed => "resumed",
        }
    }

    /// Whether customers are told of it (stalls are the store's business).
    pub fn shown_to_customers(self) -> bool {
        self == FeedKind::StatusChanged
    }
}

/// One entry of the feed, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FeedEntry {
    pub id: i64,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub kind: FeedKind,
    pub from_status: Option<OrderStatus>,
    pub status: OrderStatus,
    pub tracking_number: Option<String>,
    pub actor_role: String,
    /// The staff-side reason (a transition's note, a stall's cause).
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl FeedEntry {
    /// The entry an announcing event carries; `None` for other events, and for events
    /// written before the feed existed (they have no `feed_id`).
    pub fn from_envelope(envelope: &Envelope) -> Option<FeedEntry> {
        let (kind, from_status, status, tracking_number, reason, customer_id, feed_id) =
            match envelope.event_type {
                EventType::StatusChanged => {
                    let change: StatusChanged =
                        serde_json::from_value(envelope.payload.clone()).ok()?;
                    (
                        FeedKind::StatusChanged,
                        Some(change.from),
                        change.to,
                        change.tracking_number,
                        change.reason,
                        change.customer_id?,
                        change.feed_id?,
                    )
                }
                EventType::StallChanged => {
                    let stall: StallChanged =
                        serde_json::from_value(envelope.payload.clone()).ok()?;
                    let kind = match stall.stalled_reason {
                        Some(_) => FeedKind::Stalled,
                        None => FeedKind::Resumed,
                    };
                    let feed_id = stall.feed_id?;
                    (
                        kind,
                        None,
                        stall.status,
                        None,
                        stall.stalled_reason,
                        stall.customer_id,
                        feed_id,
                    )
                }
                _ => return None,
            };
        Some(FeedEntry {
            id: feed_id,
            order_id: envelope.order_id,
            customer_id,
            kind,
            from_status,
            status,
            tracking_number,
            actor_role: envelope.actor.role.clone(),
            reason,
            created_at: envelope.occurred_at,
        })
    }
}

/// The event announcing that an order was flagged stalled (`reason`) or resumed (`None`).
pub fn stall_changed(
    order_id: Uuid,
    customer_id: Uuid,
    status: OrderStatus,
    seq: i64,
    actor: Actor,
    correlation_id: &str,
    reason: Option<String>,
) -> Envelope {
    Envelope::new(
        EventType::StallChanged,
        order_id,
        seq,
        actor,
        correlation_id,
        StallChanged {
            customer_id,
            status,
            stalled_reason: reason,
            feed_id: None,
        },
    )
}

/// Numbers `events` (transitions and stall changes, in the order given), records them in
/// the feed and hands them to the outbox relay, as the last statements of the caller's
/// transaction: the lock they take is held until it commits, which is what keeps the feed's
/// numbers in commit order.
pub async fn announce(conn: &mut PgConnection, mut events: Vec<Envelope>) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    // The CTE makes the lock come first: its row must exist before the outer select runs.
    let last: i64 = sqlx::query_scalar(
        "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock($1))
         SELECT setval('order_feed_id_seq', nextval('order_feed_id_seq') + $2 - 1) FROM locked",
    )
    .bind(FEED_LOCK)
    .bind(count)
    .fetch_one(&mut *conn)
    .await?;
    let entries: Vec<FeedEntry> = events
        .iter_mut()
        .zip(last - count + 1..)
        .filter_map(|(event, id)| {
            event.payload["feed_id"] = serde_json::json!(id);
            FeedEntry::from_envelope(event)
        })
        .collect();
    let payloads = events
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "WITH fed AS (
             INSERT INTO order_feed (id, order_id, customer_id, kind, from_status, status,
                                     tracking_number, actor_role, reason, created_at)
             SELECT u.id, u.order_id, u.customer_id, u.kind, u.from_status::order_status,
                    u.status::order_status, u.tracking_number, u.actor_role, u.reason, u.created_at
             FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::timestamptz[])
                 AS u(id, order_id, customer_id, kind, from_status, status, tracking_number,
                      actor_role, reason, created_at)
         )
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT * FROM unnest($11::uuid[], $12::uuid[], $13::bigint[], $14::text[], $15::jsonb[])",
    )
    .bind(entries.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.customer_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(
        entries
            .iter()
            .map(|e| e.from_status.map(|s| s.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.tracking_number.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.actor_role.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.reason.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.event_type.routing_key())
            .collect::<Vec<_>>(),
    )
    .bind(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// The entries after `after` that `filter` admits, oldest first, at most `limit`.
pub async fn after(
    conn: &mut PgConnection,
    after: i64,
    up_to: Option<i64>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<FeedEntry>> {
    sqlx::query_as(
        "SELECT id, order_id, customer_id, kind, from_status, status, tracking_number,
                actor_role, reason, created_at
         FROM order_feed
         WHERE id > $1 AND ($2::bigint IS NULL OR id <= $2)
           AND ($3::uuid IS NULL OR customer_id = $3) AND ($4::uuid IS NULL OR order_id = $4)
         ORDER BY id LIMIT $5",
    )
    .bind(after)
    .bind(up_to)
    .bind(filter.customer_id)
    .bind(filter.order_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The newest entry's number (0 when the feed is empty).
pub async fn newest(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM order_feed")
        .fetch_one(conn)
        .await
}

/// Which entries a reader may see, as the database can select them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub customer_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
}
