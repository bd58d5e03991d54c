//! Deciding a batch of commands, with no I/O: given the commands and the locked state they
//! act on (their orders, and the stock of the products they may move), each command's
//! outcome in per-order sequence and every row the batch must write. The state machine
//! decides; an allowed transition moves stock and yields status, timeline entries, a
//! customer notification and an `order.status_changed` event; a refused one yields a
//! timeline entry saying why. Money commands go through the payment function the same way:
//! an allowed operation yields the order's new amounts, a ledger row, timeline entries, a
//! notification and an `order.payment_changed` event. Either way the command's `seq` is
//! recorded as applied. Parcels (see `parcels`) ship some units of some lines, move their
//! stock and the order's status, and record deliveries; cancelled units (see `units`) go
//! back on sale and shrink the order's total.

mod parcels;
mod provider;
mod units;

use std::collections::{HashMap, HashSet};

use common::{
    domain::{
        ActorKind, Money, OrderStatus, Payment, PaymentStatus, customer_text,
        fulfillment::{LineQuantity, LineUnits},
        payment::Operation,
    },
    events::{
        Actor, CancelRequested, Envelope, EventType, FulfillmentRequested,
        FulfillmentUpdateRequested, PaymentChanged, PaymentObserved, PaymentRecorded,
        RefundRequested, StatusChangeRequested, StatusChanged, UnitsCancelRequested,
    },
    timeline::EntryKind,
};
use uuid::Uuid;

use super::{HandleError, Outcome};

pub use parcels::{ItemUnits, Parcel, ParcelRow};

/// An order row as the worker locked it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub applied_seq: i64,
    pub tracking_number: Option<String>,
    pub currency: String,
    pub total_amount_minor: i64,
    pub payment_status: PaymentStatus,
    pub amount_authorized_minor: i64,
    pub amount_captured_minor: i64,
    pub amount_refunded_minor: i64,
    pub refunds_accepted_minor: i64,
    /// `manual`, or `stripe`: a provider that authorises, captures and refunds by calls.
    pub payment_provider: String,
}

impl LockedOrder {
    fn by_stripe(&self) -> bool {
        self.payment_provider == "stripe"
    }

    fn payment(&self) -> Payment {
        Payment {
            total: self.total_amount_minor,
            authorized: self.amount_authorized_minor,
            captured: self.amount_captured_minor,
            refunded: self.amount_refunded_minor,
            status: self.payment_status,
        }
    }

    fn set_payment(&mut self, payment: Payment) {
        self.payment_status = payment.status;
        self.amount_authorized_minor = payment.authorized;
        self.amount_captured_minor = payment.captured;
        self.amount_refunded_minor = payment.refunded;
    }
}

/// What a command asks for, its payload decoded once.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `order.created`: reserve stock and confirm, or cancel.
    Confirm,
    ChangeStatus(StatusChangeRequested),
    Cancel(CancelRequested),
    RecordPayment(PaymentRecorded),
    Refund(RefundRequested),
    /// Take what the provider holds now.
    Capture,
    /// What the payment provider did, to apply where the ledger does not hold it yet.
    Observe(PaymentObserved),
    /// Ship a parcel.
    Fulfil(FulfillmentRequested),
    /// Record what became of a parcel.
    UpdateFulfillment(FulfillmentUpdateRequested),
    /// Cancel some units of some lines.
    CancelUnits(UnitsCancelRequested),
}

/// A command: its envelope and what it asks for.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    pub envelope: &'a Envelope,
    pub action: Action,
}

impl<'a> Command<'a> {
    /// Decodes `envelope` as a command; a payload that does not fit its type, or an event
    /// that is not a command, is permanent.
    pub fn decode(envelope: &'a Envelope) -> Result<Self, HandleError> {
        let action = match envelope.event_type {
            EventType::OrderCreated => Action::Confirm,
            EventType::StatusChangeRequested => Action::ChangeStatus(payload(envelope)?),
            EventType::CancelRequested => Action::Cancel(payload(envelope)?),
            EventType::PaymentRecorded => Action::RecordPayment(payload(envelope)?),
            EventType::RefundRequested => Action::Refund(payload(envelope)?),
            EventType::CaptureRequested => Action::Capture,
            EventType::PaymentObserved => Action::Observe(payload(envelope)?),
            EventType::FulfillmentRequested => Action::Fulfil(payload(envelope)?),
            EventType::FulfillmentUpdateRequested => Action::UpdateFulfillment(payload(envelope)?),
            EventType::UnitsCancelRequested => Action::CancelUnits(payload(envelope)?),
            EventType::StatusChanged
            | EventType::StallChanged
            | EventType::PaymentChanged
            | EventType::FulfillmentChanged
            | EventType::UnitsCancelled => {
                return Err(HandleError::Permanent(format!(
                    "{} is not a command the worker applies",
                    envelope.event_type.routing_key()
                )));
            }
        };
        Ok(Command { envelope, action })
    }

    /// Whether it reports what the payment provider did: the ledger's references for its
    /// order must be read before it is decided.
    pub fn observes_payment(&self) -> bool {
        matches!(self.action, Action::Observe(_))
    }

    /// Whether it may move stock (reserve, release or ship): its products must be read
    /// before it is decided. A declined payment cancels the order it was for; other reports
    /// of the provider move no stock.
    pub fn may_move_stock(&self) -> bool {
        match &self.action {
            Action::Confirm | Action::Cancel(_) | Action::Fulfil(_) | Action::CancelUnits(_) => {
                true
            }
            Action::Observe(observed) => observed.operations.iter().any(|o| o.kind == "failure"),
            Action::ChangeStatus(request) => matches!(
                request.status,
                OrderStatus::Shipped | OrderStatus::Cancelled
            ),
            Action::RecordPayment(_)
            | Action::Refund(_)
            | Action::Capture
            | Action::UpdateFulfillment(_) => false,
        }
    }

    /// Whether it acts on the order's parcels as they are (a delivery): they must be read
    /// before it is decided.
    pub fn reads_parcels(&self) -> bool {
        match &self.action {
            Action::UpdateFulfillment(_) => true,
            Action::ChangeStatus(request) => request.status == OrderStatus::Delivered,
            _ => false,
        }
    }
}

/// One line of an order whose command may move stock, with its product's locked stock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockLine {
    pub order_id: Uuid,
    pub item_id: Uuid,
    pub product_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    pub quantity_shipped: i32,
    pub quantity_cancelled: i32,
    /// Units accepted parcels and cancellations claimed (see `parcels`).
    pub quantity_claimed: i32,
    pub unit_price_minor: i64,
    pub stock: i32,
    pub reserved: i32,
}

/// A timeline entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub kind: EntryKind,
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub actor_id: Option<Uuid>,
    pub actor_role: ActorKind,
    pub reason: Option<String>,
    pub seq: i64,
}

/// A customer notification to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub kind: String,
    pub message: String,
}

/// A customer email to send about a status change, or a receipt for money taken or given
/// back, identified by the change's event id.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub message: String,
    pub tracking_number: Option<String>,
    pub receipt: Option<Receipt>,
}

/// What a receipt tells: the operation and the order's money after it, in minor units.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub kind: &'static str,
    pub amount: i64,
    pub paid: i64,
    pub refunded: i64,
}

/// How the batch moves a product's stock, and what its decisions assumed of it. Written as
/// deltas, so a batch that read the stock without locking it can apply them to whatever
/// the row holds by then, as long as the assumptions still hold (see `store::move_stock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductRow {
    pub id: Uuid,
    /// Units put on sale (positive) or taken off it (negative).
    pub stock_delta: i32,
    pub reserved_delta: i32,
    /// When an order was refused for want of this product: the stock the batch read. The
    /// refusal stands only while the stock has not grown past it.
    pub refused_at: Option<i32>,
}

