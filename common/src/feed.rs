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
    events::{
        Actor, Envelope, EventType, FulfillmentChanged, PaymentChanged, StallChanged,
        StatusChanged, UnitsCancelled,
    },
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
    /// An operation moved the order's money (its `reason` is the customer's sentence).
    PaymentChanged,
    /// A parcel shipped or arrived (its `reason` is the customer's sentence).
    FulfillmentChanged,
    /// Units were cancelled (its `reason` is the customer's sentence).
    UnitsCancelled,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::StatusChanged => "status_changed",
            FeedKind::Stalled => "stalled",
            FeedKind::Resumed => "resumed",
            FeedKind::PaymentChanged => "payment_changed",
            FeedKind::FulfillmentChanged => "fulfillment_changed",
            FeedKind::UnitsCancelled => "units_cancelled",
        }
    }

    /// Whether customers are told of it (stalls are the store's business).
    pub fn shown_to_customers(self) -> bool {
        !matches!(self, FeedKind::Stalled | FeedKind::Resumed)
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
        let (entry, feed_id) = describe(envelope)?;
        Some(FeedEntry {
            id: feed_id?,
            ..entry
        })
    }
}

/// The entry an event announces (its `id` still 0) and its number, if it has one yet.
fn describe(envelope: &Envelope) -> Option<(FeedEntry, Option<i64>)> {
    let (kind, from_status, status, tracking_number, reason, customer_id, feed_id) =
        match envelope.event_type {
            EventType::StatusChanged => {
                let change = StatusChanged::deserialize(&envelope.payload).ok()?;
                (
                    FeedKind::StatusChanged,
                    Some(change.from),
                    change.to,
                    change.tracking_number,
                    change.reason,
                    change.customer_id?,
                    change.feed_id,
                )
            }
            EventType::StallChanged => {
                let stall = StallChanged::deserialize(&envelope.payload).ok()?;
                let kind = match stall.stalled_reason {
                    Some(_) => FeedKind::Stalled,
                    None => FeedKind::Resumed,
                };
                (
                    kind,
                    None,
                    stall.status,
                    None,
                    stall.stalled_reason,
                    stall.customer_id,
                    stall.feed_id,
                )
            }
            EventType::PaymentChanged => {
                let payment = PaymentChanged::deserialize(&envelope.payload).ok()?;
                (
                    FeedKind::PaymentChanged,
                    None,
                    payment.status,
                    None,
                    Some(payment.message),
                    payment.customer_id,
                    payment.feed_id,
                )
            }
            EventType::FulfillmentChanged => {
                let parcel = FulfillmentChanged::deserialize(&envelope.payload).ok()?;
                (
                    FeedKind::FulfillmentChanged,
                    None,
                    parcel.order_status,
                    Some(parcel.tracking_number),
                    Some(parcel.message),
                    parcel.customer_id,
                    parcel.feed_id,
                )
            }
            EventType::UnitsCancelled => {
                let cancelled = UnitsCancelled::deserialize(&envelope.payload).ok()?;
                (
                    FeedKind::UnitsCancelled,
                    None,
                    cancelled.order_status,
                    None,
                    Some(cancelled.message),
                    cancelled.customer_id,
                    cancelled.feed_id,
                )
            }
            _ => return None,
        };
    let entry = FeedEntry {
        id: 0,
        order_id: envelope.order_id,
        customer_id,
        kind,
        from_status,
        status,
        tracking_number,
        actor_role: envelope.actor.role.as_str().to_owned(),
        reason,
        created_at: envelope.occurred_at,
    };
    Some((entry, feed_id))
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
/// the feed and hands them, numbered, to the outbox relay — in one statement, the last of
/// the caller's transaction: the lock it takes is held until the transaction commits, which
/// is what keeps the feed's numbers in commit order, and it is held for no longer.
pub async fn announce(conn: &mut PgConnection, events: Vec<Envelope>) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let entries = events
        .iter()
        .map(|event| describe(event).map(|(entry, _)| entry))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| sqlx::Error::Protocol("an event that is not a feed entry".into()))?;
    let payloads = events
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // Every use of `numbered` reads `locked` first, so the lock precedes the numbers.
    sqlx::query(
        "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock($1)),
         numbered AS MATERIALIZED (
             SELECT setval('order_feed_id_seq', nextval('order_feed_id_seq') + $2 - 1) - $2 AS base
             FROM locked
         ), fed AS (
             INSERT INTO order_feed (id, order_id, customer_id, kind, from_status, status,
                                     tracking_number, actor_role, reason, created_at)
             SELECT n.base + u.n, u.order_id, u.customer_id, u.kind, u.from_status::order_status,
                    u.status::order_status, u.tracking_number, u.actor_role, u.reason, u.created_at
             FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::timestamptz[]) WITH ORDINALITY
                 AS u(order_id, customer_id, kind, from_status, status, tracking_number,
                      actor_role, reason, created_at, n),
                  numbered n
         )
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload)
         SELECT u.event_id, u.order_id, u.seq, u.routing_key,
                jsonb_set(u.payload, '{payload,feed_id}', to_jsonb(n.base + u.n))
         FROM unnest($12::uuid[], $13::uuid[], $14::bigint[], $15::text[], $16::jsonb[]) WITH ORDINALITY
             AS u(event_id, order_id, seq, routing_key, payload, n),
              numbered n",
    )
    .bind(FEED_LOCK)
    .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
    .bind(entries.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.customer_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.from_status.map(|s| s.as_str())).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.tracking_number.as_deref()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.actor_role.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.reason.as_deref()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.order_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.routing_key()).collect::<Vec<_>>())
    .bind(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// The entries numbered in `(after, up_to]` within `scope`, oldest first, at most `limit`.
/// One statement per scope, so each reads its own index whatever plan is cached.
pub async fn after(
    conn: &mut PgConnection,
    after: i64,
    up_to: i64,
    scope: Scope,
    limit: i64,
) -> sqlx::Result<Vec<FeedEntry>> {
    macro_rules! select {
        ($condition:literal) => {
            concat!(
                "SELECT id, order_id, customer_id, kind, from_status, status, tracking_number,
                        actor_role, reason, created_at
                 FROM order_feed WHERE id > $1 AND id <= $2",
                $condition,
                " ORDER BY id LIMIT $3"
            )
        };
    }
    let (statement, key) = match scope {
        Scope::Everything => (select!(""), None),
        Scope::Customer(customer) => (select!(" AND customer_id = $4"), Some(customer)),
        Scope::Order(order) => (select!(" AND order_id = $4"), Some(order)),
    };
    let query = sqlx::query_as(statement)
        .bind(after)
        .bind(up_to)
        .bind(limit);
    match key {
        Some(key) => query.bind(key).fetch_all(conn).await,
        None => query.fetch_all(conn).await,
    }
}

/// The newest entry's number (0 when the feed is empty).
pub async fn newest(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM order_feed")
        .fetch_one(conn)
        .await
}

/// Which entries a read selects.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Everything,
    /// One customer's orders.
    Customer(Uuid),
    /// One order.
    Order(Uuid),
}
