//! Event envelopes carried on RabbitMQ: the public message contract (see docs/messages.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    ActorKind, FulfillmentStatus, Money, OrderStatus, PaymentStatus, fulfillment::LineQuantity,
};

/// What happened or is asked for; also the AMQP routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// A customer placed an order; the worker reserves stock and confirms or cancels it.
    #[serde(rename = "order.created")]
    OrderCreated,
    /// Staff asked for a status change (processing, shipped, delivered, refunded).
    #[serde(rename = "order.status_change_requested")]
    StatusChangeRequested,
    /// The customer or staff asked to cancel the order.
    #[serde(rename = "order.cancel_requested")]
    CancelRequested,
    /// A transition was applied (a fact for integrators; workers do not consume it).
    #[serde(rename = "order.status_changed")]
    StatusChanged,
    /// An order was flagged stalled, or staff resumed it (a fact for live streams).
    #[serde(rename = "order.stall_changed")]
    StallChanged,
    /// Staff recorded money received outside a payment provider (cash, an invoice paid).
    #[serde(rename = "order.payment_recorded")]
    PaymentRecorded,
    /// Staff asked to give money back.
    #[serde(rename = "order.refund_requested")]
    RefundRequested,
    /// An operation moved the order's money (a fact for integrators).
    #[serde(rename = "order.payment_changed")]
    PaymentChanged,
    /// Staff asked the payment provider to take what it holds for the order now, before
    /// shipping (which captures otherwise).
    #[serde(rename = "order.capture_requested")]
    CaptureRequested,
    /// The payment provider said what it did with the order's money (a webhook, or the
    /// answer to a call): the worker applies what its ledger does not hold yet.
    #[serde(rename = "order.payment_observed")]
    PaymentObserved,
    /// Staff shipped a parcel with some units of some lines.
    #[serde(rename = "order.fulfillment_requested")]
    FulfillmentRequested,
    /// Staff recorded what became of a parcel (delivered).
    #[serde(rename = "order.fulfillment_update_requested")]
    FulfillmentUpdateRequested,
    /// A parcel shipped or arrived (a fact for integrators).
    #[serde(rename = "order.fulfillment_changed")]
    FulfillmentChanged,
    /// Staff or the customer asked to cancel some units of some lines.
    #[serde(rename = "order.units_cancel_requested")]
    UnitsCancelRequested,
    /// Units were cancelled; the order's total shrank (a fact for integrators).
    #[serde(rename = "order.units_cancelled")]
    UnitsCancelled,
}

impl EventType {
    /// Every type this version knows.
    pub const ALL: [EventType; 15] = [
        EventType::OrderCreated,
        EventType::StatusChangeRequested,
        EventType::CancelRequested,
        EventType::StatusChanged,
        EventType::StallChanged,
        EventType::PaymentRecorded,
        EventType::RefundRequested,
        EventType::PaymentChanged,
        EventType::CaptureRequested,
        EventType::PaymentObserved,
        EventType::FulfillmentRequested,
        EventType::FulfillmentUpdateRequested,
        EventType::FulfillmentChanged,
        EventType::UnitsCancelRequested,
        EventType::UnitsCancelled,
    ];

    /// The types the worker consumes, each applied in `seq` order per order.
    pub const COMMANDS: [EventType; 10] = [
        EventType::OrderCreated,
        EventType::StatusChangeRequested,
        EventType::CancelRequested,
        EventType::PaymentRecorded,
        EventType::RefundRequested,
        EventType::CaptureRequested,
        EventType::PaymentObserved,
        EventType::FulfillmentRequested,
        EventType::FulfillmentUpdateRequested,
        EventType::UnitsCancelRequested,
    ];

    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::OrderCreated => "order.created",
            EventType::StatusChangeRequested => "order.status_change_requested",
            EventType::CancelRequested => "order.cancel_requested",
            EventType::StatusChanged => "order.status_changed",
            EventType::StallChanged => "order.stall_changed",
            EventType::PaymentRecorded => "order.payment_recorded",
            EventType::RefundRequested => "order.refund_requested",
            EventType::PaymentChanged => "order.payment_changed",
            EventType::CaptureRequested => "order.capture_requested",
            EventType::PaymentObserved => "order.payment_observed",
            EventType::FulfillmentRequested => "order.fulfillment_requested",
            EventType::FulfillmentUpdateRequested => "order.fulfillment_update_requested",
            EventType::FulfillmentChanged => "order.fulfillment_changed",
            EventType::UnitsCancelRequested => "order.units_cancel_requested",
            EventType::UnitsCancelled => "order.units_cancelled",
        }
    }

    /// Commands must reach the worker queue; an unroutable one is a fault, not a drop.
    pub fn is_command(self) -> bool {
        Self::COMMANDS.contains(&self)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user, or `None` for the system (the worker itself).
    pub user_id: Option<Uuid>,
    /// `customer`, `vendor`, `admin` or `system`.
    pub role: ActorKind,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            user_id: None,
            role: ActorKind::System,
        }
    }

    /// A signed-in user acting in their role.
    pub fn user(id: uuid::Uuid, role: crate::domain::Role) -> Self {
        Self {
            user_id: Some(id),
            role: ActorKind::User(role),
        }
    }
}

