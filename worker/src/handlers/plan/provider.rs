//! Deciding for orders whose money a provider moves by calls (Stripe): which calls a
//! transition needs (create the PaymentIntent once stock is reserved, capture on shipping,
//! cancel on cancellation, refund on request), and what the provider's answers and events
//! do to the order (authorised → confirmed; declined → cancelled, stock released).
//!
//! The calls are rows written with the batch and made after it commits
//! (`crate::payments`), never inside an order's transaction.

use std::collections::HashSet;

use common::{
    domain::{OrderStatus, payment::Operation},
    events::{Actor, Envelope, PaymentObserved},
    stripe::Observed,
};
use uuid::Uuid;

use super::{Change, LockedOrder, StockBook, Writes, attempt, settle, standing_refusal};

fn call(order: &LockedOrder, kind: &'static str, amount_minor: i64, key: String) -> super::CallRow {
    super::CallRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind,
        amount_minor,
        idempotency_key: key,
    }
}

/// The order now waits for its payment: create its PaymentIntent for the server-side total.
/// The key names the order, so however often this is decided, Stripe creates one.
pub(super) fn create_intent(order: &LockedOrder, writes: &mut Writes) {
    let key = format!("orderflow-{}-payment-intent", order.id);
    writes
        .calls
        .push(call(order, "create_intent", order.total_amount_minor, key));
}

/// After an applied transition of a Stripe order: shipping captures what is held;
/// cancelling before anything was captured cancels the PaymentIntent (voiding what it
/// holds, or closing it to payment).
pub(super) fn after_transition(order: &LockedOrder, cause: &Envelope, writes: &mut Writes) {
    if !order.by_stripe() {
        return;
    }
    let payment = order.payment();
    let held = payment.authorized - payment.captured;
    match order.status {
        OrderStatus::Shipped if held > 0 => {
            let key = format!("orderflow-{}-capture", cause.event_id);
            writes.calls.push(call(order, "capture", held, key));
        }
        OrderStatus::Cancelled if payment.captured == 0 => {
            let key = format!("orderflow-{}-cancel", cause.event_id);
            writes.calls.push(call(order, "cancel", 0, key));
        }
        _ => {}
    }
}

/// Staff asked to capture before shipping: what the provider holds is captured now (and
/// shipping then finds nothing left to capture). Refused, with the reason in the timeline,
/// when nothing is held.
pub(super) fn capture_now(order: &LockedOrder, cause: &Envelope, writes: &mut Writes) -> bool {
    let payment = order.payment();
    let held = payment.authorized - payment.captured;
    if !order.by_stripe() || held == 0 {
        let reason = "nothing_to_capture: no authorised payment is held".to_owned();
        writes
            .entries
            .push(standing_refusal(order, cause, &cause.actor, reason));
        return false;
    }
    let key = format!("orderflow-{}-capture", cause.event_id);
    writes.calls.push(call(order, "capture", held, key));
    true
}

/// A refund of a Stripe order is asked of Stripe; it is recorded when Stripe says it went
/// through (the call's answer or `charge.refunded`, whichever comes first).
pub(super) fn request_refund(
    order: &LockedOrder,
    amount: i64,
    cause: &Envelope,
    writes: &mut Writes,
) -> bool {
    let key = format!("orderflow-{}-refund", cause.event_id);
    writes.calls.push(call(order, "refund", amount, key));
    true
}

