//! `/api/users`: a user's own profile, and user management for admins.

use sqlx::PgConnection;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{self, User},
    error::{ApiError, ApiResult},
    state::AppState,
};

mod admin;
mod me;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::get_me, me::update_me))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::search_users))
        .routes(routes!(
            admin::get_user,
            admin::update_user,
            admin::deactivate_user
        ))
        .routes(routes!(admin::clear_login_lockout))
}

/// Changes to one's own profile. Role and active flag are not here: only admins set them.
pub(super) async fn load(conn: &mut PgConnection, id: Uuid) -> ApiResult<User> {
    accounts::find_by_id(conn, id)
        .await?
        .ok_or(ApiError::NotFound("No such user."))
}
