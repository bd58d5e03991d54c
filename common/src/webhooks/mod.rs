//! What webhooks carry and how they are protected: the event types endpoints subscribe to,
//! the Standard Webhooks signature, and the guard that keeps deliveries off private networks.

mod guard;
mod signature;

pub use guard::{Allowlist, check_address};
pub use signature::{SigningSecret, generate_secret, sign};

use crate::events::{Envelope, EventType};

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 11] = [
    "order.created",
    "order.status_changed",
    "order.cancelled",
    "order.payment_authorized",
    "order.payment_failed",
    "order.payment_voided",
    "order.paid",
    "order.refunded",
    "order.fulfillment_created",
    "order.fulfillment_delivered",
    "order.units_cancelled",
];

/// The webhook type of an event on the exchange, or `None` for the commands and the
/// stall changes (the store's own business) integrators do not receive. A change into
/// `cancelled` is `order.cancelled` (and only that), every other change
/// `order.status_changed`; a payment operation is named for what it did (money taken by
/// capture or by hand is `order.paid`, partly or wholly); a parcel is
/// `order.fulfillment_created` as it ships and `order.fulfillment_delivered` as it arrives.
pub fn event_type(envelope: &Envelope) -> Option<&'static str> {
    match envelope.event_type {
        EventType::OrderCreated => Some("order.created"),
        EventType::StatusChanged if envelope.payload["to"] == "cancelled" => {
            Some("order.cancelled")
        }
        EventType::StatusChanged => Some("order.status_changed"),
        EventType::PaymentChanged => match envelope.payload["kind"].as_str()? {
            "authorization" => Some("order.payment_authorized"),
            "failure" => Some("order.payment_failed"),
            "void" => Some("order.payment_voided"),
            "capture" | "receipt" => Some("order.paid"),
            "refund" => Some("order.refunded"),
            _ => None,
        },
        EventType::FulfillmentChanged => match envelope.payload["status"].as_str()? {
            "shipped" => Some("order.fulfillment_created"),
            "delivered" => Some("order.fulfillment_delivered"),
            _ => None,
        },
        EventType::UnitsCancelled => Some("order.units_cancelled"),
        EventType::StatusChangeRequested
        | EventType::UnitsCancelRequested
        | EventType::CancelRequested
        | EventType::StallChanged
        | EventType::PaymentRecorded
        | EventType::RefundRequested
        | EventType::CaptureRequested
        | EventType::PaymentObserved
        | EventType::FulfillmentRequested
        | EventType::FulfillmentUpdateRequested => None,
    }
}

/// The JSON an endpoint receives: the event's envelope, its `type` the webhook type.
pub fn body(envelope: &Envelope, webhook_type: &str) -> String {
    let mut value = serde_json::to_value(envelope).unwrap_or_default();
    value["type"] = webhook_type.into();
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Actor;

    fn change(to: &str) -> Envelope {
        Envelope::new(
            EventType::StatusChanged,
            uuid::Uuid::now_v7(),
            2,
            Actor::system(),
            "req",
            serde_json::json!({"from": "confirmed", "to": to}),
        )
    }

    #[test]
    fn a_change_into_cancelled_is_order_cancelled_and_no_other_change_is() {
        assert_eq!(event_type(&change("cancelled")), Some("order.cancelled"));
        assert_eq!(event_type(&change("shipped")), Some("order.status_changed"));
    }

    #[test]
    fn a_payment_change_is_named_for_what_it_did() {
        let mut envelope = change("shipped");
        envelope.event_type = EventType::PaymentChanged;
        for (kind, expected) in [
            ("authorization", "order.payment_authorized"),
            ("failure", "order.payment_failed"),
            ("void", "order.payment_voided"),
            ("capture", "order.paid"),
            ("receipt", "order.paid"),
            ("refund", "order.refunded"),
        ] {
            envelope.payload = serde_json::json!({ "kind": kind });
            assert_eq!(event_type(&envelope), Some(expected));
            assert!(EVENT_TYPES.contains(&expected));
        }
    }

    #[test]
    fn a_parcel_is_created_as_it_ships_and_delivered_as_it_arrives() {
        let mut envelope = change("shipped");
        envelope.event_type = EventType::FulfillmentChanged;
        for (status, expected) in [
            ("shipped", "order.fulfillment_created"),
            ("delivered", "order.fulfillment_delivered"),
        ] {
            envelope.payload = serde_json::json!({ "status": status });
            assert_eq!(event_type(&envelope), Some(expected));
            assert!(EVENT_TYPES.contains(&expected));
        }
    }

    #[test]
    fn commands_are_not_webhook_events() {
        let mut envelope = change("shipped");
        envelope.event_type = EventType::CancelRequested;
        assert_eq!(event_type(&envelope), None);
    }

    #[test]
    fn the_body_is_the_envelope_under_its_webhook_type() {
        let envelope = change("cancelled");
        let body: serde_json::Value =
            serde_json::from_str(&body(&envelope, "order.cancelled")).expect("JSON");
        assert_eq!(body["type"], "order.cancelled");
        assert_eq!(body["event_id"], envelope.event_id.to_string());
        assert_eq!(body["payload"]["to"], "cancelled");
    }
}
