//! Stripe, with no I/O: checking a webhook's `Stripe-Signature`, and turning what Stripe says
//! about a PaymentIntent (an event's object, or a call's answer) into the ledger operations
//! it implies, each under a reference that names it for good.
//!
//! Applying a state rather than trusting each event to arrive once and in order is what
//! keeps the money right: `payment_intent.succeeded` delivered before
//! `payment_intent.amount_capturable_updated`, or three times, or an old snapshot after a new
//! one, implies the same operations under the same references, and the worker applies only
//! those its ledger does not hold yet.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How old a signed timestamp may be, as Stripe's own libraries allow.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Why a webhook is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is more than 5 minutes from now")]
    Stale,
    #[error("no signature matches a configured webhook secret")]
    Mismatch,
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) against `body` with any of `secrets` (two during a
/// rotation), `now` in Unix seconds. Comparison is constant-time.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(hex_decode(value)),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let matches = secrets.iter().any(|secret| {
        signatures
            .iter()
            .flatten()
            .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A webhook event, as much of it as the system reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// The event types that move an order's money; others are acknowledged and ignored.
pub const EVENT_TYPES: [&str; 5] = [
    "payment_intent.amount_capturable_updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
];

impl Event {
    /// The PaymentIntent the event is about, when it is one the system follows.
    pub fn payment_intent_id(&self) -> Option<&str> {
        if !EVENT_TYPES.contains(&self.kind.as_str()) {
            return None;
        }
        let object = &self.data.object;
        let id = if self.kind.starts_with("charge.") {
            object.get("payment_intent")
        } else {
            object.get("id")
        };
        id.and_then(serde_json::Value::as_str)
    }
}

/// A PaymentIntent as Stripe returns it (and as events carry it).
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: String,
    pub amount: i64,
    /// What is authorised and not yet captured (Stripe's own API; see [`Self::implied`]).
    #[serde(default)]
    pub amount_capturable: Option<i64>,
    #[serde(default)]
    pub amount_received: Option<i64>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// An id, or the expanded charge.
    #[serde(default)]
    pub latest_charge: Option<serde_json::Value>,
}

/// A charge, from `charge.refunded` or a refund's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub refunds: Option<List<Refund>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub status: String,
}

/// One ledger operation implied by what Stripe said, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// `authorization`, `failure`, `capture`, `void` or `refund`.
    pub kind: String,
    pub amount: i64,
    /// Names the operation for good (`pi_…:authorization`, `re_…`): the ledger holds each
    /// reference once.
    pub reference: String,
}

fn observed(kind: &str, amount: i64, reference: String) -> Observed {
    Observed {
        kind: kind.to_owned(),
        amount,
        reference,
    }
}

impl PaymentIntent {
    /// The operations its state implies, in the order they happened. A PaymentIntent with
    /// manual capture holds `amount_capturable` once authorised; what it took is
    /// `amount_received`; a cancelled one released what it held (nothing, if it never held
    /// anything); a declined attempt leaves it needing another payment method.
    pub fn implied(&self, failed: bool) -> Vec<Observed> {
        // Test servers (localstripe) leave out `amount_capturable` and `amount_received`:
        // a PaymentIntent holds, or took, its whole amount then.
        let (authorized, received) = match self.status.as_str() {
            "requires_capture" => (self.amount_capturable.unwrap_or(self.amount), 0),
            "succeeded" => (self.amount, self.amount_received.unwrap_or(self.amount)),
            _ => (0, 0),
        };
        let mut implied = Vec::new();
        if authorized > 0 {
            let reference = format!("{}:authorization", self.id);
            implied.push(observed("authorization", authorized, reference));
        }
        if received > 0 {
            implied.push(observed(
                "capture",
                received,
                format!("{}:capture", self.id),
            ));
        }
        if self.status == "canceled" {
            implied.push(observed("void", 0, format!("{}:void", self.id)));
        }
        if failed && self.status == "requires_payment_method" {
            let attempt = self.latest_charge_id().unwrap_or("attempt");
            implied.push(observed(
                "failure",
                0,
                format!("{}:failure:{attempt}", self.id),
            ));
        }
        implied
    }

    fn latest_charge_id(&self) -> Option<&str> {
        match self.latest_charge.as_ref()? {
            serde_json::Value::String(id) => Some(id),
            charge => charge.get("id")?.as_str(),
        }
    }
}

impl Charge {
    /// The refunds it carries that went through.
    pub fn implied(&self) -> Vec<Observed> {
        self.refunds
            .iter()
            .flat_map(|list| &list.data)
            .filter(|refund| refund.status == "succeeded")
            .map(|refund| observed("refund", refund.amount, refund.id.clone()))
            .collect()
    }
}

impl Refund {
    /// A refund that went through, or nothing yet.
    pub fn implied(&self) -> Vec<Observed> {
        (self.status == "succeeded")
            .then(|| observed("refund", self.amount, self.id.clone()))
            .into_iter()
            .collect()
    }
}

