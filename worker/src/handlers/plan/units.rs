//! Deciding a cancellation of some units of some lines: while the order allows it and each
//! line has that many left, the units go back on sale, the order's total shrinks by what
//! they cost, and what an authorisation holds beyond the new total is released (a ledger
//! entry; a provider then captures only the new total). An order with nothing left to ship
//! is `shipped` when some of it shipped, `cancelled` when none did.

use common::{
    domain::{Money, OrderStatus, customer_text, fulfillment},
    events::{Envelope, EventType, UnitsCancelRequested, UnitsCancelled},
    timeline::EntryKind,
};
use uuid::Uuid;

use super::{
    Change, EmailRow, EntryRow, LedgerRow, LockedOrder, StockBook, Writes, attempt, notify,
    provider, standing_refusal, told,
};

/// Cancels the units `request` names; records the refusal (and gives back what the request
/// claimed) when the order or its payment does not allow it. Returns whether it applied.
pub(super) fn cancel(
    order: &mut LockedOrder,
    request: &UnitsCancelRequested,
    cause: &Envelope,
    book: &mut StockBook,
    writes: &mut Writes,
) -> bool {
    let lines = book.line_units(order.id);
    let decided = if !order.status.cancels_units(cause.actor.role) {
        Err(format!(
            "not_permitted: a {} may not cancel units of an order that is {}",
            cause.actor.role.as_str(),
            order.status
        ))
    } else if let Err(refusal) = fulfillment::check_units(&lines, &request.lines) {
        Err(format!("{}: {refusal}", refusal.error.code()))
    } else {
        // Priced only once every line is known to fit what is left of it.
        let value = request
            .lines
            .iter()
            .filter_map(|asked| {
                let price = book.unit_price(order.id, asked.item_id)?;
                Some(price * i64::from(asked.quantity))
            })
            .sum();
        order
            .payment()
            .reduce_total(value)
            .map_err(|refusal| format!("{}: {refusal}", refusal.code()))
    };
    let (payment, released) = match decided {
        Ok(reduced) => reduced,
        Err(reason) => {
            tracing::info!(order_id = %order.id, reason, "units cancellation refused");
            book.give_back(order.id, &request.lines);
            let entry = standing_refusal(order, cause, &cause.actor, reason);
            writes.entries.push(entry);
            return false;
        }
    };
    book.cancel(order.id, &request.lines);
    order.total_amount_minor = payment.total;
    order.set_payment(payment);
    if released > 0 {
        writes.ledger.push(LedgerRow {
            id: Uuid::now_v7(),
            order_id: order.id,
            kind: "release",
            amount_minor: released,
            provider_reference: format!("{}:release", cause.event_id),
            actor_id: cause.actor.user_id,
            note: request.reason.clone(),
            payment_status: payment.status,
        });
    }
    let left = fulfillment::status_after_shipping(&book.line_units(order.id));
    let to = match left {
        OrderStatus::Shipped if book.shipped(order.id) == 0 => OrderStatus::Cancelled,
        OrderStatus::Shipped => OrderStatus::Shipped,
        _ => order.status,
    };
    let changes_status = to != order.status;
    announce(order, request, released, to, !changes_status, cause, writes);
    if changes_status {
        let reason = request
            .reason
            .clone()
            .or_else(|| Some("every unit cancelled".into()));
        let change = Change::new(cause, to, cause.actor.clone(), reason, None);
        if attempt(order, change, book, writes) {
            provider::after_transition(order, cause, writes);
        }
    }
    true
}

/// The cancellation's timeline entry and `order.units_cancelled` event; with `tell`, the
/// customer's notification and email too (else the status change that follows tells them).
fn announce(
    order: &LockedOrder,
    request: &UnitsCancelRequested,
    released: i64,
    order_status: OrderStatus,
    tell: bool,
    cause: &Envelope,
    writes: &mut Writes,
) {
    let units = request.lines.iter().map(|line| line.quantity).sum();
    let total = Money::from_minor(order.total_amount_minor);
    let sentence = customer_text::units_cancelled_sentence(units, total, &order.currency);
    let event = Envelope::new(
        EventType::UnitsCancelled,
        order.id,
        cause.seq,
        cause.actor.clone(),
        cause.correlation_id.clone(),
        UnitsCancelled {
            lines: request.lines.clone(),
            total_amount: total,
            amount_released: Money::from_minor(released),
            currency: order.currency.clone(),
            customer_id: order.customer_id,
            order_status,
            message: sentence.clone(),
            feed_id: None,
        },
    );
    writes.entries.push(EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::UnitsCancelled,
        from: None,
        to: order_status,
        actor_id: cause.actor.user_id,
        actor_role: cause.actor.role,
        reason: Some(sentence.clone()),
        seq: cause.seq,
    });
    if tell {
        notify(
            order,
            "units_cancelled".into(),
            told(order, &sentence),
            cause.seq,
            writes,
        );
        writes.emails.push(EmailRow {
            id: event.event_id,
            order_id: order.id,
            status: order_status,
            message: sentence,
            tracking_number: None,
            receipt: None,
        });
    }
    writes.events.push(event);
}
