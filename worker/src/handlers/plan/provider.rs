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
    timeline::EntryKind,
};
use uuid::Uuid;

use super::{Change, EntryRow, LockedOrder, StockBook, Writes, attempt, settle};

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
        writes.entries.push(EntryRow {
            id: Uuid::now_v7(),
            order_id: order.id,
            kind: EntryKind::Rejected,
            from: None,
            to: order.status,
            actor_id: None,
            actor_role: common::domain::ActorKind::System,
            reason: Some(format!("refund_refused: {}", observed.source)),
            seq: cause.seq,
        });
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