/// A ledger entry to write: one operation on an order's money.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub kind: &'static str,
    pub amount_minor: i64,
    /// For money recorded by hand, the command's event id: a command applied twice
    /// would collide with its own entry.
    pub provider_reference: String,
    pub actor_id: Option<Uuid>,
    pub note: Option<String>,
    pub payment_status: PaymentStatus,
}

/// A call to the payment provider to queue (see `crate::payments`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `create_intent`, `capture`, `cancel` or `refund`.
    pub kind: &'static str,
    pub amount_minor: i64,
    /// Sent as the provider's idempotency key, so a call repeated acts once.
    pub idempotency_key: String,
}

/// Everything a batch writes, in one statement.
#[derive(Debug, Default)]
pub struct Writes {
    /// Orders in their state after the batch.
    pub orders: Vec<LockedOrder>,
    pub entries: Vec<EntryRow>,
    pub notifications: Vec<NotificationRow>,
    /// Emails for the customers who want them (the store checks who does).
    pub emails: Vec<EmailRow>,
    /// `order.status_changed` and `order.payment_changed` events for the outbox.
    pub events: Vec<Envelope>,
    pub ledger: Vec<LedgerRow>,
    /// Calls to the payment provider, made by the worker after the batch commits.
    pub calls: Vec<CallRow>,
    /// Inbox rows: `(event_id, order_id)` of every command applied or refused.
    pub processed: Vec<(Uuid, Uuid)>,
    pub products: Vec<ProductRow>,
    /// Parcels shipped or delivered.
    pub parcels: Vec<ParcelRow>,
    /// Order lines whose shipped or claimed units moved.
    pub items: Vec<ItemUnits>,
}

/// The decided batch: outcomes in the order the commands were given, and the writes.
#[derive(Debug)]
pub struct Plan {
    pub outcomes: Vec<Outcome>,
    pub writes: Writes,
}

/// The order in which to apply a batch's commands, given each one's order and `seq`: orders
/// take their turns in the order their first command arrived, so stock goes to orders as
/// they were accepted; each order's commands in `seq` order, wherever they sit in the batch.
pub fn turns(commands: impl Iterator<Item = (Uuid, i64)>) -> Vec<usize> {
    let keys: Vec<(Uuid, i64)> = commands.collect();
    let mut first_arrival: HashMap<Uuid, usize> = HashMap::new();
    for (i, (order_id, _)) in keys.iter().enumerate() {
        first_arrival.entry(*order_id).or_insert(i);
    }
    let mut turn: Vec<usize> = (0..keys.len()).collect();
    turn.sort_by_key(|&i| (first_arrival[&keys[i].0], keys[i].1));
    turn
}

/// Decides `commands` against `orders`, `stock` and `parcels`, `known` being the provider
/// references the orders' ledgers already hold; orders whose stock is reserved while
/// `stripe` is the provider wait for their payment. An order's commands are taken in `seq` order; a
/// command for an order not among `orders`, or with a payload that does not fit its type,
/// fails the whole batch (permanently).
pub fn plan(
    commands: &[Command<'_>],
    orders: Vec<LockedOrder>,
    stock: Vec<StockLine>,
    parcels: Vec<Parcel>,
    mut known: HashSet<String>,
    stripe: bool,
) -> Result<Plan, HandleError> {
    let mut parcels = parcels::by_order(parcels);
    let mut orders: HashMap<Uuid, (LockedOrder, bool)> = orders
        .into_iter()
        .map(|order| (order.id, (order, false)))
        .collect();
    let mut book = StockBook::new(stock);
    let mut writes = Writes::default();
    let mut outcomes = vec![Outcome::Duplicate; commands.len()];
    for i in turns(
        commands
            .iter()
            .map(|c| (c.envelope.order_id, c.envelope.seq)),
    ) {
        let Command {
            envelope: command,
            action,
        } = &commands[i];
        let Some((order, changed)) = orders.get_mut(&command.order_id) else {
            return Err(HandleError::Permanent(format!(
                "order {} does not exist",
                command.order_id
            )));
        };
        let next_expected = order.applied_seq + 1;
        if command.seq > next_expected {
            outcomes[i] = Outcome::Early { next_expected };
            continue;
        }
        if command.seq < next_expected {
            continue;
        }
        let applied = match action {
            Action::RecordPayment(recorded) => {
                let operation = Operation::Receive(recorded.amount.minor());
                let note = recorded.reference.iter().chain(&recorded.note);
                let note = note.cloned().collect::<Vec<_>>().join(": ");
                settle(
                    order,
                    operation,
                    Some(note).filter(|n| !n.is_empty()),
                    None,
                    command,
                    &mut writes,
                )
            }
            Action::Refund(refund) if order.by_stripe() => {
                provider::request_refund(order, refund.amount.minor(), command, &mut writes)
            }
            Action::Refund(refund) => {
                let operation = Operation::Refund(refund.amount.minor());
                settle(
                    order,
                    operation,
                    refund.reason.clone(),
                    None,
                    command,
                    &mut writes,
                )
            }
            Action::Capture => provider::capture_now(order, command, &mut writes),
            Action::Observe(observed) => {
                provider::observe(order, observed, command, &mut known, &mut book, &mut writes)
            }
            Action::Confirm => {
                if stripe && order.status == OrderStatus::Pending {
                    order.payment_provider = "stripe".into();
                }
                let change = confirmation(command, order, &mut book);
                let applied = attempt(order, change, &mut book, &mut writes);
                if applied && order.status == OrderStatus::AwaitingPayment {
                    provider::create_intent(order, &mut writes);
                }
                applied
            }
            Action::Fulfil(request) => {
                let parcel = Parcel::requested(command, request);
                let note = request.note.clone();
                parcels::ship(
                    order,
                    parcel,
                    note,
                    command,
                    &mut book,
                    &mut parcels,
                    &mut writes,
                )
            }
            Action::CancelUnits(request) => {
                units::cancel(order, request, command, &mut book, &mut writes)
            }
            Action::UpdateFulfillment(update) => {
                parcels::deliver(order, update, command, &mut parcels, &mut writes)
            }
            Action::ChangeStatus(request) if request.status == OrderStatus::Shipped => {
                parcels::ship_rest(
                    order,
                    request,
                    command,
                    &mut book,
                    &mut parcels,
                    &mut writes,
                )
            }
            Action::ChangeStatus(request) if request.status == OrderStatus::PartiallyShipped => {
                let reason = "set_by_parcels: an order is partially shipped by shipping parcels";
                let entry = standing_refusal(order, command, &command.actor, reason.into());
                writes.entries.push(entry);
                false
            }
            Action::ChangeStatus(request) if request.status == OrderStatus::Delivered => {
                parcels::deliver_all(
                    order,
                    request,
                    command,
                    &mut book,
                    &mut parcels,
                    &mut writes,
                )
            }
            Action::ChangeStatus(request) => {
                let change = Change::new(
                    command,
                    request.status,
                    command.actor.clone(),
                    request.note.clone(),
                    request.tracking_number.clone(),
                );
                let applied = attempt(order, change, &mut book, &mut writes);
                if applied {
                    provider::after_transition(order, command, &mut writes);
                }
                applied
            }
            Action::Cancel(request) => {
                let reason = request.reason.clone();
                let reason = reason.unwrap_or_else(|| "cancelled on request".into());
                let change = Change::new(
                    command,
                    OrderStatus::Cancelled,
                    command.actor.clone(),
                    Some(reason),
                    None,
                );
                let applied = attempt(order, change, &mut book, &mut writes);
                if applied {
                    provider::after_transition(order, command, &mut writes);
                }
                applied
            }
        };
        outcomes[i] = if applied {
            Outcome::Applied
        } else {
            Outcome::Refused
        };
        order.applied_seq = command.seq;
        *changed = true;
        writes.processed.push((command.event_id, order.id));
    }
    writes.orders = orders
        .into_values()
        .filter_map(|(order, changed)| changed.then_some(order))
        .collect();
    writes.products = book.changed();
    writes.items = book.changed_items();
    Ok(Plan { outcomes, writes })
}

/// The transition a command asks for, and its context.
struct Change<'a> {
    to: OrderStatus,
    actor: Actor,
    reason: Option<String>,
    tracking_number: Option<String>,
    cause: &'a Envelope,
}