/// Applies what the provider said, skipping what the ledger (`known`) already holds. An
/// authorisation of the whole total confirms an order awaiting payment; a decline cancels
/// it and releases its stock.
pub(super) fn observe(
    order: &mut LockedOrder,
    observed: &PaymentObserved,
    cause: &Envelope,
    known: &mut HashSet<String>,
    book: &mut StockBook,
    writes: &mut Writes,
) -> bool {
    if observed.refund_refused > 0 {
        order.refunds_accepted_minor -= observed.refund_refused;
        let reason = format!("refund_refused: {}", observed.source);
        writes
            .entries
            .push(standing_refusal(order, cause, &Actor::system(), reason));
    }
    let mut applied = false;
    for item in &observed.operations {
        if known.contains(&item.reference) {
            continue;
        }
        let Some(operation) = operation(item, order) else {
            continue;
        };
        known.insert(item.reference.clone());
        let note = Some(observed.source.clone());
        if !settle(
            order,
            operation,
            note,
            Some(item.reference.clone()),
            cause,
            writes,
        ) {
            continue;
        }
        applied = true;
        // A refund made outside the shop (Stripe's dashboard) counts as accepted too.
        order.refunds_accepted_minor = order
            .refunds_accepted_minor
            .max(order.amount_refunded_minor);
        let follows = match operation {
            Operation::Authorize(_)
                if order.amount_authorized_minor >= order.total_amount_minor =>
            {
                Some((OrderStatus::Confirmed, "payment authorised"))
            }
            Operation::Fail => Some((OrderStatus::Cancelled, "payment_failed: declined")),
            _ => None,
        };
        // Authorised after the order was cancelled (paid at the last moment): release it.
        if matches!(operation, Operation::Authorize(_)) && order.status == OrderStatus::Cancelled {
            after_transition(order, cause, writes);
        }
        if let Some((to, reason)) = follows
            && order.status == OrderStatus::AwaitingPayment
        {
            let change = Change::new(cause, to, Actor::system(), Some(reason.into()), None);
            if attempt(order, change, book, writes) {
                after_transition(order, cause, writes);
            }
        }
    }
    applied || observed.refund_refused > 0
}

