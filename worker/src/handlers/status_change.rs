//! `order.status_change_requested`: staff move an order along (processing, shipped,
//! delivered, refunded); applied when the lifecycle allows it at that moment.

use common::events::{Envelope, StatusChangeRequested};
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