/// The envelope version this code writes and the newest it reads. Adding a field keeps the
/// version (readers ignore fields they do not know); removing or changing the meaning of
/// one bumps it (see docs/messages.md).
pub const SCHEMA_VERSION: u32 = 1;

fn first_schema_version() -> u32 {
    1
}

/// The JSON body of every message. Unknown fields are ignored, so a newer writer can add
/// fields during a rolling deploy without older readers refusing its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The envelope's version; absent in messages written before it existed (version 1).
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
    /// Unique per event; also the AMQP `message_id`; consumers dedupe on it.
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub order_id: Uuid,
    /// Per-order sequence number assigned in the writing transaction.
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    /// The HTTP request id that started the chain.
    pub correlation_id: String,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A new event with a fresh v7 id, stamped now.
    pub fn new(
        event_type: EventType,
        order_id: Uuid,
        seq: i64,
        actor: Actor,
        correlation_id: impl Into<String>,
        payload: impl Serialize,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            event_type,
            order_id,
            seq,
            occurred_at: Utc::now(),
            actor,
            correlation_id: correlation_id.into(),
            payload: serde_json::to_value(payload).unwrap_or_default(),
        }
    }

    /// Reads a message body, saying precisely why one cannot be read.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) if envelope.schema_version > SCHEMA_VERSION => {
                Err(DecodeError::NewerVersion(envelope.schema_version))
            }
            Ok(envelope) => Ok(envelope),
            Err(error) => {
                // A well-formed envelope of a type this version does not know deserves its
                // own reason: it is a deploy-order problem, not garbage.
                #[derive(Deserialize)]
                struct Probe {
                    #[serde(rename = "type")]
                    event_type: Option<String>,
                }
                let unknown = serde_json::from_slice::<Probe>(body)
                    .ok()
                    .and_then(|probe| probe.event_type)
                    .filter(|name| !EventType::ALL.iter().any(|t| t.routing_key() == name));
                Err(match unknown {
                    Some(name) => DecodeError::UnknownType(name),
                    None => DecodeError::Malformed(error.to_string()),
                })
            }
        }
    }
}

/// Why a message body is not an envelope this version can apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("envelope schema version {0} is newer than this reader understands ({SCHEMA_VERSION})")]
    NewerVersion(u32),
}

/// Payload of `order.created`: a summary; the order itself is in the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub customer_id: Uuid,
    pub total_amount: Money,
    pub currency: String,
    pub items_count: i32,
}

/// Payload of `order.status_change_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChangeRequested {
    pub status: OrderStatus,
    pub note: Option<String>,
    pub tracking_number: Option<String>,
}

/// Payload of `order.cancel_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequested {
    pub reason: Option<String>,
}

/// Payload of `order.status_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub reason: Option<String>,
    pub tracking_number: Option<String>,
    /// The order's customer (absent in events written before live streams existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// The change's number in the live order feed (see `feed`), set as it is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<i64>,
}

/// Payload of `order.stall_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallChanged {
    pub customer_id: Uuid,
    /// The order's status, which a stall does not change.
    pub status: OrderStatus,
    /// Why the order stopped moving; `None` when staff resumed it.
    pub stalled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<i64>,
}

/// Payload of `order.payment_recorded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecorded {
    pub amount: Money,
    /// The shop's reference for the money (a receipt or bank transfer number).
    pub reference: Option<String>,
    pub note: Option<String>,
}

/// Payload of `order.refund_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub amount: Money,
    pub reason: Option<String>,
}

/// Payload of `order.capture_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequested {
    pub note: Option<String>,
}

