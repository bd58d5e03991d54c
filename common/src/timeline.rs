//! The order timeline (`order_events`): every request, transition, refusal and notification,
//! written in the same transaction as what it records.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{domain::OrderStatus, events::Actor};

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Created,
    StatusChangeRequested,
    CancelRequested,
    StatusChanged,
    Rejected,
    Notified,
    /// An operator skipped a command that could not be applied (staff only).
    Skipped,
    /// Staff recorded money received or asked for a refund.
    PaymentRequested,
    /// An operation moved the order's money.
    PaymentChanged,
    /// Staff shipped a parcel, or recorded its delivery.
    FulfillmentRequested,
    /// A parcel shipped or arrived.
    FulfillmentChanged,
    /// Units of some lines were cancelled.
    UnitsCancelled,
}

impl EntryKind {
    pub const ALL: [EntryKind; 12] = [
        EntryKind::Created,
        EntryKind::StatusChangeRequested,
        EntryKind::CancelRequested,
        EntryKind::StatusChanged,
        EntryKind::Rejected,
        EntryKind::Notified,
        EntryKind::Skipped,
        EntryKind::PaymentRequested,
        EntryKind::PaymentChanged,
        EntryKind::FulfillmentRequested,
        EntryKind::FulfillmentChanged,
        EntryKind::UnitsCancelled,
    ];

    /// The kind a stored `order_events.kind` names.
    pub fn parse(text: &str) -> Option<EntryKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Created => "created",
            EntryKind::StatusChangeRequested => "status_change_requested",
            EntryKind::CancelRequested => "cancel_requested",
            EntryKind::StatusChanged => "status_changed",
            EntryKind::Rejected => "rejected",
            EntryKind::Notified => "notified",
            EntryKind::Skipped => "skipped",
            EntryKind::PaymentRequested => "payment_requested",
            EntryKind::PaymentChanged => "payment_changed",
            EntryKind::FulfillmentRequested => "fulfillment_requested",
            EntryKind::FulfillmentChanged => "fulfillment_changed",
            EntryKind::UnitsCancelled => "units_cancelled",
        }
    }
}

/// One timeline entry about to be written.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub order_id: Uuid,
    pub kind: EntryKind,
    pub from: Option<OrderStatus>,
    pub to: Option<OrderStatus>,
    pub actor: &'a Actor,
    pub reason: Option<&'a str>,
    pub seq: Option<i64>,
}

pub async fn record(conn: &mut PgConnection, entry: Entry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(entry.order_id)
    .bind(entry.kind.as_str())
    .bind(entry.from)
    .bind(entry.to)
    .bind(entry.actor.user_id)
    .bind(entry.actor.role.as_str())
    .bind(entry.reason)
    .bind(entry.seq)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EntryKind;

    #[test]
    fn every_kind_reads_back_from_its_stored_name() {
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EntryKind::parse("teleported"), None);
    }
}
