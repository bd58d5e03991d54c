//! Attempting a transition: the state machine decides; an allowed one moves stock and writes
//! status, timeline, customer notification and follow-up event; a refused one writes a
//! timeline entry saying why. Either way the command's `seq` is recorded as applied, in the
//! same statement: every command ends in exactly one `attempt`.

use common::{
    domain::{OrderStatus, customer_text, status::Initiator},
    events::{Actor, Envelope, EventType, StatusChanged},
    timeline::EntryKind,
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

/// Records `seq` as applied; once no accepted command is pending, the projected status (what
/// the API checks new requests against) converges on the real one. Applying the command an
/// order was stalled on clears the flag. Shared by both writes below.
macro_rules! mark_applied {
    () => {
        "UPDATE orders SET status = $3, tracking_number = COALESCE($4, tracking_number), applied_seq = $2,
             projected_status = CASE WHEN last_seq = $2 THEN $3 ELSE projected_status END, updated_at = now(),
             stalled_reason = CASE WHEN stalled_seq <= $2 THEN NULL ELSE stalled_reason END,
             stalled_at = CASE WHEN stalled_seq <= $2 THEN NULL ELSE stalled_at END,
             stalled_seq = CASE WHEN stalled_seq <= $2 THEN NULL ELSE stalled_seq END
         WHERE id = $1"
    };
}

/// Writes an applied transition in one statement (one round trip while the order's and its
/// products' rows are locked): status, timeline entry, customer notification, timeline
/// entry for the notification, and the `order.status_changed` event.
async fn apply(
    conn: &mut PgConnection,
    order: &LockedOrder,
    change: Applied<'_>,
) -> sqlx::Result<()> {
    let from = order.status;
    let seq = change.cause.seq;
    let tracking_number = change
        .tracking_number
        .map(str::to_owned)
        .or_else(|| order.tracking_number.clone());
    let event = Envelope::new(
        EventType::StatusChanged,
        order.id,
        seq,
        change.actor.clone(),
        change.cause.correlation_id.clone(),
        StatusChanged {
            from,
            to: change.to,
            reason: change.reason.map(str::to_owned),
            tracking_number,
        },
    );
    let payload = serde_json::to_value(&event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // Ids are v7 and made in this order, so entries written at the same instant stay in order.
    let (changed_id, notification_id, notified_id) =
        (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(concat!(
        "WITH moved AS (",
        mark_applied!(),
        "), at AS (SELECT clock_timestamp() AS t),
         changed AS (
             INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq, created_at)
             SELECT $5, $1, $18, $6, $3, $7, $8, $9, $2, t FROM at
         ), notified AS (
             INSERT INTO notifications (id, user_id, order_id, kind, message) VALUES ($10, $11, $1, $12, $13)
         ), logged AS (
             INSERT INTO order_events (id, order_id, kind, to_status, actor_role, reason, seq, created_at)
             SELECT $14, $1, $19, $3, 'system', 'customer notified', $2, t FROM at
         )
         INSERT INTO outbox (event_id, order_id, seq, routing_key, payload) VALUES ($15, $1, $2, $16, $17)"
    ))
    .bind(order.id)
    .bind(seq)
    .bind(change.to)
    .bind(change.tracking_number)
    .bind(changed_id)
    .bind(from)
    .bind(change.actor.user_id)
    .bind(&change.actor.role)
    .bind(change.reason)
    .bind(notification_id)
    .bind(order.customer_id)
    .bind(format!("order_{}", change.to))
    .bind(notification_text(order.id, change.to, change.reason, &change.actor.role))
    .bind(notified_id)
    .bind(event.event_id)
    .bind(EventType::StatusChanged.routing_key())
    .bind(payload)
    .bind(EntryKind::StatusChanged.as_str())
    .bind(EntryKind::Notified.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The customer's notification: never the staff-side reason, which may name SKUs or hold
/// a vendor's private note.
fn notification_text(
    order_id: Uuid,
    to: OrderStatus,
    reason: Option<&str>,
    actor_role: &str,
) -> String {
    format!(
        "Your order {} is now {to}. {}",
        short_id(order_id),
        customer_text::status_sentence(to, reason, actor_role)
    )
}

/// The last 8 hex digits of an id: enough for a customer to tell orders apart.
fn short_id(id: Uuid) -> String {
    let simple = id.simple().to_string();
    simple[simple.len() - 8..].to_owned()
}

/// Records that a requested transition was refused, and why; the status stays as it is.
async fn reject(
    conn: &mut PgConnection,
    order: &LockedOrder,
    requested: OrderStatus,
    actor: &Actor,
    reason: &str,
    seq: i64,
) -> sqlx::Result<()> {
    tracing::info!(order_id = %order.id, from = %order.status, to = %requested, reason, "transition refused");
    sqlx::query(concat!(
        "WITH moved AS (",
        mark_applied!(),
        ")
         INSERT INTO order_events (id, order_id, kind, from_status, to_status, actor_id, actor_role, reason, seq)
         VALUES ($5, $1, $10, $3, $6, $7, $8, $9, $2)"
    ))
    .bind(order.id)
    .bind(seq)
    .bind(order.status)
    .bind(None::<String>)
    .bind(Uuid::now_v7())
    .bind(requested)
    .bind(actor.user_id)
    .bind(&actor.role)
    .bind(reason)
    .bind(EntryKind::Rejected.as_str())
    .execute(conn)
    .await?;
    Ok(())
}