impl<'a> Change<'a> {
    fn new(
        cause: &'a Envelope,
        to: OrderStatus,
        actor: Actor,
        reason: Option<String>,
        tracking_number: Option<String>,
    ) -> Self {
        Change {
            to,
            actor,
            reason,
            tracking_number,
            cause,
        }
    }
}

/// What `order.created` comes to: confirmed with its stock reserved, or cancelled for want
/// of stock.
fn confirmation<'a>(
    command: &'a Envelope,
    order: &LockedOrder,
    book: &mut StockBook,
) -> Change<'a> {
    // Reserve only for an order that can still be confirmed (not one cancelled meanwhile).
    let reservation = if order.status == OrderStatus::Pending {
        book.reserve(order.id)
    } else {
        Ok(())
    };
    let (to, reason) = match reservation {
        // A provider that authorises confirms the order once the payment is authorised:
        // stock first, so nobody pays for what is not on the shelf (and no authorisation
        // needs voiding for an order that cannot be filled).
        Ok(()) if order.by_stripe() => (
            OrderStatus::AwaitingPayment,
            "stock reserved; awaiting payment".to_owned(),
        ),
        Ok(()) => (OrderStatus::Confirmed, "stock reserved".to_owned()),
        Err(short) => (
            OrderStatus::Cancelled,
            format!("out_of_stock: {}", short.join(", ")),
        ),
    };
    Change::new(command, to, Actor::system(), Some(reason), None)
}

/// Applies `change` to `order` when the lifecycle allows it now, else records the refusal.
/// Returns whether it was applied.
fn attempt(
    order: &mut LockedOrder,
    change: Change<'_>,
    book: &mut StockBook,
    writes: &mut Writes,
) -> bool {
    let refusal = match order.status.transition(change.to, change.actor.role) {
        Err(refusal) => Some(format!("{}: {refusal}", refusal.code())),
        Ok(())
            if change.to.requires_tracking_number()
                && change.tracking_number.is_none()
                && order.tracking_number.is_none() =>
        {
            Some("tracking_required: shipping needs a tracking number".into())
        }
        Ok(()) => None,
    };
    if let Some(reason) = refusal {
        tracing::info!(order_id = %order.id, from = %order.status, to = %change.to, reason, "transition refused");
        writes.entries.push(EntryRow {
            id: Uuid::now_v7(),
            order_id: order.id,
            kind: EntryKind::Rejected,
            from: Some(order.status),
            to: change.to,
            actor_id: change.actor.user_id,
            actor_role: change.actor.role,
            reason: Some(reason),
            seq: change.cause.seq,
        });
        return false;
    }
    if change.to == OrderStatus::Cancelled && order.status.holds_reserved_stock() {
        book.release(order.id);
    }
    apply(order, change, writes);
    true
}

/// Applies a money operation to `order` when its payment allows it, else records the
/// refusal. Returns whether it was applied. A refund that gives back everything captured
/// for a delivered order also makes the order `refunded`.
/// `reference` names the operation in the ledger (a provider's id for it); by default the
/// command's event id.
fn settle(
    order: &mut LockedOrder,
    operation: Operation,
    note: Option<String>,
    reference: Option<String>,
    cause: &Envelope,
    writes: &mut Writes,
) -> bool {
    let actor = &cause.actor;
    let next = match order.payment().apply(operation) {
        Ok(next) => next,
        Err(refusal) => {
            // The api counted an accepted refund against what may still be refunded; one
            // that cannot apply gives that room back.
            if let Operation::Refund(amount) = operation {
                order.refunds_accepted_minor -= amount;
            }
            tracing::info!(order_id = %order.id, kind = operation.kind(), %refusal, "payment operation refused");
            let reason = format!("{}: {refusal}", refusal.code());
            writes
                .entries
                .push(standing_refusal(order, cause, actor, reason));
            return false;
        }
    };
    order.set_payment(next);
    writes.ledger.push(LedgerRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: operation.kind(),
        amount_minor: operation.amount(),
        provider_reference: reference.unwrap_or_else(|| cause.event_id.to_string()),
        actor_id: actor.user_id,
        note: note.clone(),
        payment_status: next.status,
    });
    let sentence = customer_text::payment_sentence(operation, &order.currency);
    // The customer's sentence: amounts, never the staff note (which the ledger keeps).
    writes.entries.push(EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::PaymentChanged,
        from: None,
        to: order.status,
        actor_id: actor.user_id,
        actor_role: actor.role,
        reason: Some(sentence.clone()),
        seq: cause.seq,
    });
    let message = told(order, &sentence);
    notify(
        order,
        format!("payment_{}", operation.kind()),
        message,
        cause.seq,
        writes,
    );
    let event = Envelope::new(
        EventType::PaymentChanged,
        order.id,
        cause.seq,
        actor.clone(),
        cause.correlation_id.clone(),
        PaymentChanged {
            kind: operation.kind().to_owned(),
            amount: Money::from_minor(operation.amount()),
            currency: order.currency.clone(),
            payment_status: next.status,
            amount_authorized: Money::from_minor(next.authorized),
            amount_captured: Money::from_minor(next.captured),
            amount_refunded: Money::from_minor(next.refunded),
            customer_id: order.customer_id,
            status: order.status,
            message: sentence.clone(),
            feed_id: None,
        },
    );
    if matches!(
        operation,
        Operation::Capture(_) | Operation::Receive(_) | Operation::Refund(_)
    ) {
        writes.emails.push(EmailRow {
            id: event.event_id,
            order_id: order.id,
            status: order.status,
            message: sentence,
            tracking_number: None,
            receipt: Some(Receipt {
                kind: operation.kind(),
                amount: operation.amount(),
                paid: next.captured,
                refunded: next.refunded,
            }),
        });
    }
    writes.events.push(event);
    if next.status == PaymentStatus::Refunded && order.status == OrderStatus::Delivered {
        let reason = Some("refunded in full".to_owned());
        let change = Change::new(cause, OrderStatus::Refunded, Actor::system(), reason, None);
        apply(order, change, writes);
    }
    true
}

/// The timeline entry of a command that could not apply and asked for no transition (money,
/// parcels); the order's status stays.
fn standing_refusal(
    order: &LockedOrder,
    cause: &Envelope,
    actor: &Actor,
    reason: String,
) -> EntryRow {
    EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::Rejected,
        from: None,
        to: order.status,
        actor_id: actor.user_id,
        actor_role: actor.role,
        reason: Some(reason),
        seq: cause.seq,
    }
}

