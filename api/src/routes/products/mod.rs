//! `/api/products`: the catalogue. Everyone signed in reads active products; vendors and
//! admins create, update and adjust stock. Prices live here, never in client requests.

mod model;
mod read;
mod write;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub(crate) use model::{Product, product_columns};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read::list_products, write::create_product))
        .routes(routes!(read::get_product, write::update_product))
        .routes(routes!(write::adjust_stock))
}
