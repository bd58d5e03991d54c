//! `order.cancel_requested`: cancel when still allowed, releasing reserved stock.

use common::{
    domain::OrderStatus,
    events::{CancelRequested, Envelope},
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
    let request: CancelRequested = payload(envelope)?;
    let change = Applied {
        to: OrderStatus::Cancelled,
        actor: &envelope.actor,
        reason: Some(request.reason.as_deref().unwrap_or("cancelled on request")),
        tracking_number: None,
        cause: envelope,
    };
    Ok(transition::attempt(conn, order, change).await?)
}
