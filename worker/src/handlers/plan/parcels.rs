//! Deciding parcels: shipping some units of some lines (or, asked to ship the order, all
//! that remains as one parcel), recording a parcel's delivery (or, asked to deliver the
//! order, every parcel's), and what the order's status comes to — the rules being
//! `common::domain::fulfillment`'s. Each parcel that ships or arrives yields its timeline
//! entry and an `order.fulfillment_changed` event; the customer hears of it once, by the
//! status change it causes or, when the status stays, by the parcel's own sentence.

use std::collections::HashMap;

use common::{
    domain::{
        FulfillmentStatus, OrderStatus, customer_text,
        fulfillment::{self, LineQuantity},
    },
    events::{
        Envelope, EventType, FulfillmentChanged, FulfillmentRequested, FulfillmentUpdateRequested,
        StatusChangeRequested,
    },
    timeline::EntryKind,
};
use uuid::Uuid;

use super::{
    Change, EmailRow, EntryRow, LockedOrder, StockBook, Writes, apply, attempt, notify, provider,
    standing_refusal, told,
};

/// A parcel of an order, as stored or as decided in this batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Parcel {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: FulfillmentStatus,
    pub carrier: Option<String>,
    pub tracking_number: String,
    pub lines: Vec<LineQuantity>,
}

impl Parcel {
    /// The parcel `request` asks to ship.
    pub(super) fn requested(cause: &Envelope, request: &FulfillmentRequested) -> Self {
        Parcel {
            id: request.fulfillment_id,
            order_id: cause.order_id,
            status: FulfillmentStatus::Shipped,
            carrier: request.carrier.clone(),
            tracking_number: request.tracking_number.clone(),
            lines: request.lines.clone(),
        }
    }

    fn units(&self) -> i32 {
        self.lines.iter().map(|line| line.quantity).sum()
    }
}

/// What a batch writes of a parcel: a new one with its lines, or its new status.
#[derive(Debug, Clone, PartialEq)]
pub struct ParcelRow {
    pub parcel: Parcel,
    /// The command that decided it.
    pub seq: i64,
    pub actor_id: Option<Uuid>,
    pub new: bool,
}

/// An order line's units after the batch (written only where they moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemUnits {
    pub id: Uuid,
    pub shipped: i32,
    pub cancelled: i32,
    pub claimed: i32,
}

/// The parcels of the batch's orders, by order, moved in memory as commands are decided.
pub(super) type Parcels = HashMap<Uuid, Vec<Parcel>>;

pub(super) fn by_order(parcels: Vec<Parcel>) -> Parcels {
    let mut grouped = Parcels::new();
    for parcel in parcels {
        grouped.entry(parcel.order_id).or_default().push(parcel);
    }
    grouped
}

/// Ships `parcel` when the order ships parcels now and every line of it fits what remains;
/// else records the refusal and gives back what its request claimed. Returns whether it
/// shipped.
pub(super) fn ship(
    order: &mut LockedOrder,
    parcel: Parcel,
    note: Option<String>,
    cause: &Envelope,
    book: &mut StockBook,
    parcels: &mut Parcels,
    writes: &mut Writes,
) -> bool {
    let lines = book.line_units(order.id);
    let to = fulfillment::status_once_taken(&lines, &parcel.lines);
    let refusal = if !order.status.ships_parcels() {
        Some(format!(
            "invalid_transition: an order that is {} ships no parcels",
            order.status
        ))
    } else if let Err(refusal) = fulfillment::check_units(&lines, &parcel.lines) {
        Some(format!("{}: {refusal}", refusal.error.code()))
    } else {
        moves(order.status, to, cause).err()
    };
    if let Some(reason) = refusal {
        tracing::info!(order_id = %order.id, reason, "parcel refused");
        book.give_back(order.id, &parcel.lines);
        let entry = standing_refusal(order, cause, &cause.actor, reason);
        writes.entries.push(entry);
        return false;
    }
    book.ship(order.id, &parcel.lines);
    order.tracking_number = Some(parcel.tracking_number.clone());
    parcels.entry(order.id).or_default().push(parcel.clone());
    let changes_status = to != order.status;
    announce(order, &parcel, to, !changes_status, cause, writes);
    writes.parcels.push(ParcelRow {
        parcel: parcel.clone(),
        seq: cause.seq,
        actor_id: cause.actor.user_id,
        new: true,
    });
    if changes_status {
        let tracking = Some(parcel.tracking_number);
        let change = Change::new(cause, to, cause.actor.clone(), note, tracking);
        apply(order, change, writes);
        provider::after_transition(order, cause, writes);
    }
    true
}

