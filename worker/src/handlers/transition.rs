//! Attempting a transition: the state machine decides; an allowed one moves stock and writes
//! status, timeline, customer notification and follow-up event; a refused one writes a
//! timeline entry saying why.

use common::{
    domain::{OrderStatus, status::Initiator},
    events::{Actor, Envelope, EventType, StatusChanged},
    outbox,
    timeline::{self, Entry, EntryKind},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{LockedOrder, stock};

/// The transition being applied and its context.
pub struct Applied<'a> {
    pub to: OrderStatus,
    pub actor: &'a Actor,
    pub reason: Option<&'a str>,
    pub tracking_number: Option<&'a str>,
    pub cause: &'a Envelope,
}

/// Who the state machine should see behind an actor; an unknown role may do nothing a user can't.
fn initiator(actor: &Actor) -> Initiator {
    match actor.role.parse() {
        Ok(role) => Initiator::User(role),
        Err(_) if actor.role == "system" => Initiator::System,
        Err(_) => Initiator::User(common::domain::Role::Customer),
    }
}

/// Applies `change` when the lifecycle allows it now, else records the refusal.
/// Returns whether it was applied.
pub async fn attempt(
    conn: &mut PgConnection,
    order: &LockedOrder,
    change: Applied<'_>,
) -> sqlx::Result<bool> {
    let seq = change.cause.seq;
    if let Err(refusal) = order.status.transition(change.to, initiator(change.actor)) {
        let reason = format!("{}: {refusal}", refusal.code());
        reject(conn, order, change.to, change.actor, &reason, seq).await?;
        return Ok(false);
    }
    if change.to.requires_tracking_number()
        && change.tracking_number.is_none()
        && order.tracking_number.is_none()
    {
        let reason = "tracking_required: shipping needs a tracking number";
        reject(conn, order, change.to, change.actor, reason, seq).await?;
        return Ok(false);
    }
    match change.to {
        OrderStatus::Cancelled if order.status.holds_reserved_stock() => {
            stock::release(conn, order.id).await?
        }
        OrderStatus::Shipped => stock::ship(conn, order.id).await?,
        _ => {}
    }
    apply(conn, order, change).await?;
    Ok(true)
}

async fn apply(
    conn: &mut PgConnection,
    order: &LockedOrder,
    change: Applied<'_>,
) -> sqlx::Result<()> {
    let from = order.status;
    sqlx::query(
        "UPDATE orders SET status = $2, tracking_number = COALESCE($3, tracking_number), updated_at = now()
         WHERE id = $1",
    )
    .bind(order.id)
    .bind(change.to)
    .bind(change.tracking_number)
    .execute(&mut *conn)
    .await?;
    let seq = Some(change.cause.seq);
    timeline::record(
        conn,
        Entry {
            order_id: order.id,
            kind: EntryKind::StatusChanged,
            from: Some(from),
            to: Some(change.to),
            actor: change.actor,
            reason: change.reason,
            seq,
        },
    )
    .await?;
    notify_customer(conn, order, change.to, change.reason).await?;
    timeline::record(
        conn,
        Entry {
            order_id: order.id,
            kind: EntryKind::Notified,
            from: None,
            to: Some(change.to),
            actor: &Actor::system(),
            reason: Some("customer notified"),
            seq,
        },
    )
    .await?;
    let tracking_number = change
        .tracking_number
        .map(str::to_owned)
        .or_else(|| order.tracking_number.clone());
    let event = Envelope::new(
        EventType::StatusChanged,
        order.id,
        change.cause.seq,
        change.actor.clone(),
        change.cause.correlation_id.clone(),
        StatusChanged {
            from,
            to: change.to,
            reason: change.reason.map(str::to_owned),
            tracking_number,
        },
    );
    outbox::enqueue(conn, &event).await
}

async fn notify_customer(
    conn: &mut PgConnection,
    order: &LockedOrder,
    to: OrderStatus,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    let mut message = format!("Your order {} is now {to}.", short_id(order.id));
    // Why an order was confirmed or shipped is internal; why it was cancelled or refunded
    // is what the customer wants to know.
    if let Some(reason) =
        reason.filter(|_| matches!(to, OrderStatus::Cancelled | OrderStatus::Refunded))
    {
        message.push_str(&format!(" Reason: {reason}."));
    }
    sqlx::query(
        "INSERT INTO notifications (id, user_id, order_id, kind, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(order.customer_id)
    .bind(order.id)
    .bind(format!("order_{to}"))
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// The last 8 hex digits of an id: enough for a customer to tell orders apart.
fn short_id(id: Uuid) -> String {
    let simple = id.simple().to_string();
    simple[simple.len() - 8..].to_owned()
}

/// Records that a requested transition was refused, and why.
async fn reject(
    conn: &mut PgConnection,
    order: &LockedOrder,
    requested: OrderStatus,
    actor: &Actor,
    reason: &str,
    seq: i64,
) -> sqlx::Result<()> {
    tracing::info!(order_id = %order.id, from = %order.status, to = %requested, reason, "transition refused");
    timeline::record(
        conn,
        Entry {
            order_id: order.id,
            kind: EntryKind::Rejected,
            from: Some(order.status),
            to: Some(requested),
            actor,
            reason: Some(reason),
            seq: Some(seq),
        },
    )
    .await
}
