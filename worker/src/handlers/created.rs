//! `order.created`: reserve stock for every line, then confirm — or cancel when short.

use common::{
    domain::OrderStatus,
    events::{Actor, Envelope},
};
use sqlx::PgConnection;

use super::{
    HandleError, LockedOrder, stock,
    transition::{self, Applied},
};

pub async fn apply(
    conn: &mut PgConnection,
    order: &LockedOrder,
    envelope: &Envelope,
) -> Result<bool, HandleError> {
    let system = Actor::system();
    // Reserve only for an order that can still be confirmed (not one cancelled meanwhile).
    let reservation = if order.status == OrderStatus::Pending {
        stock::reserve(conn, order.id).await?
    } else {
        Ok(())
    };
    let shortage = reservation
        .err()
        .map(|short| format!("out_of_stock: {}", short.join(", ")));
    let change = Applied {
        to: if shortage.is_some() {
            OrderStatus::Cancelled
        } else {
            OrderStatus::Confirmed
        },
        actor: &system,
        reason: Some(shortage.as_deref().unwrap_or("stock reserved")),
        tracking_number: None,
        cause: envelope,
    };
    Ok(transition::attempt(conn, order, change).await?)
}