/// Records an allowed transition: the order's new state, the timeline entry, the customer's
/// notification and its timeline entry, and the `order.status_changed` event.
fn apply(order: &mut LockedOrder, change: Change<'_>, writes: &mut Writes) {
    let (from, seq) = (order.status, change.cause.seq);
    if change.tracking_number.is_some() {
        order.tracking_number.clone_from(&change.tracking_number);
    }
    order.status = change.to;
    let event = Envelope::new(
        EventType::StatusChanged,
        order.id,
        seq,
        change.actor.clone(),
        change.cause.correlation_id.clone(),
        StatusChanged {
            from,
            to: change.to,
            reason: change.reason.clone(),
            tracking_number: order.tracking_number.clone(),
            customer_id: Some(order.customer_id),
            feed_id: None,
        },
    );
    // What the customer is told: never the staff-side reason, which may name SKUs or hold a
    // vendor's private note.
    let sentence = customer_text::status_sentence(
        change.to,
        change.reason.as_deref(),
        change.actor.role.as_str(),
    );
    if emails_customer(change.to) {
        writes.emails.push(EmailRow {
            id: event.event_id,
            order_id: order.id,
            status: change.to,
            message: sentence.to_owned(),
            tracking_number: order.tracking_number.clone(),
            receipt: None,
        });
    }
    writes.events.push(event);
    // Ids are v7 and made in this order, so entries written at the same instant stay in order.
    writes.entries.push(EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::StatusChanged,
        from: Some(from),
        to: change.to,
        actor_id: change.actor.user_id,
        actor_role: change.actor.role,
        reason: change.reason.clone(),
        seq,
    });
    let message = format!(
        "Your order {} is now {}. {sentence}",
        customer_text::order_reference(order.id),
        change.to
    );
    notify(order, format!("order_{}", change.to), message, seq, writes);
}

/// What a customer is told of their order: `sentence`, after the order's reference.
fn told(order: &LockedOrder, sentence: &str) -> String {
    format!(
        "Your order {}: {sentence}",
        customer_text::order_reference(order.id)
    )
}

/// Notifies the order's customer (`kind`, `message`) and records in the timeline, at the
/// order's status as it now is, that they were told.
fn notify(order: &LockedOrder, kind: String, message: String, seq: i64, writes: &mut Writes) {
    writes.notifications.push(NotificationRow {
        id: Uuid::now_v7(),
        user_id: order.customer_id,
        order_id: order.id,
        kind,
        message,
    });
    writes.entries.push(EntryRow {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: EntryKind::Notified,
        from: None,
        to: order.status,
        actor_id: None,
        actor_role: ActorKind::System,
        reason: Some("customer notified".into()),
        seq,
    });
}

/// The changes a customer hears about by email; `processing` is the shop's business.
fn emails_customer(status: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        status,
        AwaitingPayment | Confirmed | PartiallyShipped | Shipped | Delivered | Cancelled | Refunded
    )
}

/// Decodes a command's payload; a payload that does not fit its type is permanent.
fn payload<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, HandleError> {
    T::deserialize(&envelope.payload).map_err(|e| {
        HandleError::Permanent(format!(
            "{} payload is invalid: {e}",
            envelope.event_type.routing_key()
        ))
    })
}

/// Stock of the locked products and units of the orders' lines, moved in memory as the
/// batch's commands are decided. `stock` is what can still be sold; `reserved` is what
/// confirmed, processing or partly shipped orders hold until it ships or is cancelled.
struct StockBook {
    products: HashMap<Uuid, Product>,
    /// Each order's lines.
    lines: HashMap<Uuid, Vec<Line>>,
}

struct Product {
    sku: String,
    stock: i32,
    reserved: i32,
    /// As read, before the batch moved anything.
    read: (i32, i32),
    changed: bool,
    /// An order was refused for want of it.
    refused: bool,
}

/// The lines `parcel` names, with the units it asks of each.
fn asked<'a>(
    lines: &'a mut [Line],
    parcel: &'a [LineQuantity],
) -> impl Iterator<Item = (&'a mut Line, i32)> {
    lines.iter_mut().filter_map(|line| {
        let asked = parcel.iter().find(|p| p.item_id == line.item_id)?;
        Some((line, asked.quantity))
    })
}

/// One line of an order: its product, its units, and what shipped, was cancelled or is
/// claimed of them.
struct Line {
    item_id: Uuid,
    product_id: Uuid,
    quantity: i32,
    unit_price_minor: i64,
    shipped: i32,
    cancelled: i32,
    claimed: i32,
    /// `(shipped, cancelled, claimed)` as read.
    read: (i32, i32, i32),
}

impl Line {
    /// Units neither shipped nor cancelled: what stays reserved for it.
    fn unshipped(&self) -> i32 {
        self.quantity - self.shipped - self.cancelled
    }
}

impl StockBook {
    fn new(rows: Vec<StockLine>) -> Self {
        let mut book = StockBook {
            products: HashMap::new(),
            lines: HashMap::new(),
        };
        for row in rows {
            book.lines.entry(row.order_id).or_default().push(Line {
                item_id: row.item_id,
                product_id: row.product_id,
                quantity: row.quantity,
                unit_price_minor: row.unit_price_minor,
                shipped: row.quantity_shipped,
                cancelled: row.quantity_cancelled,
                claimed: row.quantity_claimed,
                read: (
                    row.quantity_shipped,
                    row.quantity_cancelled,
                    row.quantity_claimed,
                ),
            });
            book.products.entry(row.product_id).or_insert(Product {
                sku: row.sku,
                stock: row.stock,
                reserved: row.reserved,
                read: (row.stock, row.reserved),
                changed: false,
                refused: false,
            });
        }
        book
    }

    /// Takes every line's quantity out of stock, all or nothing. `Err` lists the SKUs that
    /// are short, sorted (and nothing moved).
    fn reserve(&mut self, order_id: Uuid) -> Result<(), Vec<String>> {
        let lines = self.lines.get(&order_id).map_or(&[][..], Vec::as_slice);
        let mut short = Vec::new();
        for line in lines {
            let product = self
                .products
                .get_mut(&line.product_id)
                .expect("every line's product is loaded with it");
            if product.stock < line.quantity {
                product.refused = true;
                short.push(product.sku.clone());
            }
        }
        if !short.is_empty() {
            short.sort();
            return Err(short);
        }
        self.move_lines(order_id, |product, line| {
            product.stock -= line.quantity;
            product.reserved += line.quantity;
        });
        Ok(())
    }

    /// Puts a cancelled order's reserved (unshipped) units back on sale.
    fn release(&mut self, order_id: Uuid) {
        self.move_lines(order_id, |product, line| {
            product.stock += line.unshipped();
            product.reserved -= line.unshipped();
        });
    }

    /// A parcel left the warehouse: its units are shipped and no longer reserved.
    fn ship(&mut self, order_id: Uuid, parcel: &[LineQuantity]) {
        let lines = self
            .lines
            .get_mut(&order_id)
            .map_or(&mut [][..], Vec::as_mut_slice);
        for (line, quantity) in asked(lines, parcel) {
            line.shipped += quantity;
            let product = self
                .products
                .get_mut(&line.product_id)
                .expect("every line's product is loaded with it");
            product.reserved -= quantity;
            product.changed = true;
        }
    }

    /// Cancelled units go back on sale; returns what they were worth (minor units).
    fn cancel(&mut self, order_id: Uuid, units: &[LineQuantity]) -> i64 {
        let lines = self
            .lines
            .get_mut(&order_id)
            .map_or(&mut [][..], Vec::as_mut_slice);
        let mut value = 0;
        for (line, quantity) in asked(lines, units) {
            line.cancelled += quantity;
            value += line.unit_price_minor * i64::from(quantity);
            let product = self
                .products
                .get_mut(&line.product_id)
                .expect("every line's product is loaded with it");
            product.stock += quantity;
            product.reserved -= quantity;
            product.changed = true;
        }
        value
    }

    /// The price of one unit of the order's line `item_id`, if the order has it.
    fn unit_price(&self, order_id: Uuid, item_id: Uuid) -> Option<i64> {
        let lines = self.lines.get(&order_id)?;
        let line = lines.iter().find(|line| line.item_id == item_id)?;
        Some(line.unit_price_minor)
    }