/// Payload of `order.payment_observed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentObserved {
    /// Where it came from: `stripe event evt_…`, or the call whose answer it is.
    pub source: String,
    /// The operations what the provider said implies, each under its lasting reference.
    pub operations: Vec<crate::stripe::Observed>,
    /// A refund the provider refused: the room it took among accepted refunds is given
    /// back (minor units; 0 otherwise).
    #[serde(default)]
    pub refund_refused: i64,
}

/// Payload of `order.payment_changed`: the operation and the order's money after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentChanged {
    /// The ledger's kind: `authorization`, `failure`, `capture`, `void`, `receipt`, `refund`.
    pub kind: String,
    pub amount: Money,
    pub currency: String,
    pub payment_status: PaymentStatus,
    pub amount_authorized: Money,
    pub amount_captured: Money,
    pub amount_refunded: Money,
    pub customer_id: Uuid,
    /// The order's status, which the operation may have moved (a full refund of a
    /// delivered order makes it `refunded`, announced by its own `order.status_changed`).
    pub status: OrderStatus,
    /// What happened, in words meant for the customer.
    pub message: String,
    /// The change's number in the live order feed, set as it is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<i64>,
}

/// Payload of `order.fulfillment_requested`: a parcel, its id chosen when it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentRequested {
    pub fulfillment_id: Uuid,
    pub lines: Vec<LineQuantity>,
    pub carrier: Option<String>,
    pub tracking_number: String,
    pub note: Option<String>,
}

/// Payload of `order.fulfillment_update_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentUpdateRequested {
    pub fulfillment_id: Uuid,
    pub status: FulfillmentStatus,
    pub note: Option<String>,
}

/// Payload of `order.fulfillment_changed`: the parcel as it is now, and the order's status
/// after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentChanged {
    pub fulfillment_id: Uuid,
    pub status: FulfillmentStatus,
    pub carrier: Option<String>,
    pub tracking_number: String,
    pub lines: Vec<LineQuantity>,
    pub customer_id: Uuid,
    pub order_status: OrderStatus,
    /// What happened, in words meant for the customer.
    pub message: String,
    /// The change's number in the live order feed, set as it is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<i64>,
}

/// Payload of `order.units_cancel_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsCancelRequested {
    pub lines: Vec<LineQuantity>,
    pub reason: Option<String>,
}

/// Payload of `order.units_cancelled`: the units cancelled and the order's money after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsCancelled {
    pub lines: Vec<LineQuantity>,
    /// The order's total now.
    pub total_amount: Money,
    /// What of an authorisation was given up (held beyond the new total).
    pub amount_released: Money,
    pub currency: String,
    pub customer_id: Uuid,
    pub order_status: OrderStatus,
    /// What happened, in words meant for the customer.
    pub message: String,
    /// The change's number in the live order feed, set as it is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::to_value(Envelope::new(
            EventType::CancelRequested,
            Uuid::now_v7(),
            2,
            Actor::system(),
            "req-1",
            CancelRequested { reason: None },
        ))
        .expect("json")
    }

    fn decode(value: &serde_json::Value) -> Result<Envelope, DecodeError> {
        Envelope::decode(value.to_string().as_bytes())
    }

    #[test]
    fn unknown_fields_from_a_newer_writer_are_ignored() {
        let mut value = sample();
        value["added_later"] = serde_json::json!({ "anything": true });
        value["payload"]["also_new"] = serde_json::json!(1);
        let envelope = decode(&value).expect("tolerated");
        assert_eq!(envelope.schema_version, SCHEMA_VERSION);
        let payload: CancelRequested =
            serde_json::from_value(envelope.payload).expect("payload tolerated");
        assert_eq!(payload.reason, None);
    }

    #[test]
    fn a_message_without_a_version_is_version_one() {
        let mut value = sample();
        value
            .as_object_mut()
            .expect("object")
            .remove("schema_version");
        assert_eq!(decode(&value).expect("read").schema_version, 1);
    }

    #[test]
    fn unknown_types_newer_versions_and_garbage_each_say_why() {
        let mut value = sample();
        value["type"] = serde_json::json!("order.teleported");
        assert_eq!(
            decode(&value),
            Err(DecodeError::UnknownType("order.teleported".into()))
        );
        let mut value = sample();
        value["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        assert_eq!(
            decode(&value),
            Err(DecodeError::NewerVersion(SCHEMA_VERSION + 1))
        );
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
    }
}
