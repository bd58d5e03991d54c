//! `/api/orders`: placing, reading, editing orders and queuing status changes,
//! cancellations, parcels, payments and refunds for the workers, resolving stalled orders, and following orders live.
//! Another customer's order is always 404.

mod cancellations;
mod commands;
mod create;
mod fulfillments;
mod insert;
mod model;
mod payments;
mod pricing;
mod read;
mod stalled;
mod stream;
mod timeline;
mod update;
mod writer;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub use model::{OrderItemResponse, OrderResponse};
pub use writer::OrderWriter;
/// The statements the pgbench scripts are made from (see `bench_scripts`).
#[cfg(test)]
pub(crate) use {
    insert::INSERT_ORDERS_SQL, model::ITEMS_OF_SQL, pricing::PRICE_SQL, read::CUSTOMER_PAGE_SQL,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create::create_order, read::list_orders))
        .routes(routes!(read::list_my_orders))
        .routes(routes!(
            read::get_order,
            update::update_order,
            commands::cancel_order
        ))
        .routes(routes!(commands::change_status))
        .routes(routes!(timeline::order_timeline))
        .routes(routes!(payments::record_payment, payments::payment_ledger))
        .routes(routes!(payments::refund_order))
        .routes(routes!(payments::capture_payment))
        .routes(routes!(
            fulfillments::create_fulfillment,
            fulfillments::list_fulfillments
        ))
        .routes(routes!(fulfillments::update_fulfillment))
        .routes(routes!(cancellations::cancel_units))
        .routes(routes!(stalled::redrive_order))
        .routes(routes!(stalled::skip_command))
        .routes(routes!(stream::stream_orders))
        .routes(routes!(stream::stream_order))
}