    /// Units shipped over the order's lines.
    fn shipped(&self, order_id: Uuid) -> i32 {
        let lines = self.lines.get(&order_id).into_iter().flatten();
        lines.map(|line| line.shipped).sum()
    }

    /// Every unit not claimed yet is claimed (by a request to ship all that remains).
    fn claim_rest(&mut self, order_id: Uuid) {
        for line in self.lines.get_mut(&order_id).into_iter().flatten() {
            line.claimed = line.quantity;
        }
    }

    /// A parcel refused gives back the units its request claimed.
    fn give_back(&mut self, order_id: Uuid, parcel: &[LineQuantity]) {
        let lines = self
            .lines
            .get_mut(&order_id)
            .map_or(&mut [][..], Vec::as_mut_slice);
        for (line, quantity) in asked(lines, parcel) {
            line.claimed = (line.claimed - quantity).max(line.shipped);
        }
    }

    /// The order's lines as far as shipping goes.
    fn line_units(&self, order_id: Uuid) -> Vec<LineUnits> {
        self.lines
            .get(&order_id)
            .into_iter()
            .flatten()
            .map(|line| LineUnits {
                item_id: line.item_id,
                sku: self.products[&line.product_id].sku.clone(),
                quantity: line.quantity,
                taken: line.shipped + line.cancelled,
            })
            .collect()
    }

    fn move_lines(&mut self, order_id: Uuid, movement: impl Fn(&mut Product, &Line)) {
        for line in self.lines.get(&order_id).into_iter().flatten() {
            let product = self
                .products
                .get_mut(&line.product_id)
                .expect("every line's product is loaded with it");
            movement(product, line);
            product.changed = true;
        }
    }

    fn changed(&self) -> Vec<ProductRow> {
        let mut rows: Vec<ProductRow> = self
            .products
            .iter()
            .filter(|(_, product)| product.changed || product.refused)
            .map(|(id, product)| ProductRow {
                id: *id,
                stock_delta: product.stock - product.read.0,
                reserved_delta: product.reserved - product.read.1,
                refused_at: product.refused.then_some(product.read.0),
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        rows
    }

    fn changed_items(&self) -> Vec<ItemUnits> {
        let mut rows: Vec<ItemUnits> = self
            .lines
            .values()
            .flatten()
            .filter(|line| (line.shipped, line.cancelled, line.claimed) != line.read)
            .map(|line| ItemUnits {
                id: line.item_id,
                shipped: line.shipped,
                cancelled: line.cancelled,
                claimed: line.claimed,
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        rows
    }
}

#[cfg(test)]
mod tests {
    use common::domain::{FulfillmentStatus, OrderStatus::*};
    use serde_json::json;

    use super::*;

    fn order(status: OrderStatus, applied_seq: i64) -> LockedOrder {
        LockedOrder {
            id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            status,
            applied_seq,
            tracking_number: None,
            currency: "USD".into(),
            total_amount_minor: 10_000,
            payment_status: PaymentStatus::Unpaid,
            amount_authorized_minor: 0,
            amount_captured_minor: 0,
            amount_refunded_minor: 0,
            refunds_accepted_minor: 0,
            payment_provider: "manual".into(),
        }
    }

    /// Decodes the commands and decides them.
    fn decide(
        commands: &[&Envelope],
        orders: Vec<LockedOrder>,
        stock: Vec<StockLine>,
    ) -> Result<Plan, HandleError> {
        let commands = commands
            .iter()
            .map(|envelope| Command::decode(envelope))
            .collect::<Result<Vec<_>, _>>()?;
        plan(&commands, orders, stock, Vec::new(), HashSet::new(), false)
    }

    fn may_move_stock(command: &Envelope) -> bool {
        Command::decode(command).is_ok_and(|command| command.may_move_stock())
    }

    fn command(
        kind: EventType,
        order: &LockedOrder,
        seq: i64,
        payload: serde_json::Value,
    ) -> Envelope {
        let vendor = Actor::user(Uuid::now_v7(), common::domain::Role::Vendor);
        Envelope::new(kind, order.id, seq, vendor, "test", payload)
    }

    /// A vendor's `order.status_change_requested`.
    fn status_change(order: &LockedOrder, seq: i64, payload: serde_json::Value) -> Envelope {
        command(EventType::StatusChangeRequested, order, seq, payload)
    }

    fn created(order: &LockedOrder) -> Envelope {
        command(EventType::OrderCreated, order, 1, json!({}))
    }

    /// One line of `quantity` of a product that has `stock` left.
    fn line(order: &LockedOrder, product: Uuid, quantity: i32, stock: i32) -> StockLine {
        StockLine {
            order_id: order.id,
            item_id: Uuid::now_v7(),
            product_id: product,
            sku: format!("SKU-{}", &product.simple().to_string()[28..]),
            quantity,
            quantity_shipped: 0,
            quantity_cancelled: 0,
            quantity_claimed: 0,
            unit_price_minor: 1_000,
            stock,
            reserved: 0,
        }
    }

    fn status_of(plan: &Plan, order: &LockedOrder) -> OrderStatus {
        plan.writes
            .orders
            .iter()
            .find(|o| o.id == order.id)
            .expect("written")
            .status
    }

    #[test]
    fn a_created_order_with_stock_is_confirmed_with_every_row_written() {
        let placed = order(Pending, 0);
        let product = Uuid::now_v7();
        let command = created(&placed);
        let plan = decide(
            &[&command],
            vec![placed.clone()],
            vec![line(&placed, product, 2, 5)],
        )
        .expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied]);
        let writes = &plan.writes;
        assert_eq!(status_of(&plan, &placed), Confirmed);
        assert_eq!(writes.orders[0].applied_seq, 1);
        assert_eq!(
            writes.products,
            [ProductRow {
                id: product,
                stock_delta: -2,
                reserved_delta: 2,
                refused_at: None
            }]
        );
        let kinds: Vec<EntryKind> = writes.entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EntryKind::StatusChanged, EntryKind::Notified]);
        assert!(
            writes.entries[0].id < writes.entries[1].id,
            "ids keep the entries in order"
        );
        assert_eq!(writes.notifications.len(), 1);
        assert_eq!(writes.notifications[0].user_id, placed.customer_id);
        assert_eq!(writes.events.len(), 1);
        assert_eq!(writes.events[0].event_type, EventType::StatusChanged);
        assert_eq!(
            writes.emails.len(),
            1,
            "the customer hears of the confirmation"
        );
        assert_eq!(writes.emails[0].id, writes.events[0].event_id);
        assert_eq!(writes.emails[0].status, Confirmed);
        assert_eq!(writes.processed, [(command.event_id, placed.id)]);
    }