/// What an event implies for its PaymentIntent's order; `None` when its object is not what
/// its type says.
pub fn implied_by(event: &Event) -> Option<Vec<Observed>> {
    let object = event.data.object.clone();
    if event.kind.starts_with("charge.") {
        let charge: Charge = serde_json::from_value(object).ok()?;
        return Some(charge.implied());
    }
    let intent: PaymentIntent = serde_json::from_value(object).ok()?;
    Some(intent.implied(event.kind == "payment_intent.payment_failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_signature_made_with_either_secret_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, NOW, body);
        let secrets = [SECRET.to_owned()];
        assert_eq!(verify(&header, body, &secrets, NOW), Ok(()));
        let rotating = ["whsec_new".to_owned(), SECRET.to_owned()];
        assert_eq!(verify(&header, body, &rotating, NOW + 10), Ok(()));
    }

    #[test]
    fn a_changed_body_another_secret_or_an_old_timestamp_is_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, NOW, body);
        let secrets = [SECRET.to_owned()];
        assert_eq!(
            verify(&header, br#"{"id":"evt_2"}"#, &secrets, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, &["whsec_other".to_owned()], NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, &secrets, NOW + SIGNATURE_TOLERANCE_SECS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, body, &secrets, NOW + SIGNATURE_TOLERANCE_SECS),
            Ok(())
        );
    }

    #[test]
    fn a_malformed_header_is_refused() {
        let secrets = [SECRET.to_owned()];
        for header in ["", "t=abc,v1=00", "v1=00", &format!("t={NOW}"), "garbage"] {
            assert_eq!(
                verify(header, b"{}", &secrets, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        let odd = format!("t={NOW},v1=abc");
        assert_eq!(
            verify(&odd, b"{}", &secrets, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn matches_the_signature_stripes_libraries_compute() {
        // Computed with Python: hmac.new(b"whsec_x", b'1614265330.{"a":1}', sha256).
        assert_eq!(
            sign("whsec_x", 1614265330, br#"{"a":1}"#),
            format!(
                "t=1614265330,v1={}",
                "5f2f97b3f4a5728be5b96df05103112375f5d17e8cfba5b65659cb27978a0877"
            )
        );
    }

    fn intent(status: &str, capturable: i64, received: i64) -> PaymentIntent {
        serde_json::from_value(json!({
            "id": "pi_1", "status": status, "amount": 5000,
            "amount_capturable": capturable, "amount_received": received,
            "latest_charge": "ch_1"
        }))
        .expect("a PaymentIntent")
    }

    fn kinds(implied: &[Observed]) -> Vec<(&str, i64, &str)> {
        implied
            .iter()
            .map(|o| (o.kind.as_str(), o.amount, o.reference.as_str()))
            .collect()
    }

    #[test]
    fn each_state_implies_everything_that_led_to_it() {
        assert!(
            intent("requires_payment_method", 0, 0)
                .implied(false)
                .is_empty()
        );
        assert_eq!(
            kinds(&intent("requires_capture", 5000, 0).implied(false)),
            [("authorization", 5000, "pi_1:authorization")]
        );
        let localstripe: PaymentIntent = serde_json::from_value(json!({
            "id": "pi_1", "status": "requires_capture", "amount": 5000
        }))
        .expect("a PaymentIntent");
        assert_eq!(
            kinds(&localstripe.implied(false)),
            [("authorization", 5000, "pi_1:authorization")]
        );
        assert_eq!(
            kinds(&intent("succeeded", 0, 5000).implied(false)),
            [
                ("authorization", 5000, "pi_1:authorization"),
                ("capture", 5000, "pi_1:capture")
            ]
        );
        assert_eq!(
            kinds(&intent("succeeded", 0, 2500).implied(false)),
            [
                ("authorization", 5000, "pi_1:authorization"),
                ("capture", 2500, "pi_1:capture")
            ],
            "a partial capture (what shipped of a smaller total) takes only what it captured"
        );
        assert_eq!(
            kinds(&intent("canceled", 0, 0).implied(false)),
            [("void", 0, "pi_1:void")]
        );
        assert_eq!(
            kinds(&intent("requires_payment_method", 0, 0).implied(true)),
            [("failure", 0, "pi_1:failure:ch_1")]
        );
    }

    #[test]
    fn the_same_event_twice_or_out_of_order_implies_the_same_references() {
        let authorised = intent("requires_capture", 5000, 0).implied(false);
        let captured = intent("succeeded", 0, 5000).implied(false);
        // Whatever arrives first, the union of references is the same and each is one op.
        assert_eq!(authorised[0], captured[0]);
        assert_eq!(
            authorised,
            intent("requires_capture", 5000, 0).implied(false)
        );
    }

    #[test]
    fn a_charge_implies_its_refunds_that_went_through() {
        let event: Event = serde_json::from_value(json!({
            "id": "evt_9", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "payment_intent": "pi_1", "refunds": {"data": [
                {"id": "re_1", "amount": 1000, "status": "succeeded"},
                {"id": "re_2", "amount": 500, "status": "pending"}
            ]}}}
        }))
        .expect("an event");
        assert_eq!(event.payment_intent_id(), Some("pi_1"));
        assert_eq!(
            kinds(&implied_by(&event).expect("a charge")),
            [("refund", 1000, "re_1")]
        );
    }

    #[test]
    fn events_the_system_does_not_follow_name_no_payment_intent() {
        let event: Event = serde_json::from_value(json!({
            "id": "evt_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}
        }))
        .expect("an event");
        assert_eq!(event.payment_intent_id(), None);
    }
}
