//! HTTP routes, one module per resource, each exposing `router()`.

pub mod auth;
pub mod dead_letters;
pub mod health;
pub mod notifications;
pub mod orders;
pub mod products;
pub mod stripe;
pub mod users;
pub mod webhooks;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every documented route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(dead_letters::router())
        .merge(health::router())
        .merge(notifications::router())
        .merge(orders::router())
        .merge(products::router())
        .merge(stripe::router())
        .merge(users::router())
        .merge(webhooks::router())
}