    #[test]
    fn orders_competing_for_stock_are_served_in_turn_all_or_nothing() {
        let product = Uuid::now_v7();
        let orders: Vec<LockedOrder> = (0..3).map(|_| order(Pending, 0)).collect();
        // 3 units: the first takes 2, the second (2) is short, the third (1) still fits.
        let stock = vec![
            line(&orders[0], product, 2, 3),
            line(&orders[1], product, 2, 3),
            line(&orders[2], product, 1, 3),
        ];
        let commands: Vec<Envelope> = orders.iter().map(created).collect();
        let refs: Vec<&Envelope> = commands.iter().collect();
        let plan = decide(&refs, orders.clone(), stock).expect("plan");
        assert_eq!(
            plan.outcomes,
            [Outcome::Applied; 3],
            "a cancellation for want of stock is applied too"
        );
        assert_eq!(status_of(&plan, &orders[0]), Confirmed);
        assert_eq!(status_of(&plan, &orders[1]), Cancelled);
        assert_eq!(status_of(&plan, &orders[2]), Confirmed);
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: product,
                stock_delta: -3,
                reserved_delta: 3,
                refused_at: Some(3)
            }]
        );
        let shortage = plan
            .writes
            .entries
            .iter()
            .find(|e| e.order_id == orders[1].id)
            .expect("entry");
        assert!(
            shortage
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("out_of_stock: SKU-")),
            "{shortage:?}"
        );
        assert!(
            !plan
                .writes
                .notifications
                .iter()
                .any(|n| n.message.contains("SKU-")),
            "customers never see SKUs"
        );
    }

    #[test]
    fn a_refusal_records_the_stock_it_was_decided_on_even_when_nothing_moves() {
        let placed = order(Pending, 0);
        let product = Uuid::now_v7();
        let command = created(&placed);
        let plan = decide(
            &[&command],
            vec![placed.clone()],
            vec![line(&placed, product, 2, 1)],
        )
        .expect("plan");
        assert_eq!(status_of(&plan, &placed), Cancelled);
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: product,
                stock_delta: 0,
                reserved_delta: 0,
                refused_at: Some(1)
            }],
            "the refusal holds only while the product has no more than 1 on sale"
        );
    }

    #[test]
    fn stock_goes_to_orders_in_the_order_they_arrived_whatever_their_ids() {
        let product = Uuid::now_v7();
        let mut orders: Vec<LockedOrder> = (0..3).map(|_| order(Pending, 0)).collect();
        // The batch holds them newest id first; one unit each, two in stock.
        orders.sort_by_key(|o| std::cmp::Reverse(o.id));
        let stock = orders.iter().map(|o| line(o, product, 1, 2)).collect();
        let commands: Vec<Envelope> = orders.iter().map(created).collect();
        let refs: Vec<&Envelope> = commands.iter().collect();
        let plan = decide(&refs, orders.clone(), stock).expect("plan");
        assert_eq!(status_of(&plan, &orders[0]), Confirmed);
        assert_eq!(status_of(&plan, &orders[1]), Confirmed);
        assert_eq!(status_of(&plan, &orders[2]), Cancelled);
    }

    #[test]
    fn turns_keep_arrival_across_orders_and_seq_within_one() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        // b arrived first; a's seq 2 arrived before its seq 1.
        let batch = [(b, 1), (a, 2), (b, 2), (a, 1)];
        assert_eq!(turns(batch.into_iter()), [0, 2, 3, 1]);
    }

    #[test]
    fn an_orders_commands_apply_in_seq_order_whatever_their_place_in_the_batch() {
        let placed = order(Pending, 0);
        let product = Uuid::now_v7();
        let cancel = command(
            EventType::CancelRequested,
            &placed,
            2,
            json!({ "reason": "changed my mind" }),
        );
        let created = created(&placed);
        let plan = decide(
            &[&cancel, &created],
            vec![placed.clone()],
            vec![line(&placed, product, 2, 5)],
        )
        .expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied, Outcome::Applied]);
        assert_eq!(status_of(&plan, &placed), Cancelled);
        assert_eq!(plan.writes.orders[0].applied_seq, 2);
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: product,
                stock_delta: 0,
                reserved_delta: 0,
                refused_at: None
            }],
            "reserved, then released"
        );
        let seqs: Vec<i64> = plan.writes.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn early_and_already_applied_commands_write_nothing() {
        let confirmed = order(Confirmed, 1);
        let again = created(&confirmed);
        let early = status_change(&confirmed, 3, json!({ "status": "shipped" }));
        let plan = decide(&[&again, &early], vec![confirmed], Vec::new()).expect("plan");
        assert_eq!(
            plan.outcomes,
            [Outcome::Duplicate, Outcome::Early { next_expected: 2 }]
        );
        assert!(
            plan.writes.orders.is_empty()
                && plan.writes.entries.is_empty()
                && plan.writes.processed.is_empty()
        );
    }

    #[test]
    fn a_refused_command_is_recorded_and_counted_as_applied_in_sequence() {
        let processing = order(Processing, 2);
        let ship = status_change(&processing, 3, json!({ "status": "shipped" }));
        let plan = decide(&[&ship], vec![processing.clone()], Vec::new()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        assert_eq!(status_of(&plan, &processing), Processing);
        assert_eq!(plan.writes.orders[0].applied_seq, 3);
        assert_eq!(plan.writes.entries[0].kind, EntryKind::Rejected);
        assert!(
            plan.writes.events.is_empty()
                && plan.writes.notifications.is_empty()
                && plan.writes.products.is_empty()
        );
        assert_eq!(plan.writes.processed, [(ship.event_id, processing.id)]);
    }

    #[test]
    fn shipping_moves_reserved_stock_out_and_keeps_the_tracking_number() {
        let processing = order(Processing, 2);
        let product = Uuid::now_v7();
        let ship = status_change(
            &processing,
            3,
            json!({ "status": "shipped", "tracking_number": "TRK-1" }),
        );
        assert!(may_move_stock(&ship));
        let mut held = line(&processing, product, 2, 5);
        held.reserved = 2;
        let plan = decide(&[&ship], vec![processing.clone()], vec![held]).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied]);
        assert_eq!(
            plan.writes.orders[0].tracking_number.as_deref(),
            Some("TRK-1")
        );
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: product,
                stock_delta: 0,
                reserved_delta: -2,
                refused_at: None
            }]
        );
    }

    /// A vendor's `order.fulfillment_requested` for `lines` (item, units).
    fn parcel(order: &LockedOrder, seq: i64, lines: &[(Uuid, i32)], tracking: &str) -> Envelope {
        let lines: Vec<_> = lines
            .iter()
            .map(|(item_id, quantity)| json!({ "item_id": item_id, "quantity": quantity }))
            .collect();
        let payload = json!({
            "fulfillment_id": Uuid::now_v7(), "lines": lines, "carrier": "DHL",
            "tracking_number": tracking, "note": null,
        });
        command(EventType::FulfillmentRequested, order, seq, payload)
    }

    /// Lines of 3 A and 2 B of a processing order, reserved, claimed as `claimed`.
    fn two_lines(order: &LockedOrder, claimed: [i32; 2]) -> Vec<StockLine> {
        let mut lines = vec![
            line(order, Uuid::now_v7(), 3, 10),
            line(order, Uuid::now_v7(), 2, 10),
        ];
        for (line, claimed) in lines.iter_mut().zip(claimed) {
            line.reserved = line.quantity;
            line.quantity_claimed = claimed;
        }
        lines
    }

    #[test]
    fn a_parcel_ships_some_units_and_the_order_is_partly_shipped_until_the_last() {
        let processing = order(Processing, 2);
        let lines = two_lines(&processing, [2, 0]);
        let (a, b) = (lines[0].item_id, lines[1].item_id);
        let first = parcel(&processing, 3, &[(a, 2)], "TRK-1");
        assert!(may_move_stock(&first));
        let plan = decide(&[&first], vec![processing.clone()], lines.clone()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied]);
        assert_eq!(status_of(&plan, &processing), PartiallyShipped);
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: lines[0].product_id,
                stock_delta: 0,
                reserved_delta: -2,
                refused_at: None
            }],
            "only the parcel's units leave the reservation"
        );
        assert_eq!(
            plan.writes.items,
            [ItemUnits {
                id: a,
                shipped: 2,
                cancelled: 0,
                claimed: 2
            }]
        );
        assert_eq!(plan.writes.parcels.len(), 1);
        assert!(plan.writes.parcels[0].new);
        let kinds: Vec<EventType> = plan.writes.events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            [EventType::FulfillmentChanged, EventType::StatusChanged]
        );
        assert_eq!(plan.writes.emails.len(), 1, "one email for the parcel");
        assert_eq!(
            plan.writes.emails[0].tracking_number.as_deref(),
            Some("TRK-1")
        );

        // The rest in a second parcel: shipped.
        let mut partly = processing.clone();
        partly.status = PartiallyShipped;
        partly.applied_seq = 3;
        let mut after = lines;
        after[0].quantity_shipped = 2;
        after[0].quantity_claimed = 3;
        after[1].quantity_claimed = 2;
        let second = parcel(&partly, 4, &[(a, 1), (b, 2)], "TRK-2");
        let plan = decide(&[&second], vec![partly.clone()], after).expect("plan");
        assert_eq!(status_of(&plan, &partly), Shipped);
        assert_eq!(
            plan.writes.orders[0].tracking_number.as_deref(),
            Some("TRK-2")
        );
    }

    #[test]
    fn a_parcel_beyond_what_remains_is_refused_and_gives_its_claim_back() {
        let processing = order(Processing, 2);
        let mut lines = two_lines(&processing, [3, 0]);
        lines[0].quantity_shipped = 2;
        let a = lines[0].item_id;
        let over = parcel(&processing, 3, &[(a, 2)], "TRK-1");
        let plan = decide(&[&over], vec![processing.clone()], lines).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        assert_eq!(status_of(&plan, &processing), Processing);
        assert!(plan.writes.parcels.is_empty() && plan.writes.events.is_empty());
        assert_eq!(
            plan.writes.items,
            [ItemUnits {
                id: a,
                shipped: 2,
                cancelled: 0,
                claimed: 2
            }]
        );
        let reason = plan.writes.entries[0].reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("exceeds_remaining: lines[0]: only 1 of"),
            "{reason}"
        );
    }

    #[test]
    fn a_parcel_of_an_order_not_being_prepared_is_refused() {
        let confirmed = order(Confirmed, 1);
        let lines = two_lines(&confirmed, [1, 0]);
        let early = parcel(&confirmed, 2, &[(lines[0].item_id, 1)], "TRK-1");
        let plan = decide(&[&early], vec![confirmed.clone()], lines).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        assert!(plan.writes.products.iter().all(|p| p.reserved_delta == 0));
    }

    #[test]
    fn shipping_the_order_ships_what_remains_as_one_parcel() {
        let mut partly = order(PartiallyShipped, 3);
        partly.tracking_number = Some("TRK-1".into());
        let mut lines = two_lines(&partly, [2, 0]);
        lines[0].quantity_shipped = 2;
        let ship = status_change(
            &partly,
            4,
            json!({ "status": "shipped", "tracking_number": "TRK-9" }),
        );
        let plan = decide(&[&ship], vec![partly.clone()], lines.clone()).expect("plan");
        assert_eq!(status_of(&plan, &partly), Shipped);
        let shipped = &plan.writes.parcels[0].parcel;
        assert_eq!(shipped.id, ship.event_id);
        assert_eq!(shipped.tracking_number, "TRK-9");
        let units: Vec<(Uuid, i32)> = shipped
            .lines
            .iter()
            .map(|l| (l.item_id, l.quantity))
            .collect();
        assert_eq!(units, [(lines[0].item_id, 1), (lines[1].item_id, 2)]);
        assert!(plan.writes.items.iter().all(|i| i.shipped == i.claimed));
    }

    #[test]
    fn an_order_is_delivered_when_its_last_parcel_arrives() {
        let shipped = order(Shipped, 4);
        let parcels: Vec<Parcel> = ["TRK-1", "TRK-2"]
            .iter()
            .map(|tracking| Parcel {
                id: Uuid::now_v7(),
                order_id: shipped.id,
                status: FulfillmentStatus::Shipped,
                carrier: None,
                tracking_number: (*tracking).into(),
                lines: vec![LineQuantity {
                    item_id: Uuid::now_v7(),
                    quantity: 1,
                }],
            })
            .collect();
        let arrive = |seq, parcel: &Parcel| {
            let payload =
                json!({ "fulfillment_id": parcel.id, "status": "delivered", "note": null });
            command(
                EventType::FulfillmentUpdateRequested,
                &shipped,
                seq,
                payload,
            )
        };
        let (first, second) = (arrive(5, &parcels[0]), arrive(6, &parcels[1]));
        let again = arrive(7, &parcels[0]);
        let commands: Vec<Command> = [&first, &second, &again]
            .iter()
            .map(|e| Command::decode(e).expect("decode"))
            .collect();
        assert!(commands.iter().all(Command::reads_parcels));
        let plan = plan(
            &commands,
            vec![shipped.clone()],
            vec![],
            parcels,
            HashSet::new(),
            false,
        )
        .expect("plan");
        assert_eq!(
            plan.outcomes,
            [Outcome::Applied, Outcome::Applied, Outcome::Refused]
        );
        assert_eq!(status_of(&plan, &shipped), Delivered);
        let kinds: Vec<EventType> = plan.writes.events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            [
                EventType::FulfillmentChanged,
                EventType::FulfillmentChanged,
                EventType::StatusChanged
            ]
        );
        assert_eq!(
            plan.writes.emails.len(),
            2,
            "the first parcel's, then the order's delivery"
        );
    }

    /// `order.units_cancel_requested` for `lines` (item, units), by `actor`.
    fn cancel_units(
        order: &LockedOrder,
        seq: i64,
        lines: &[(Uuid, i32)],
        actor: Actor,
    ) -> Envelope {
        let lines: Vec<_> = lines
            .iter()
            .map(|(item_id, quantity)| json!({ "item_id": item_id, "quantity": quantity }))
            .collect();
        let payload = json!({ "lines": lines, "reason": "customer changed their mind" });
        Envelope::new(
            EventType::UnitsCancelRequested,
            order.id,
            seq,
            actor,
            "test",
            payload,
        )
    }

    fn vendor() -> Actor {
        Actor::user(Uuid::now_v7(), common::domain::Role::Vendor)
    }

    #[test]
    fn cancelled_units_go_back_on_sale_and_the_total_shrinks_by_their_price() {
        let mut processing = order(Processing, 2);
        processing.total_amount_minor = 5_000;
        let lines = two_lines(&processing, [1, 0]);
        let a = lines[0].item_id;
        let command = cancel_units(&processing, 3, &[(a, 1)], vendor());
        assert!(may_move_stock(&command));
        let plan = decide(&[&command], vec![processing.clone()], lines.clone()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied]);
        let after = &plan.writes.orders[0];
        assert_eq!(
            (after.status, after.total_amount_minor),
            (Processing, 4_000)
        );
        assert_eq!(
            plan.writes.products,
            [ProductRow {
                id: lines[0].product_id,
                stock_delta: 1,
                reserved_delta: -1,
                refused_at: None
            }]
        );
        assert_eq!(
            plan.writes.items,
            [ItemUnits {
                id: a,
                shipped: 0,
                cancelled: 1,
                claimed: 1
            }]
        );
        assert_eq!(plan.writes.events[0].event_type, EventType::UnitsCancelled);
        assert_eq!(plan.writes.emails.len(), 1);
        assert!(
            plan.writes.ledger.is_empty(),
            "nothing was held, nothing is released"
        );
    }

    #[test]
    fn cancelling_units_releases_what_is_authorised_beyond_the_new_total() {
        let mut held = order(Processing, 2);
        held.total_amount_minor = 5_000;
        held.amount_authorized_minor = 5_000;
        held.payment_status = PaymentStatus::Authorized;
        let lines = two_lines(&held, [0, 2]);
        let command = cancel_units(&held, 3, &[(lines[1].item_id, 2)], vendor());
        let plan = decide(&[&command], vec![held.clone()], lines).expect("plan");
        let after = &plan.writes.orders[0];
        assert_eq!(
            (after.total_amount_minor, after.amount_authorized_minor),
            (3_000, 3_000)
        );
        assert_eq!(plan.writes.ledger.len(), 1);
        assert_eq!(
            (
                plan.writes.ledger[0].kind,
                plan.writes.ledger[0].amount_minor
            ),
            ("release", 2_000)
        );
    }

    #[test]
    fn units_cannot_be_cancelled_below_what_was_taken_and_give_their_claim_back() {
        let mut paid = order(Processing, 2);
        paid.total_amount_minor = 5_000;
        paid.amount_authorized_minor = 5_000;
        paid.amount_captured_minor = 5_000;
        paid.payment_status = PaymentStatus::Paid;
        let lines = two_lines(&paid, [1, 0]);
        let a = lines[0].item_id;
        let command = cancel_units(&paid, 3, &[(a, 1)], vendor());
        let plan = decide(&[&command], vec![paid.clone()], lines).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        assert_eq!(plan.writes.orders[0].total_amount_minor, 5_000);
        assert_eq!(
            plan.writes.items,
            [ItemUnits {
                id: a,
                shipped: 0,
                cancelled: 0,
                claimed: 0
            }]
        );
        let reason = plan.writes.entries[0].reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("captured_exceeds_total"), "{reason}");
    }

    #[test]
    fn an_order_with_nothing_left_to_ship_is_shipped_or_cancelled() {
        // Every unit cancelled by its customer before preparation: cancelled.
        let mut confirmed = order(Confirmed, 1);
        confirmed.total_amount_minor = 5_000;
        let lines = two_lines(&confirmed, [3, 2]);
        let customer = Actor::user(confirmed.customer_id, common::domain::Role::Customer);
        let all = [(lines[0].item_id, 3), (lines[1].item_id, 2)];
        let command = cancel_units(&confirmed, 2, &all, customer.clone());
        let plan = decide(&[&command], vec![confirmed.clone()], lines).expect("plan");
        assert_eq!(status_of(&plan, &confirmed), Cancelled);
        assert_eq!(plan.writes.orders[0].total_amount_minor, 0);
        assert!(
            plan.writes
                .products
                .iter()
                .all(|p| p.stock_delta + p.reserved_delta == 0)
        );

        // The rest of a partly shipped order cancelled: shipped.
        let mut partly = order(PartiallyShipped, 3);
        partly.total_amount_minor = 5_000;
        partly.tracking_number = Some("TRK-1".into());
        let mut lines = two_lines(&partly, [3, 2]);
        lines[0].quantity_shipped = 3;
        lines[0].reserved = 0;
        let command = cancel_units(&partly, 4, &[(lines[1].item_id, 2)], vendor());
        let plan = decide(&[&command], vec![partly.clone()], lines.clone()).expect("plan");
        assert_eq!(status_of(&plan, &partly), Shipped);

        // A customer may not once the order is being prepared.
        let customer = Actor::user(partly.customer_id, common::domain::Role::Customer);
        let command = cancel_units(&partly, 4, &[(lines[1].item_id, 1)], customer);
        let plan = decide(&[&command], vec![partly.clone()], lines).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
    }

    #[test]
    fn partially_shipped_is_never_set_by_a_word() {
        let processing = order(Processing, 2);
        let asked = status_change(&processing, 3, json!({ "status": "partially_shipped" }));
        let plan = decide(&[&asked], vec![processing.clone()], vec![]).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        assert_eq!(status_of(&plan, &processing), Processing);
    }

    #[test]
    fn processing_is_notified_but_not_emailed() {
        let confirmed = order(Confirmed, 1);
        let start = status_change(&confirmed, 2, json!({ "status": "processing" }));
        let plan = decide(&[&start], vec![confirmed.clone()], vec![]).expect("plan");
        assert_eq!(status_of(&plan, &confirmed), Processing);
        assert_eq!(plan.writes.notifications.len(), 1);
        assert!(plan.writes.emails.is_empty());
    }

    #[test]
    fn a_command_for_a_missing_order_or_with_a_bad_payload_fails_the_batch() {
        let ghost = created(&order(Pending, 0));
        assert!(
            matches!(decide(&[&ghost], Vec::new(), Vec::new()), Err(HandleError::Permanent(r)) if r.contains("does not exist"))
        );
        let confirmed = order(Confirmed, 1);
        let garbled = status_change(&confirmed, 2, json!({ "status": "teleported" }));
        assert!(!may_move_stock(&garbled));
        assert!(
            matches!(decide(&[&garbled], vec![confirmed], Vec::new()), Err(HandleError::Permanent(r)) if r.contains("payload"))
        );
    }

    #[test]
    fn money_received_by_hand_is_ledgered_announced_and_notified() {
        let confirmed = order(Confirmed, 1);
        let paid = command(
            EventType::PaymentRecorded,
            &confirmed,
            2,
            json!({ "amount": "100.00", "reference": "INV-7", "note": "cash" }),
        );
        let plan = decide(&[&paid], vec![confirmed.clone()], Vec::new()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied]);
        let written = &plan.writes.orders[0];
        assert_eq!(
            (
                written.payment_status,
                written.amount_captured_minor,
                written.status
            ),
            (PaymentStatus::Paid, 10_000, Confirmed)
        );
        let ledger = &plan.writes.ledger[0];
        assert_eq!((ledger.kind, ledger.amount_minor), ("receipt", 10_000));
        assert_eq!(ledger.provider_reference, paid.event_id.to_string());
        assert_eq!(ledger.note.as_deref(), Some("INV-7: cash"));
        assert_eq!(plan.writes.events[0].event_type, EventType::PaymentChanged);
        assert_eq!(plan.writes.events[0].payload["payment_status"], "paid");
        assert!(
            plan.writes.notifications[0]
                .message
                .contains("Payment of 100.00 USD received")
        );
    }

    #[test]
    fn refunding_everything_captured_for_a_delivered_order_makes_it_refunded() {
        let mut delivered = order(Delivered, 5);
        delivered.payment_status = PaymentStatus::Paid;
        delivered.amount_authorized_minor = 10_000;
        delivered.amount_captured_minor = 10_000;
        delivered.refunds_accepted_minor = 10_000;
        let refund = |seq, amount: &str| {
            command(
                EventType::RefundRequested,
                &delivered,
                seq,
                json!({ "amount": amount, "reason": "damaged" }),
            )
        };
        let (part, rest) = (refund(6, "40.00"), refund(7, "60.00"));
        let plan = decide(&[&part, &rest], vec![delivered.clone()], Vec::new()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Applied, Outcome::Applied]);
        let written = &plan.writes.orders[0];
        assert_eq!(
            (
                written.payment_status,
                written.amount_refunded_minor,
                written.status
            ),
            (PaymentStatus::Refunded, 10_000, Refunded)
        );
        let kinds: Vec<_> = plan.writes.events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            [
                EventType::PaymentChanged,
                EventType::PaymentChanged,
                EventType::StatusChanged
            ]
        );
        assert_eq!(
            plan.writes.events[0].payload["payment_status"],
            "partially_refunded"
        );
    }

    #[test]
    fn a_refund_beyond_what_was_captured_is_refused_and_gives_its_room_back() {
        let mut shipped = order(Shipped, 3);
        shipped.refunds_accepted_minor = 500;
        let refund = command(
            EventType::RefundRequested,
            &shipped,
            4,
            json!({ "amount": "5.00" }),
        );
        let plan = decide(&[&refund], vec![shipped.clone()], Vec::new()).expect("plan");
        assert_eq!(plan.outcomes, [Outcome::Refused]);
        let written = &plan.writes.orders[0];
        assert_eq!(
            (written.refunds_accepted_minor, written.applied_seq),
            (0, 4)
        );
        assert!(plan.writes.ledger.is_empty() && plan.writes.events.is_empty());
        let reason = plan.writes.entries[0].reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("refund_exceeds_captured"), "{reason}");
    }
}
