//! Event envelopes carried on RabbitMQ: the public message contract (see docs/messages.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Money, OrderStatus};

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
}

impl EventType {
    /// The types the worker consumes, each applied in `seq` order per order.
    pub const COMMANDS: [EventType; 3] = [
        EventType::OrderCreated,
        EventType::StatusChangeRequested,
        EventType::CancelRequested,
    ];

    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::OrderCreated => "order.created",
            EventType::StatusChangeRequested => "order.status_change_requested",
            EventType::CancelRequested => "order.cancel_requested",
            EventType::StatusChanged => "order.status_changed",
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
    pub role: String,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            user_id: None,
            role: "system".to_owned(),
        }
    }
}

/// The JSON body of every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
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
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequested {
    pub status: OrderStatus,
    pub note: Option<String>,
    pub tracking_number: Option<String>,
}

/// Payload of `order.cancel_requested`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}