/// The ledger operation an observation stands for; `None` for one that changes nothing
/// (a PaymentIntent cancelled before it held anything).
fn operation(item: &Observed, order: &LockedOrder) -> Option<Operation> {
    let payment = order.payment();
    Some(match item.kind.as_str() {
        "authorization" => Operation::Authorize(item.amount),
        "capture" => Operation::Capture(item.amount),
        "refund" => Operation::Refund(item.amount),
        "failure" => Operation::Fail,
        "void" if payment.authorized > payment.captured => Operation::Void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use common::{
        domain::PaymentStatus,
        events::{EventType, PaymentObserved},
        stripe::{Observed, PaymentIntent, Refund},
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use serde_json::json;

    use super::*;
    use crate::handlers::plan::{Command, plan};

    const TOTAL: i64 = 5000;

    fn order() -> LockedOrder {
        LockedOrder {
            id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            status: OrderStatus::AwaitingPayment,
            applied_seq: 1,
            tracking_number: None,
            currency: "USD".into(),
            total_amount_minor: TOTAL,
            payment_status: PaymentStatus::Unpaid,
            amount_authorized_minor: 0,
            amount_captured_minor: 0,
            amount_refunded_minor: 0,
            refunds_accepted_minor: 0,
            payment_provider: "stripe".into(),
        }
    }

    fn intent(status: &str) -> Vec<Observed> {
        let intent: PaymentIntent = serde_json::from_value(json!({
            "id": "pi_1", "status": status, "amount": TOTAL, "latest_charge": "ch_1"
        }))
        .expect("a PaymentIntent");
        intent.implied(status == "requires_payment_method")
    }

    fn refund(id: &str, amount: i64) -> Vec<Observed> {
        Refund {
            id: id.into(),
            amount,
            status: "succeeded".into(),
        }
        .implied()
    }

    /// What Stripe may say over a PaymentIntent's life, in the order it happened: one of
    /// its three endings, with refunds after a capture.
    fn history(rng: &mut StdRng) -> Vec<Vec<Observed>> {
        match rng.random_range(0..3) {
            0 => vec![intent("requires_payment_method")],
            1 => vec![intent("requires_capture"), intent("canceled")],
            _ => {
                let mut said = vec![intent("requires_capture"), intent("succeeded")];
                let mut left = TOTAL;
                for n in 0..rng.random_range(0..4) {
                    let amount = rng.random_range(1..=left.max(1)).min(left);
                    if amount > 0 {
                        said.push(refund(&format!("re_{n}"), amount));
                        left -= amount;
                    }
                }
                said
            }
        }
    }

    /// Applies one observation as a batch of one and returns the order after it.
    fn apply(order: LockedOrder, said: &[Observed], known: &mut HashSet<String>) -> LockedOrder {
        let envelope = Envelope::new(
            EventType::PaymentObserved,
            order.id,
            order.applied_seq + 1,
            Actor::system(),
            "t",
            PaymentObserved {
                source: "test".into(),
                operations: said.to_vec(),
                refund_refused: 0,
            },
        );
        let command = Command::decode(&envelope).expect("a command");
        let before = order.clone();
        let decided = plan(
            &[command],
            vec![order],
            Vec::new(),
            Vec::new(),
            known.clone(),
            true,
        )
        .expect("plan");
        for row in &decided.writes.ledger {
            assert!(
                known.insert(row.provider_reference.clone()),
                "{} applied twice",
                row.provider_reference
            );
        }
        decided.writes.orders.into_iter().next().unwrap_or(before)
    }

    fn assert_holds(order: &LockedOrder) {
        let (a, c, r) = (
            order.amount_authorized_minor,
            order.amount_captured_minor,
            order.amount_refunded_minor,
        );
        assert!(
            0 <= r && r <= c && c <= a && a <= order.total_amount_minor,
            "{order:?}"
        );
        assert!(
            r <= order.refunds_accepted_minor && order.refunds_accepted_minor <= c,
            "{order:?}"
        );
    }

    #[test]
    fn duplicated_and_reordered_reports_apply_each_operation_once_and_end_where_stripe_is() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let truth = history(&mut rng);
            let mut known = HashSet::new();
            let mut order = order();
            // 200 reports of what was said so far, any of them, repeated and out of order.
            for step in 0..200 {
                let said_so_far = 1 + (step * truth.len() / 200);
                let pick = &truth[rng.random_range(0..said_so_far)];
                order = apply(order, pick, &mut known);
                assert_holds(&order);
            }
            // Once everything has been reported, the order's money is Stripe's.
            for said in &truth {
                order = apply(order, said, &mut known);
            }
            let all: Vec<&Observed> = truth.iter().flatten().collect();
            let sum = |kind: &str| -> i64 {
                let mut seen = HashSet::new();
                all.iter()
                    .filter(|o| o.kind == kind && seen.insert(o.reference.clone()))
                    .map(|o| o.amount)
                    .sum()
            };
            assert_eq!(order.amount_captured_minor, sum("capture"), "seed {seed}");
            assert_eq!(order.amount_refunded_minor, sum("refund"), "seed {seed}");
            let expected = match (
                sum("capture"),
                all.iter().any(|o| o.kind == "void"),
                all.iter().any(|o| o.kind == "failure"),
            ) {
                (0, true, _) => (OrderStatus::Confirmed, PaymentStatus::Voided),
                (0, _, true) => (OrderStatus::Cancelled, PaymentStatus::Failed),
                _ => (OrderStatus::Confirmed, order.payment_status),
            };
            assert_eq!(
                (order.status, order.payment_status),
                expected,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn an_authorisation_confirms_and_a_decline_cancels_an_order_awaiting_payment() {
        let mut known = HashSet::new();
        let authorised = apply(order(), &intent("requires_capture"), &mut known);
        assert_eq!(authorised.status, OrderStatus::Confirmed);
        assert_eq!(authorised.payment_status, PaymentStatus::Authorized);
        let declined = apply(
            order(),
            &intent("requires_payment_method"),
            &mut HashSet::new(),
        );
        assert_eq!(declined.status, OrderStatus::Cancelled);
        assert_eq!(declined.payment_status, PaymentStatus::Failed);
    }
}