/// A request to ship the order: whatever remains goes in one parcel (its id the command's),
/// under the request's tracking number or the one set on the order.
pub(super) fn ship_rest(
    order: &mut LockedOrder,
    request: &StatusChangeRequested,
    cause: &Envelope,
    book: &mut StockBook,
    parcels: &mut Parcels,
    writes: &mut Writes,
) -> bool {
    let tracking_number = request
        .tracking_number
        .clone()
        .or_else(|| order.tracking_number.clone());
    let (true, Some(tracking_number)) = (order.status.ships_parcels(), tracking_number) else {
        // The lifecycle's refusal says why (an order not being prepared, no tracking number).
        let change = Change::new(
            cause,
            OrderStatus::Shipped,
            cause.actor.clone(),
            request.note.clone(),
            request.tracking_number.clone(),
        );
        return attempt(order, change, book, writes);
    };
    let lines = book
        .line_units(order.id)
        .into_iter()
        .filter(|line| line.remaining() > 0)
        .map(|line| LineQuantity {
            item_id: line.item_id,
            quantity: line.remaining(),
        })
        .collect();
    book.claim_rest(order.id);
    let parcel = Parcel {
        id: cause.event_id,
        order_id: order.id,
        status: FulfillmentStatus::Shipped,
        carrier: None,
        tracking_number,
        lines,
    };
    ship(
        order,
        parcel,
        request.note.clone(),
        cause,
        book,
        parcels,
        writes,
    )
}

/// Records that a parcel arrived; the order is delivered once every unit shipped and every
/// parcel arrived.
pub(super) fn deliver(
    order: &mut LockedOrder,
    update: &FulfillmentUpdateRequested,
    cause: &Envelope,
    parcels: &mut Parcels,
    writes: &mut Writes,
) -> bool {
    let known = parcels.entry(order.id).or_default();
    let parcel = match known.iter_mut().find(|p| p.id == update.fulfillment_id) {
        Some(parcel) if parcel.status != update.status => {
            parcel.status = update.status;
            parcel.clone()
        }
        found => {
            let reason = match found {
                None => "unknown_parcel: no such parcel on this order".to_owned(),
                Some(parcel) => format!(
                    "unchanged: the parcel is already {}",
                    parcel.status.as_str()
                ),
            };
            let entry = standing_refusal(order, cause, &cause.actor, reason);
            writes.entries.push(entry);
            return false;
        }
    };
    let statuses: Vec<FulfillmentStatus> = known.iter().map(|p| p.status).collect();
    let changes_status = fulfillment::delivered(order.status, &statuses)
        && moves(order.status, OrderStatus::Delivered, cause).is_ok();
    let to = if changes_status {
        OrderStatus::Delivered
    } else {
        order.status
    };
    announce(order, &parcel, to, !changes_status, cause, writes);
    writes.parcels.push(ParcelRow {
        parcel,
        seq: cause.seq,
        actor_id: cause.actor.user_id,
        new: false,
    });
    if changes_status {
        let change = Change::new(cause, to, cause.actor.clone(), update.note.clone(), None);
        apply(order, change, writes);
    }
    true
}

/// A request to mark the order delivered: every parcel not yet delivered arrived with it.
pub(super) fn deliver_all(
    order: &mut LockedOrder,
    request: &StatusChangeRequested,
    cause: &Envelope,
    book: &mut StockBook,
    parcels: &mut Parcels,
    writes: &mut Writes,
) -> bool {
    let change = Change::new(
        cause,
        OrderStatus::Delivered,
        cause.actor.clone(),
        request.note.clone(),
        None,
    );
    if moves(order.status, OrderStatus::Delivered, cause).is_err() {
        return attempt(order, change, book, writes);
    }
    for parcel in parcels.entry(order.id).or_default() {
        if parcel.status == FulfillmentStatus::Delivered {
            continue;
        }
        parcel.status = FulfillmentStatus::Delivered;
        announce(order, parcel, OrderStatus::Delivered, false, cause, writes);
        writes.parcels.push(ParcelRow {
            parcel: parcel.clone(),
            seq: cause.seq,
            actor_id: cause.actor.user_id,
            new: false,
        });
    }
    attempt(order, change, book, writes)
}

/// Whether the lifecycle lets the command's actor move the order from `from` to `to`
/// (staying put is no move and always allowed).
fn moves(from: OrderStatus, to: OrderStatus, cause: &Envelope) -> Result<(), String> {
    if from == to {
        return Ok(());
    }
    from.transition(to, cause.actor.role)
        .map_err(|refusal| format!("{}: {refusal}", refusal.code()))
}

/// The parcel's timeline entry and `order.fulfillment_changed` event (`order_status` being
/// the order's status once the command applies); with `tell`, the customer's notification
/// and email about it too.
fn announce(
    order: &LockedOrder,
    parcel: &Parcel,
    order_status: OrderStatus,
    tell: bool,
    cause: &Envelope,
    writes: &mut Writes,
) {
    let sentence =
        customer_text::parcel_sentence(parcel.status, parcel.units(), &parcel.tracking_number);
    let event = Envelope::new(
        EventType::FulfillmentChanged,
        order.id,
        cause.seq,
        cause.actor.clone(),
        cause.correlation_id.clone(),
        FulfillmentChanged {
            fulfillment_id: parcel.id,
            status: parcel.status,
            carrier: parcel.carrier.clone(),
            tracking_number: parcel.tracking_number.clone(),
            lines: parcel.lines.clone(),
            customer_id: order.customer_id,
            order_status,
            message: sentence.clone(),
            feed_id: None,
        },
    );
    writes.entries.push(EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::FulfillmentChanged,
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
            format!("parcel_{}", parcel.status.as_str()),
            told(order, &sentence),
            cause.seq,
            writes,
        );
        writes.emails.push(EmailRow {
            id: event.event_id,
            order_id: order.id,
            status: order_status,
            message: sentence,
            tracking_number: Some(parcel.tracking_number.clone()),
            receipt: None,
        });
    }
    writes.events.push(event);
}
