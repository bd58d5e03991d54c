//! `order.status_change_requested`: staff move an order along (processing, shipped,
//! delivered, refunded); applied when the lifecycle allows it at that moment.

use common::{
    domain::OrderStatus,
    events::{Envelope, StatusChangeRequested},
};
use sqlx::PgConnection;

use super::{
    HandleError, LockedOrder, payload,
    transition::{self, Applied},
};

pub async fn apply(
    conn: &mut PgConnection,
    order: &LockedOrder,
    envelope: &Envelope,
) -> Result<bool, HandleError> {
    let request: StatusChangeRequested = payload(envelope)?;
    let change = Applied {
        to: request.status,
        actor: &envelope.actor,
        reason: request.note.as_deref(),
        tracking_number: request.tracking_number.as_deref(),
        cause: envelope,
    };
    Ok(transition::attempt(conn, order, change).await?)
}

/// Whether the command asks to ship (which moves reserved stock). A payload that does not
/// decode moves nothing: `apply` refuses it.
pub fn may_ship(command: &Envelope) -> bool {
    payload::<StatusChangeRequested>(command)
        .is_ok_and(|request| request.status == OrderStatus::Shipped)
}
