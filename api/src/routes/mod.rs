//! HTTP routes, one module per resource, each exposing `router()`.

pub mod auth;
pub mod health;
pub mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every documented route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(health::router())
        .merge(users::router())
}
